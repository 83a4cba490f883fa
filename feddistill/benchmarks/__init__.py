"""Benchmarks: `feddistill bench NAME` or `python -m feddistill.benchmarks.MODULE`.

Each module has ``main(argv) -> int`` and writes results.json / results.md to its --out.
"""

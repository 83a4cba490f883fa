"""Time the small FedDistill job on the local Flower Deployment Engine.

SuperLink + 2 SuperNodes on loopback with TLS and SuperNode authentication
(:class:`feddistill.deployment.LocalDeployment`), default data, 2 partitions. Reports
the seconds spent starting processes (certificates and keys, SuperLink, key
registration, SuperNodes) apart from training (sum of ``round_seconds`` in
``<out>/metrics.jsonl``) and the wall seconds of the whole thing. Imported by
``feddistill/benchmarks/scaling.py``.

Usage: python -m feddistill.benchmarks.scaling_deployment [--rounds 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from feddistill.config import from_mapping
from feddistill.deployment import LocalDeployment

NUM_PARTITIONS = 2
COLUMNS = (
    ("engine", "engine"),
    ("rounds", "rounds"),
    ("supernodes", "SuperNodes"),
    ("startup_seconds", "start-up s"),
    ("training_seconds", "training s"),
    ("wall_seconds", "wall s"),
    ("final_accuracy", "final accuracy"),
)


def bench_deployment(rounds: int = 2, out: Path | None = None) -> dict[str, Any]:
    """Run the job through a local SuperLink and 2 SuperNodes and time its parts.

    Args:
        rounds: ``num-server-rounds``, >= 1.
        out: folder for the run's results and the deployment's files (certificates,
            keys, logs under ``deployment/``); default: a new temporary folder.

    Returns:
        ``engine``, ``rounds``, ``supernodes``, ``status``, ``startup_seconds`` (and its
        parts: ``credentials_seconds``, ``superlink_seconds``, ``register_seconds``,
        ``supernodes_seconds``), ``run_seconds`` (flwr run to summary.json),
        ``training_seconds`` (sum of round_seconds), ``wall_seconds``,
        ``final_accuracy``, ``out``.

    Raises:
        ValueError: if `rounds` < 1.
        RuntimeError: if the deployment does not start or the run does not complete.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} is not allowed; expected an integer >= 1")
    out = Path(out or tempfile.mkdtemp(prefix="feddistill-bench-deploy-")).resolve()
    cfg = from_mapping(
        {
            "num-server-rounds": rounds,
            "num-partitions": NUM_PARTITIONS,
            "out-dir": str(out / "run"),
        }
    )
    started = time.monotonic()
    with LocalDeployment(out / "deployment", NUM_PARTITIONS) as dep:
        summary = dep.run_job(cfg)
        timings = dict(dep.timings)
    wall = time.monotonic() - started
    if summary.get("status") != "completed":
        raise RuntimeError(f"the deployment run failed: {summary.get('error')}; see {out}")
    rows = [
        json.loads(line)
        for line in (out / "run" / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return {
        "engine": "deployment (TLS + auth)",
        "rounds": rounds,
        "supernodes": NUM_PARTITIONS,
        "status": summary["status"],
        "startup_seconds": round(timings["startup_s"], 2),
        "credentials_seconds": round(timings["credentials_s"], 3),
        "superlink_seconds": round(timings["superlink_s"], 2),
        "proxy_seconds": round(timings["proxy_s"], 2),
        "register_seconds": round(timings["register_s"], 2),
        "supernodes_seconds": round(timings["supernodes_s"], 2),
        "run_seconds": round(timings["run_s"], 2),
        "training_seconds": round(sum(float(r["round_seconds"]) for r in rows), 2),
        "wall_seconds": round(wall, 2),
        "final_accuracy": summary.get("final_accuracy"),
        "out": str(out),
    }


def markdown_row(result: dict[str, Any]) -> str:
    """A markdown table (header + one row) of `result`'s main columns."""
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    cells = []
    for key, _ in COLUMNS:
        value = result.get(key)
        cells.append(
            f"{value:.4f}" if key == "final_accuracy" and value is not None else str(value)
        )
    return "\n".join([header, rule, "| " + " | ".join(cells) + " |"])


def main(argv: list[str] | None = None) -> int:
    """Command line: run :func:`bench_deployment`, print a one-row markdown table."""
    parser = argparse.ArgumentParser(
        prog="feddistill bench scaling-deployment", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = bench_deployment(args.rounds, args.out)
    print(markdown_row(result))
    if args.out is not None:
        (args.out / "deployment.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

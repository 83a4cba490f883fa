"""Overhead benchmark: where the seconds of one job go, on the simulation engine
(SuperLink + Flower simulation on Ray) and on ``--engine inprocess`` (one process),
measured in the same run.

Each engine runs the job through ``feddistill run`` (a subprocess, as a user runs
it). Phase seconds come from the run's ``timings/`` files (:mod:`feddistill.timing`:
a ``perf_counter`` total per phase and process, summed over processes; under the
simulation engine client phases of actors that run at the same time add up, so their
sum can exceed the wall time). Derived rows:

- ``start-up and shutdown``: command wall time minus the in-run wall time
  (``summary.json``), the server's data loading, export and report/plots: process and
  runtime start (SuperLink, ``flwr run``, Ray, actors, imports) and teardown;
- ``Flower messaging + Ray scheduling``: simulation in-run wall time minus inprocess
  in-run wall time (the same rounds with the transport and scheduler removed; negative
  when running clients in parallel on several actors gains more than the transport
  costs);
- ``student training`` excludes the KD term's forward pass, shown as ``KD``.

Usage: python -m feddistill.benchmarks.overhead [--out results/bench-overhead] [--set KEY=VALUE ...]
Writes ``results.json`` and ``results.md`` to ``--out`` and prints the markdown table;
exits 1 if the two engines' metrics.csv differ (timing columns aside).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from feddistill.lifeline import parent_death_signal
from feddistill.timing import read_timings

ENGINES = ("inprocess", "simulation")
TIMING_COLUMNS = ("round_seconds", "wall_seconds")
# (label, how to get its seconds from one engine's measurement)
MEASURED = (
    ("data loading", lambda t: t.get("data_loading", 0.0)),
    ("teacher training", lambda t: t.get("teacher_training", 0.0)),
    ("student training", lambda t: t.get("student_training", 0.0) - t.get("kd", 0.0)),
    ("KD (student forward on proxy + loss)", lambda t: t.get("kd", 0.0)),
    ("teacher logits + affinity", lambda t: t.get("logits_affinity", 0.0)),
    (
        "encode / decode",
        lambda t: t.get("encode", 0.0) + t.get("decode", 0.0) + t.get("decode_server", 0.0),
    ),
    (
        "server aggregation",
        lambda t: t.get("server_aggregation", 0.0) - t.get("decode_server", 0.0),
    ),
    ("server distillation", lambda t: t.get("server_distillation", 0.0)),
    ("evaluation", lambda t: t.get("evaluation", 0.0)),
    (
        "checkpoint + client-state I/O",
        lambda t: t.get("checkpoint_io", 0.0) + t.get("client_state_io", 0.0),
    ),
    ("export (int8 + pruned student)", lambda t: t.get("export", 0.0)),
    ("report + plots", lambda t: t.get("report_plots", 0.0)),
)


def run_engine(engine: str, out: Path, sets: list[str], timeout_s: float) -> dict[str, Any]:
    """One ``feddistill run --engine ENGINE``: command wall, in-run wall, phase seconds.

    Raises:
        RuntimeError: if the run fails (the message points at flower.log).
    """
    args = [sys.executable, "-m", "feddistill.cli", "run", "--engine", engine]
    args += ["--out", str(out), "--quiet"]
    for pair in sets:
        args += ["--set", pair]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=parent_death_signal(),
    )
    peak = PeakRss(proc.pid)
    peak.start()
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    finally:
        peak.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    command_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"feddistill run --engine {engine} failed ({proc.returncode}): "
            f"{output.strip()[-500:]}; see {out / 'flower.log'}"
        )
    summary = json.loads((out / "summary.json").read_text())
    return {
        "engine": engine,
        "command_s": command_s,
        "in_run_s": float(summary["wall_seconds"]),
        "final_accuracy": summary["final_accuracy"],
        "phases": read_timings(out),
        "server_data_loading_s": _server_data_loading(out),
        "peak_rss_bytes": peak.peak_bytes,
        "client_state_bytes": sum(
            p.stat().st_size for p in (out / "client-state").rglob("*") if p.is_file()
        ),
    }


class PeakRss:
    """Samples the summed RSS of a process and all its descendants every `interval_s`
    (Ray's GCS, raylet and workers included) and keeps the peak, in bytes."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid, self.interval_s, self.peak_bytes = pid, interval_s, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        """Start sampling in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (the peak stays in ``peak_bytes``)."""
        self._done.set()
        self._thread.join()

    def tree_rss(self) -> int:
        """RSS of the process and its descendants now, in bytes (0 once it is gone)."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak_bytes = max(self.peak_bytes, self.tree_rss())
            self._done.wait(self.interval_s)


def _server_data_loading(out: Path) -> float:
    # the ServerApp's process is the one that wrote "export"
    for path in sorted((out / "timings").glob("pid-*.json")):
        data = json.loads(path.read_text())
        if "export" in data:
            return float(data.get("data_loading", 0.0))
    return 0.0


def metrics_without_timing(out: Path) -> list[dict[str, str]]:
    """metrics.csv rows without the timing columns."""
    with (out / "metrics.csv").open() as fh:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(fh)]


def table_rows(runs: dict[str, dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(phase, inprocess seconds, simulation seconds) rows, derived rows included."""
    inproc, sim = runs["inprocess"], runs["simulation"]
    rows = []
    for run_ in (inproc, sim):
        t = run_["phases"]
        run_["startup_s"] = (
            run_["command_s"]
            - run_["in_run_s"]
            - run_["server_data_loading_s"]
            - t.get("export", 0.0)
            - t.get("report_plots", 0.0)
        )
    rows.append(("process + runtime start-up and shutdown", inproc["startup_s"], sim["startup_s"]))
    for label, get in MEASURED:
        rows.append((label, get(inproc["phases"]), get(sim["phases"])))
    rows.append(
        (
            "Flower messaging + Ray scheduling (sim - inprocess, in-run)",
            0.0,
            sim["in_run_s"] - inproc["in_run_s"],
        )
    )
    rows.append(("in-run wall (rounds)", inproc["in_run_s"], sim["in_run_s"]))
    rows.append(("command wall (total)", inproc["command_s"], sim["command_s"]))
    return rows


def memory_lines(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Peak RSS of each engine's process tree and its client-state disk use."""
    return [
        f"{name}: peak RSS of the process tree {r.get('peak_rss_bytes', 0) / 2**30:.2f} GiB, "
        f"client-state on disk {r.get('client_state_bytes', 0) / 1e6:.1f} MB"
        for name, r in runs.items()
    ]


def markdown_table(runs: dict[str, dict[str, Any]], same_metrics: bool) -> str:
    """The README table: seconds per phase for both engines and the ratios."""
    lines = ["| phase | inprocess s | simulation s |", "|---|---:|---:|"]
    for label, a, b in table_rows(runs):
        lines.append(f"| {label} | {a:.2f} | {b:.2f} |")
    inproc, sim = runs["inprocess"], runs["simulation"]
    lines.append("")
    lines.append(
        f"simulation / inprocess wall time: {sim['command_s'] / inproc['command_s']:.2f}x "
        f"(command), {sim['in_run_s'] / inproc['in_run_s']:.2f}x (in-run rounds); "
        f"final accuracy {100 * inproc['final_accuracy']:.2f}% / "
        f"{100 * sim['final_accuracy']:.2f}%; metrics.csv identical (timing aside): "
        f"{'yes' if same_metrics else 'NO'}"
    )
    lines += ["", *memory_lines(runs)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the overhead benchmark; print the table, write results.json / results.md."""
    parser = argparse.ArgumentParser(
        prog="feddistill bench overhead",
        description=__doc__.split("\n\nUsage")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        default="results/bench-overhead",
        help="output folder (default results/bench-overhead)",
    )
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a key of the job (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per engine run (default 1800)"
    )
    parser.add_argument("--seed", type=int, default=None, help="the job's seed (config key seed)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sets = [*(args.set or []), *([f"seed={args.seed}"] if args.seed is not None else [])]
    runs = {e: run_engine(e, out / e, sets, args.timeout) for e in ENGINES}
    same = metrics_without_timing(out / "inprocess") == metrics_without_timing(out / "simulation")
    table = markdown_table(runs, same)
    (out / "results.json").write_text(
        json.dumps({"runs": runs, "metrics_identical": same, "sets": args.set or []}, indent=2)
    )
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(f"results written to {out / 'results.json'} and {out / 'results.md'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

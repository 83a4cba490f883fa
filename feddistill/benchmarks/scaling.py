"""Scaling benchmark: the same small job on one node, on a 2-node local Ray cluster and on
Flower's Deployment Engine (local SuperLink + SuperNodes).

Each engine runs the job through ``feddistill run`` (a subprocess, as a user runs it)
and the table keeps the time spent starting processes apart from training:

- ``ray start``: starting the head and worker ``ray start`` processes until both nodes
  are alive (0 for single-node: the simulation starts its own Ray inside the job);
- ``job overhead``: the rest of ``feddistill run`` that is not training (SuperLink
  start, ``flwr run``, Ray init / attach, client actors, data loading, export);
- ``training``: the sum of ``round_seconds`` in ``metrics.jsonl``.

:func:`feddistill.benchmarks.scaling_deployment.bench_deployment` adds a Deployment
Engine row (SuperLink + SuperNodes on loopback; its process start
is credentials + SuperLink + SuperNode start, see :func:`deployment_row`).

Usage: python -m feddistill.benchmarks.scaling [--rounds 2] [--out results/bench-scaling]
       [--set KEY=VALUE ...]
Writes ``results.json`` and ``results.md`` to ``--out`` and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from feddistill.benchmarks.scaling_deployment import bench_deployment
from feddistill.cluster.ray_cluster import LocalRayCluster, NodeSpec
from feddistill.lifeline import parent_death_signal

DEFAULT_SETS = ("num-partitions=2", "client-num-cpus=1")


def _feddistill_run(
    out: Path, rounds: int, sets: list[str], ray_address: str | None, timeout_s: float
) -> tuple[float, list[dict[str, Any]]]:
    """Run ``feddistill run``; return its wall seconds and metrics rows.

    Raises:
        RuntimeError: if the run fails (the message points at flower.log).
    """
    args = [sys.executable, "-m", "feddistill.cli", "run", "--out", str(out), "--quiet"]
    if ray_address:
        args += ["--ray-address", ray_address]
    for pair in [*sets, f"num-server-rounds={rounds}"]:
        args += ["--set", pair]
    t0 = time.perf_counter()
    # the child (and, through its watchdog, everything it starts) dies with this script
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=parent_death_signal(),
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(
            f"feddistill run failed ({done.returncode}): {done.stderr.strip()[-500:]}; "
            f"see {out / 'flower.log'}"
        )
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return wall, [json.loads(line) for line in lines if line.strip()]


def _row(engine: str, nodes: int, ray_start_s: float, job_s: float, rows: list[dict]) -> dict:
    training = sum(float(r["round_seconds"]) for r in rows)
    return {
        "engine": engine,
        "nodes": nodes,
        "rounds": len(rows),
        "ray_start_s": ray_start_s,
        "job_overhead_s": job_s - training,
        "training_s": training,
        "total_s": ray_start_s + job_s,
        "final_accuracy": float(rows[-1]["accuracy"]) if rows else float("nan"),
    }


def bench_single_node(
    rounds: int, out: Path, sets: list[str], timeout_s: float = 900.0
) -> dict[str, Any]:
    """The job as a single-node simulation (the job starts its own Ray instance).

    Returns:
        One table row: engine, nodes, rounds, ray_start_s, job_overhead_s, training_s,
        total_s, final_accuracy.
    """
    job_s, rows = _feddistill_run(out / "single-node", rounds, sets, None, timeout_s)
    return _row("simulation, 1 node", 1, 0.0, job_s, rows)


def bench_ray_cluster(
    rounds: int = 2,
    out: Path = Path("results/bench-scaling"),
    sets: list[str] | None = None,
    num_nodes: int = 2,
    timeout_s: float = 900.0,
) -> list[dict[str, Any]]:
    """Time the same job on one node and on a local `num_nodes`-node Ray cluster.

    The cluster is a head plus workers started as separate ``ray start`` processes
    (1 CPU and 1.5 GiB each); it is stopped by PID afterwards, on failure too.

    Args:
        rounds: server rounds of the job (>= 1).
        out: results folder; each engine writes below it.
        sets: ``KEY=VALUE`` run-config overrides (default: 2 clients, 1 CPU each).
        num_nodes: Ray nodes in the local cluster (>= 2).
        timeout_s: limit for each ``feddistill run``.

    Returns:
        Two rows (see :func:`bench_single_node`): single node, then the cluster.

    Raises:
        ValueError: if `rounds` < 1 or `num_nodes` < 2.
        RuntimeError: if a run fails or the cluster does not start.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if num_nodes < 2:
        raise ValueError(f"num_nodes must be >= 2, got {num_nodes}")
    sets = list(DEFAULT_SETS) if sets is None else list(sets)
    results = [bench_single_node(rounds, out, sets, timeout_s)]
    spec = NodeSpec(num_cpus=1, memory_bytes=3 * 1024**3 // 2)
    with LocalRayCluster(nodes=[spec] * num_nodes) as cluster:
        job_s, rows = _feddistill_run(out / "ray-cluster", rounds, sets, cluster.address, timeout_s)
        start_s = cluster.start_seconds
    results.append(
        _row(f"Ray cluster, {num_nodes} nodes (loopback)", num_nodes, start_s, job_s, rows)
    )
    return results


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The rows as a markdown table (seconds with one decimal)."""
    lines = [
        "| engine | nodes | rounds | process start (s) | job overhead (s) | training (s) | total (s) | final acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['engine']} | {r['nodes']} | {r['rounds']} | {r['ray_start_s']:.1f} | "
            f"{r['job_overhead_s']:.1f} | {r['training_s']:.1f} | {r['total_s']:.1f} | "
            f"{100 * r['final_accuracy']:.1f}% |"
        )
    return "\n".join(lines)


def deployment_row(found: dict[str, Any]) -> dict[str, Any]:
    """A ``bench_deployment`` result as a row of this table.

    ``startup_seconds`` (credentials, SuperLink, SuperNodes) goes in the process-start
    column, the rest of ``wall_seconds`` that is not training in the job overhead.
    """
    training = float(found.get("training_seconds", 0.0))
    start = float(found.get("startup_seconds", 0.0))
    wall = float(found.get("wall_seconds", start + training))
    return {
        "engine": str(found.get("engine", "deployment")),
        "nodes": int(found.get("supernodes", 0)),
        "rounds": int(found.get("rounds", 0)),
        "ray_start_s": start,
        "job_overhead_s": wall - start - training,
        "training_s": training,
        "total_s": wall,
        "final_accuracy": float(found.get("final_accuracy", float("nan"))),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the scaling benchmark; print the table, write results.json / results.md."""
    parser = argparse.ArgumentParser(
        prog="feddistill bench scaling",
        description=__doc__.split("\n\nUsage")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=2, help="server rounds (default 2)")
    parser.add_argument(
        "--out",
        default="results/bench-scaling",
        help="output folder (default results/bench-scaling)",
    )
    parser.add_argument("--nodes", type=int, default=2, help="Ray nodes in the local cluster")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    parser.add_argument("--seed", type=int, default=None, help="the runs' seed (config key seed)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sets = [*DEFAULT_SETS, *(args.set or [])]
    if args.seed is not None:  # `feddistill bench scaling --seeds` passes one per run
        sets.append(f"seed={args.seed}")
    results = bench_ray_cluster(args.rounds, out, sets, num_nodes=args.nodes)
    results.append(deployment_row(bench_deployment(args.rounds, out / "deployment")))
    table = markdown_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(f"results written to {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

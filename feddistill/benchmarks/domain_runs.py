"""How ``feddistill bench domains`` runs its runs: one at a time or in a process pool.

Each run (a task, a method and a seed) is one config; :func:`run_one` runs it in process
(:func:`feddistill.inprocess.run_in_process`, or :func:`run_oracle` for the target
oracle) and keeps its cost and config in its folder, so a finished run of the same
config is reused; :func:`run_plan` runs a list of them, ``jobs`` at a time in spawned
worker processes that die with the command. The tables and the CLI are in
:mod:`feddistill.benchmarks.domains`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from feddistill.config import RunConfig, from_mapping
from feddistill.lifeline import die_with_parent


def run_oracle(cfg: RunConfig) -> dict[str, Any]:
    """Target oracle: the student trained on the target's training labels, evaluated like
    every run (same split and test set); writes summary.json and metrics.jsonl."""
    from feddistill.data import prepare_federated_data
    from feddistill.data.target_domains import target_train_set
    from feddistill.learn import SGDSpec, evaluate, train_supervised
    from feddistill.models import build_model

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cpu = torch.device("cpu")
    data = prepare_federated_data(cfg.data_spec())
    x, y = target_train_set(cfg.data_spec())
    student = build_model(cfg.student_model, data.splits.in_shape, 10, seed=cfg.seed)
    t0 = time.perf_counter()
    rows = []
    for r in range(1, cfg.num_server_rounds + 1):
        sgd = SGDSpec(
            cfg.learning_rate,
            cfg.momentum,
            cfg.batch_size,
            cfg.local_epochs,
            0,
            cfg.seed * 7919 + r,
        )
        train_supervised(student, x, y, sgd, cpu)
        metrics = evaluate(
            student,
            data.splits.test_x,
            data.splits.test_y,
            cpu,
            data.test_domains,
            target_domains=data.target_domains,
        )
        rows.append({"round": r, **metrics})
    last = rows[-1]
    summary = {
        "status": "completed",
        "strategy": "oracle",
        "final_accuracy": last["accuracy"],
        "final_source_accuracy": last["source_accuracy"],
        "final_target_accuracy": last["target_accuracy"],
        "uplink_bytes": 0,
        "downlink_bytes": 0,
        "wall_seconds": time.perf_counter() - t0,
    }
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and its waited-for
    children (the preflight data checks run in a child process)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


COST_FILE = "bench_cost.json"  # per run folder: {"cpu_seconds", "wall_seconds"} of the run
CONFIG_FILE = "bench_config.json"  # per run folder: the run's whole config, for reuse


def config_record(cfg: RunConfig) -> dict[str, Any]:
    """The run's config as JSON values: a finished run is reused only if this matches."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), sort_keys=True))


def run_one(cfg: RunConfig, method: str) -> dict[str, Any]:
    """One run, reused if its folder holds a completed summary.json of the same config.

    The config a finished run had is kept in ``bench_config.json``; a folder without it
    or with another config (other ``--rounds``, another ``--set``) is run again.

    Returns the run's summary plus ``cpu_seconds`` and ``bench_wall_seconds`` (measured
    around the run and kept in ``bench_cost.json``, so a reused run reports its cost
    too) and ``reused`` (True when nothing ran).
    """
    from feddistill.inprocess import run_in_process

    out = Path(cfg.out_dir)
    done, config_path = out / "summary.json", out / CONFIG_FILE
    if done.is_file() and config_path.is_file():
        summary = json.loads(done.read_text())
        same = json.loads(config_path.read_text()) == config_record(cfg)
        if summary.get("status") == "completed" and same:
            cost_path = out / COST_FILE
            cost = json.loads(cost_path.read_text()) if cost_path.is_file() else {}
            return {
                **summary,
                "cpu_seconds": cost.get("cpu_seconds", 0.0),
                "bench_wall_seconds": cost.get("wall_seconds", 0.0),
                "reused": True,
            }
    if out.exists():
        shutil.rmtree(out)  # interrupted, or run with another config: start it again
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    summary = run_oracle(cfg) if method == "oracle" else run_in_process(cfg)
    cost = {"cpu_seconds": cpu_seconds() - cpu0, "wall_seconds": time.perf_counter() - wall0}
    (out / COST_FILE).write_text(json.dumps(cost) + "\n")
    (out / CONFIG_FILE).write_text(json.dumps(config_record(cfg), sort_keys=True) + "\n")
    return {
        **summary,
        "cpu_seconds": cost["cpu_seconds"],
        "bench_wall_seconds": cost["wall_seconds"],
        "reused": False,
    }


def result_row(suite: str, task: str, method: str, seed: int, summary: dict) -> dict[str, Any]:
    """One results.csv row from a run's summary (as :func:`run_one` returns it)."""
    return {
        "suite": suite,
        "task": task,
        "method": method,
        "seed": seed,
        "target_accuracy": summary["final_target_accuracy"],
        "source_accuracy": summary["final_source_accuracy"],
        "uplink_bytes": summary.get("uplink_bytes", 0),
        "downlink_bytes": summary.get("downlink_bytes", 0),
        "wall_seconds": summary.get("wall_seconds", 0.0),
        "cpu_seconds": summary["cpu_seconds"],
        "bench_wall_seconds": summary["bench_wall_seconds"],
        "reused": summary.get("reused", False),
    }


MAX_DEFAULT_JOBS = 4  # each run holds ~0.5-1 GiB; more parallel runs than this rarely pay


def default_jobs() -> int:
    """Runs at once by default: the cores this process may use, at most ``MAX_DEFAULT_JOBS``."""
    return max(1, min(MAX_DEFAULT_JOBS, len(os.sched_getaffinity(0))))


def _run_mapping(mapping: dict[str, Any], method: str) -> dict[str, Any]:
    """One run from its config mapping, with one torch thread (a pool worker's entry)."""
    torch.set_num_threads(1)  # the clients' count too (client-num-cpus=1): one core per run
    return run_one(from_mapping(mapping), method)


def run_plan(
    plan: list[tuple[str, str, str, int, dict[str, Any]]], jobs: int, csv_path: Path
) -> list[dict[str, Any]]:
    """Run every planned (suite, task, method, seed, config mapping) and return their rows.

    Each run is seeded by its own config and nothing else, so the rows do not depend on
    ``jobs``. With ``jobs == 1`` the runs go one after another in this process; with more,
    in a pool of ``jobs`` spawned worker processes, taken in plan order (seed by seed).
    ``csv_path`` is rewritten after every finished run with the finished rows, in plan
    order.

    Args:
        plan: the runs, in order.
        jobs: how many run at once (>= 1).
        csv_path: results.csv.

    Returns:
        One :func:`result_row` per planned run, in plan order.
    """
    done: dict[int, dict[str, Any]] = {}

    def finished(i: int, summary: dict[str, Any]) -> None:
        suite, task, method, seed, _ = plan[i]
        done[i] = result_row(suite, task, method, seed, summary)
        _progress(done[i])
        rows = [done[k] for k in sorted(done)]
        with csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    if jobs == 1:
        torch_threads = torch.get_num_threads()
        try:
            for i, (_, _, method, _, mapping) in enumerate(plan):
                finished(i, _run_mapping(mapping, method))
        finally:
            torch.set_num_threads(torch_threads)
    else:
        # spawn, not fork: this process has torch (and its thread pools) loaded
        ctx = multiprocessing.get_context("spawn")
        # each worker dies with this process, even on kill -9 (feddistill.lifeline)
        with ProcessPoolExecutor(
            max_workers=max(1, min(jobs, len(plan))),  # no idle workers
            mp_context=ctx,
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {
                pool.submit(_run_mapping, mapping, method): i
                for i, (_, _, method, _, mapping) in enumerate(plan)
            }
            try:
                for future in as_completed(futures):
                    finished(futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # not the runs still queued
                raise
    return [done[i] for i in range(len(plan))]


def _progress(row: dict[str, Any]) -> None:
    print(
        f"{row['suite']} {row['task']} seed {row['seed']} {row['method']}: target "
        f"{100 * row['target_accuracy']:.1f}% source {100 * row['source_accuracy']:.1f}% "
        f"({row['cpu_seconds']:.0f} CPU-s, {row['bench_wall_seconds']:.0f} s wall"
        f"{'; reused, not run again' if row.get('reused') else ''})",
        file=sys.stderr,
        flush=True,
    )

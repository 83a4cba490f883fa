"""GPU benchmark: round time and memory of the default job and of the resnet18-student
job on CUDA beside the same jobs on the CPU, and a check that the GPU fraction
``feddistill plan`` chooses packs clients onto one GPU without running out of memory.

Every run is one ``feddistill run`` in a subprocess, as a user runs it (the runner of
``feddistill bench overhead``), with ``--set device=cuda`` or ``--set device=cpu``:

- **jobs**: ``default`` (the default job) and ``resnet18`` (the same job with
  ``student-model=resnet18``, 11.2M parameters, ``--resnet18-rounds`` rounds), each on
  ``--engine inprocess`` (one process: the model work without Flower's transport); a
  CPU run gives each client every core (``client-num-cpus``), as a CUDA run gives it
  the whole GPU;
- **memory**: peak RSS of the run's process tree (psutil) and peak GPU memory in use
  while it ran (``nvidia-smi --query-gpu=memory.used``, every 0.2 s, minus what was in
  use before it started): CUDA contexts, PyTorch's caching allocator and cuDNN/cuBLAS
  workspaces included, as ``nvidia-smi`` shows it to a user;
- **plan check** (``--plan-gpu-memory-gb B``, 0 = skip): ``feddistill plan`` is told the
  GPU has B GB, the job (``--plan-clients`` clients, all sampled) runs on the
  simulation engine (SuperLink + Ray) with the ``client-num-gpus`` it chose, and the
  check holds when the run completes with no failed client and the GPU memory in use
  stays under B GB while up to ``1 / client-num-gpus`` client actors share the GPU.

``--repeat`` runs the first job on the first device a second time and compares both
metrics.csv (timing columns aside): same seed, same config, same metrics, on a GPU too.

Usage: feddistill bench gpu [--out results/bench-gpu] [--jobs default,resnet18]
       [--devices cuda,cpu] [--resnet18-rounds 2] [--plan-gpu-memory-gb 8] [--repeat]
       [--set KEY=VALUE]
Writes ``results.json`` (after every run, so a stopped benchmark keeps what it measured)
and ``results.md`` to ``--out`` and prints the tables. Exit status 1 when a run failed or
the plan check did not hold, 2 when ``cuda`` is asked for and torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from feddistill.atomic import atomic_write_text
from feddistill.benchmarks.gpu_memory import GpuMemorySampler
from feddistill.benchmarks.overhead import metrics_without_timing, run_engine

JOBS = {"default": [], "resnet18": ["student-model=resnet18"]}
DEVICES = ("cuda", "cpu")
MIB = 1024**2


def round_seconds_and_failures(out: Path) -> tuple[list[float], int]:
    """From ``<out>/metrics.csv`` (read once): every row's ``round_seconds`` in round
    order, and the clients counted as failed over all rounds."""
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return [float(r["round_seconds"]) for r in rows], sum(int(r["failed"]) for r in rows)


def measure_run(
    label: str, engine: str, out: Path, sets: list[str], timeout_s: float
) -> dict[str, Any]:
    """One ``feddistill run`` with GPU memory sampled around it; a failure is a row too.

    Returns:
        A row: label, engine, sets, status ("completed" / "failed: ..."), and when
        completed the round seconds, command and in-run seconds, final accuracy, peak
        RSS of the process tree and peak GPU MiB above the baseline.
    """
    if out.exists():
        shutil.rmtree(out)
    sampler = GpuMemorySampler()
    sampler.start()
    row: dict[str, Any] = {"label": label, "engine": engine, "sets": sets}
    try:
        run = run_engine(engine, out, sets, timeout_s)
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
        row["status"] = f"failed: {exc}"[:400]
        return row
    finally:
        sampler.stop()
    rounds, failed = round_seconds_and_failures(out)
    row.update(
        status="completed",
        rounds=len(rounds),
        round_seconds=rounds,
        first_round_s=rounds[0],
        median_round_s=statistics.median(rounds[1:]) if len(rounds) > 1 else None,
        command_s=run["command_s"],
        in_run_s=run["in_run_s"],
        final_accuracy=run["final_accuracy"],
        failed_clients=failed,
        peak_rss_bytes=run["peak_rss_bytes"],
        gpu_peak_mib=max(0, sampler.peak_mib - sampler.baseline_mib),
        gpu_samples=sampler.samples,
    )
    return row


def job_sets(job: str, args: argparse.Namespace) -> list[str]:
    """The ``--set`` pairs of `job`: the user's, the job's own, resnet18's rounds."""
    sets = [*args.set, *JOBS[job]]
    if job == "resnet18":
        sets.append(f"num-server-rounds={args.resnet18_rounds}")
    return sets


def device_sets(sets: list[str], device: str) -> list[str]:
    """`sets` for a run on `device`; on the CPU each client gets every core.

    ``--engine inprocess`` trains the clients one after another, each with
    ``client-num-cpus`` torch threads, so the CPU row uses the whole CPU, as the CUDA
    row uses the whole GPU.
    """
    extra = [f"client-num-cpus={os.cpu_count() or 1}"] if device == "cpu" else []
    return [*sets, *extra, f"device={device}"]


def plan_for(gpu_memory_gb: float, sets: list[str]) -> dict[str, Any]:
    """``feddistill plan --json`` for one GPU of `gpu_memory_gb` GB and this machine's CPUs.

    Raises:
        RuntimeError: if the command fails.
    """
    cmd = [sys.executable, "-m", "feddistill.cli", "plan", "--json", "--cpus"]
    cmd += [str(os.cpu_count() or 1), "--gpus", "1", "--gpu-memory-gb", str(gpu_memory_gb)]
    for pair in sets:
        cmd += ["--set", pair]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"feddistill plan failed ({proc.returncode}): {proc.stderr[-500:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def fmt_row(row: dict[str, Any]) -> str:
    """One markdown table row of a measured run."""
    if row["status"] != "completed":
        return f"| {row['label']} | {row['status']} | | | | | | |"
    median = row["median_round_s"]
    return (
        f"| {row['label']} | {row['rounds']} | {row['first_round_s']:.2f} | "
        f"{'-' if median is None else f'{median:.2f}'} | {row['command_s']:.1f} | "
        f"{100 * row['final_accuracy']:.2f} | {row['peak_rss_bytes'] / MIB:.0f} | "
        f"{row['gpu_peak_mib'] if row['gpu_samples'] else '-'} |"
    )


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: runs, CPU / CUDA ratios, the plan check."""
    lines = [
        f"**feddistill bench gpu** ({results['gpu']}; {results['cpus']} CPU cores)",
        "",
        "| run | rounds | round 1 (s) | median later round (s) | command (s) | final acc (%) "
        "| peak RSS of tree (MiB) | peak GPU memory (MiB) |",
        "|---|---|---|---|---|---|---|---|",
        *(fmt_row(r) for r in results["runs"]),
        *([fmt_row(results["repeat"]["run"])] if results.get("repeat") else []),
    ]
    done = {r["label"]: r for r in results["runs"] if r["status"] == "completed"}
    ratios = []
    for job in JOBS:
        cpu, cuda = done.get(f"{job} cpu"), done.get(f"{job} cuda")
        if cpu and cuda and cpu["median_round_s"] and cuda["median_round_s"]:
            ratios.append(
                f"- {job}: median round {cpu['median_round_s'] / cuda['median_round_s']:.1f}x "
                f"faster on CUDA, command {cpu['command_s'] / cuda['command_s']:.1f}x"
            )
    if ratios:
        lines += ["", "CPU / CUDA, same job, same benchmark run:", *ratios]
    repeat = results.get("repeat")
    if repeat:
        run = repeat["run"]
        accuracy = (
            f"{100 * run['final_accuracy']:.2f}%" if run["status"] == "completed" else run["status"]
        )
        lines += [
            "",
            f"Repeat: {repeat['job']} on {repeat['device']} again (final accuracy {accuracy}): "
            f"metrics.csv identical to the first run (timing aside): "
            f"{'yes' if repeat['identical'] else 'NO'}",
        ]
    plan = results.get("plan")
    if plan:
        lines += ["", *plan_lines(plan)]
    return "\n".join(lines)


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """The plan check as markdown lines."""
    if "error" in plan:
        return [f"Plan check: {plan['error']}"]
    p, run = plan["plan"], plan["run"]
    head = (
        f"Plan check: `feddistill plan` for one GPU of {plan['gpu_memory_gb']:g} GB, "
        f"{p['num_clients']} clients: {p['per_client_bytes'] / 1e9:.3g} GB per client -> "
        f"client-num-gpus={p['client_num_gpus']:.4g}, {p['clients_per_gpu']} clients per GPU, "
        f"{p['concurrency']} at once."
    )
    if run["status"] != "completed":
        return [head, f"The packed run {run['status']}: check FAILED."]
    return [
        head,
        f"Packed run (simulation engine, {run['rounds']} rounds): {run['status']}, "
        f"{run['failed_clients']} failed clients, peak GPU memory {run['gpu_peak_mib']} MiB "
        f"({run['gpu_peak_mib'] * MIB / 1e9:.2f} GB) of the {plan['gpu_memory_gb']:g} GB "
        f"planned: check {'holds' if plan['holds'] else 'FAILED'}.",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked: bad values exit 2 with a message naming them.

    ``args.jobs`` and ``args.devices`` come back as lists (duplicates dropped) and
    ``args.set`` with ``seed=N`` appended for ``--seed``; every job's settings are
    checked as a config before anything runs.
    """
    parser = argparse.ArgumentParser(
        prog="feddistill bench gpu",
        description=__doc__.split("\n\nUsage")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="results/bench-gpu", help="output folder")
    parser.add_argument(
        "--jobs",
        default="default,resnet18",
        help=f"comma list of {', '.join(JOBS)} (default default,resnet18)",
    )
    parser.add_argument(
        "--devices", default="cuda,cpu", help="comma list of cuda, cpu (default cuda,cpu)"
    )
    parser.add_argument(
        "--resnet18-rounds", type=int, default=2, help="rounds of the resnet18 job (default 2)"
    )
    parser.add_argument(
        "--plan-gpu-memory-gb",
        type=float,
        default=8.0,
        help="GPU memory feddistill plan is told, GB; 0 skips the plan check (default 8)",
    )
    parser.add_argument(
        "--plan-clients", type=int, default=16, help="clients of the plan check (default 16)"
    )
    parser.add_argument(
        "--plan-rounds", type=int, default=2, help="rounds of the plan check (default 2)"
    )
    parser.add_argument(
        "--repeat",
        action="store_true",
        help="run the first job on the first device again and compare metrics.csv (determinism)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of every job (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=None, help="the jobs' seed (config key seed)")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per run (default 1800)"
    )
    args = parser.parse_args(argv)
    if args.seed is not None:
        args.set = [*args.set, f"seed={args.seed}"]
    for flag, allowed in (("jobs", tuple(JOBS)), ("devices", DEVICES)):
        given = getattr(args, flag)
        names = list(dict.fromkeys(n.strip() for n in given.split(",") if n.strip()))
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            parser.error(
                f"--{flag} must be a comma list of {', '.join(allowed)}; got {given!r}"
                + (f" ({', '.join(bad)} unknown)" if bad else "")
            )
        setattr(args, flag, names)
    for name in ("resnet18_rounds", "plan_clients", "plan_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    if not (math.isfinite(args.plan_gpu_memory_gb) and args.plan_gpu_memory_gb >= 0):
        parser.error(f"--plan-gpu-memory-gb must be a number >= 0, got {args.plan_gpu_memory_gb}")
    from feddistill.config_load import load_config

    for job in args.jobs:
        try:
            load_config(None, job_sets(job, args))
        except ValueError as exc:
            parser.error(f"--set for the {job} job: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the GPU benchmark; print the tables and write results.json / results.md."""
    args = parse_args(argv)
    jobs, devices = args.jobs, args.devices
    import torch  # the benchmark's own question: is there a GPU

    has_cuda = torch.cuda.is_available()
    if not has_cuda and ("cuda" in devices or args.plan_gpu_memory_gb > 0):
        print(
            "feddistill bench gpu: torch sees no CUDA device; run it on a GPU machine, or "
            "measure the CPU side alone with --devices cpu --plan-gpu-memory-gb 0",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if has_cuda else "no GPU",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "sets": args.set,
        "runs": [],
    }

    def save() -> None:
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")

    for job in jobs:
        sets = job_sets(job, args)
        for device in devices:
            label = f"{job} {device}"
            print(f"running {label} ...", flush=True)
            row = measure_run(
                label, "inprocess", out / f"{job}-{device}", device_sets(sets, device), args.timeout
            )
            results["runs"].append(row)
            save()
            print(fmt_row(row), flush=True)
    if args.repeat:
        results["repeat"] = repeat_check(jobs[0], devices[0], args, out)
        save()
    ok = all(r["status"] == "completed" for r in results["runs"])
    ok = ok and results.get("repeat", {}).get("identical", True)
    if args.plan_gpu_memory_gb > 0:
        results["plan"] = plan_check(args, out)
        save()
        ok = ok and bool(results["plan"].get("holds"))
    table = markdown(results)
    atomic_write_text(out / "results.md", table + "\n")
    print(table)
    print(f"results written to {out / 'results.json'} and {out / 'results.md'}")
    return 0 if ok else 1


def repeat_check(job: str, device: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run `job` on `device` again and compare both metrics.csv, timing columns aside."""
    print(f"running {job} {device} again ...", flush=True)
    first, second = out / f"{job}-{device}", out / f"{job}-{device}-repeat"
    row = measure_run(
        f"{job} {device}, again",
        "inprocess",
        second,
        device_sets(job_sets(job, args), device),
        args.timeout,
    )
    same = row["status"] == "completed" and (first / "metrics.csv").is_file()
    same = same and metrics_without_timing(first) == metrics_without_timing(second)
    return {"job": job, "device": device, "run": row, "identical": same}


def plan_check(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Plan for a GPU of ``--plan-gpu-memory-gb`` GB, run packed, compare the peak."""
    sets = [
        *args.set,
        f"num-partitions={args.plan_clients}",
        "fraction-train=1.0",
        f"num-server-rounds={args.plan_rounds}",
    ]
    check: dict[str, Any] = {"gpu_memory_gb": args.plan_gpu_memory_gb}
    try:
        check["plan"] = plan = plan_for(args.plan_gpu_memory_gb, sets)
    except (RuntimeError, subprocess.SubprocessError, ValueError) as exc:
        check["error"] = f"feddistill plan failed: {exc}"
        return check
    print(f"running plan check (client-num-gpus={plan['client_num_gpus']}) ...", flush=True)
    run = measure_run(
        "plan check",
        "simulation",
        out / "plan-check",
        [*sets, "device=cuda", f"client-num-gpus={plan['client_num_gpus']}"],
        args.timeout,
    )
    check["run"] = run
    check["holds"] = (
        run["status"] == "completed"
        and run["failed_clients"] == 0
        and run["gpu_peak_mib"] * MIB <= args.plan_gpu_memory_gb * 1e9
    )
    return check


if __name__ == "__main__":
    raise SystemExit(main())

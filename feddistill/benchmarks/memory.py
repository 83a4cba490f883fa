"""Where the memory of a run goes: peak RSS of the whole process tree, per process.

Runs one ``feddistill run`` (a subprocess, as a user runs it) and samples every process
in its tree every ``--interval`` seconds (SuperLink, ``flwr run``, SuperExec,
``flwr-simulation`` (ServerApp + Ray driver), Ray's GCS, raylet, dashboard agents,
monitors and every Ray worker). At the moment the tree's summed RSS peaks it keeps
a snapshot: each process's role, RSS, and the part of that RSS mapped from torch /
CUDA / NVIDIA shared libraries (``/proc/PID/smaps``), so the table shows what each
process holds and how much of it is only the CUDA build of torch being loaded.

Usage: feddistill bench memory [--out DIR] [--seed N] [--engine simulation] [--set KEY=VALUE ...]
Writes ``results.json`` (peak, client-state bytes, per-role sums), ``results.md`` and
``snapshot.json`` (every process at the peak) to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from feddistill.atomic import atomic_write_text
from feddistill.benchmarks.overhead import PeakRss
from feddistill.lifeline import parent_death_signal

# (role, substring of the command line); the first match names the process
ROLES = (
    ("Ray worker (client actor)", "ray::ClientAppActor"),
    ("Ray worker (idle)", "ray::IDLE"),
    # before "default_worker.py": the raylet's command line names the worker command
    ("Ray raylet", "/raylet/raylet"),
    ("Ray worker", "default_worker.py"),
    ("Ray GCS", "gcs_server"),
    ("Ray dashboard agent", "dashboard/agent.py"),
    ("Ray runtime-env agent", "runtime_env/agent/main.py"),
    ("Ray dashboard", "dashboard/dashboard.py"),
    ("Ray log monitor", "log_monitor.py"),
    ("Ray monitor", "autoscaler/_private/monitor.py"),
    ("Ray dashboard agent", "ray::DashboardAgent"),
    ("Ray runtime-env agent", "ray::RuntimeEnvAgent"),
    ("flwr-simulation (ServerApp + Ray driver)", "flwr-simulation"),
    ("flower-superexec", "flower-superexec"),
    ("flower-superlink", "flower-superlink"),
    ("flwr run (CLI)", "flwr run"),
    ("watchdog (feddistill.lifeline)", "feddistill.lifeline"),
    ("feddistill run (driver)", "feddistill"),
)
# shared libraries that come with the CUDA build of torch (nothing on CPU needs them)
CUDA_LIBS = ("libtorch_cuda", "/nvidia/", "libcud", "libcublas", "libnccl", "libcusparse")


@dataclass(frozen=True)
class ProcessMemory:
    """One process at the tree's peak: role, RSS and the RSS of CUDA / torch libraries."""

    pid: int
    role: str
    rss_bytes: int
    cuda_lib_bytes: int  # RSS mapped from CUDA-build libraries (CUDA_LIBS)
    torch_lib_bytes: int  # RSS mapped from the rest of torch/lib (libtorch_cpu, ...)


def role_of(cmdline: list[str]) -> str:
    """The role of a process from its command line (``ROLES``), else its first word."""
    text = " ".join(cmdline)
    for role, needle in ROLES:
        if needle in text:
            return role
    return Path(cmdline[0]).name if cmdline else "?"


def library_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS from CUDA-build libraries, RSS from other torch libraries) of `proc`, bytes."""
    cuda = torch_ = 0
    try:
        for m in proc.memory_maps(grouped=True):
            if any(n in m.path for n in CUDA_LIBS):
                cuda += m.rss
            elif "/torch/lib/" in m.path:
                torch_ += m.rss
    except psutil.Error:
        pass
    return cuda, torch_


def pss_bytes(pid: int) -> int:
    """Proportional set size of process `pid` in bytes (Linux ``/proc/PID/smaps_rollup``).

    PSS divides each shared page among the processes that map it, so summed over a
    process tree it counts torch's shared libraries once, where summed RSS counts them
    once per process. 0 where the file cannot be read (process gone, not Linux).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeSampler(PeakRss):
    """Samples a process tree's summed RSS; keeps a per-process snapshot at its peak.

    Also keeps the peak of the tree's summed PSS (:func:`pss_bytes`) in ``peak_pss_bytes``.
    """

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        super().__init__(pid, interval_s)
        self.snapshot: list[ProcessMemory] = []
        self.peak_pss_bytes = 0

    def _tree(self) -> list[tuple[psutil.Process, int]]:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        out = []
        for proc in procs:
            try:
                out.append((proc, proc.memory_info().rss))
            except psutil.Error:
                continue
        return out

    def _sample(self) -> None:
        last_snapshot = 0.0
        while not self._done.is_set():
            tree = self._tree()
            total = sum(rss for _, rss in tree)
            # a new peak (by > 1 %, at most every 3 s): record who holds it
            grew = total > self.peak_bytes * 1.01
            if grew and time.monotonic() - last_snapshot > 3.0:
                self.snapshot = [self._describe(p, rss) for p, rss in tree]
                last_snapshot = time.monotonic()
            self.peak_bytes = max(self.peak_bytes, total)
            pss = sum(pss_bytes(p.pid) for p, _ in tree)
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            self._done.wait(self.interval_s)

    @staticmethod
    def _describe(proc: psutil.Process, rss: int) -> ProcessMemory:
        try:
            role = role_of(proc.cmdline())
        except psutil.Error:
            role = "?"
        cuda, torch_ = library_rss(proc)
        return ProcessMemory(proc.pid, role, rss, cuda, torch_)


def by_role(snapshot: list[ProcessMemory]) -> list[tuple[str, int, int, int, int]]:
    """(role, processes, RSS, CUDA-lib RSS, torch-lib RSS) summed per role, largest first."""
    roles: dict[str, list[int]] = {}
    for p in snapshot:
        row = roles.setdefault(p.role, [0, 0, 0, 0])
        row[0] += 1
        row[1] += p.rss_bytes
        row[2] += p.cuda_lib_bytes
        row[3] += p.torch_lib_bytes
    rows = [(role, n, rss, cuda, t) for role, (n, rss, cuda, t) in roles.items()]
    return sorted(rows, key=lambda r: -r[2])


def markdown(snapshot: list[ProcessMemory], peak_bytes: int, title: str) -> str:
    """Per-role table of the snapshot at the tree's peak, MiB."""
    mib = 2**20
    lines = [
        f"{title}: peak RSS of the process tree {peak_bytes / 2**30:.2f} GiB",
        "",
        "| process | count | RSS MiB | of it CUDA libs MiB | of it other torch libs MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for role, n, rss, cuda, t in by_role(snapshot):
        lines.append(f"| {role} | {n} | {rss / mib:.0f} | {cuda / mib:.0f} | {t / mib:.0f} |")
    total = sum(p.rss_bytes for p in snapshot)
    lines.append(f"| **total at the peak snapshot** | {len(snapshot)} | {total / mib:.0f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one job, print and write the per-process memory table.

    Returns:
        The run's exit status (0 when it completed).
    """
    parser = argparse.ArgumentParser(
        prog="feddistill bench memory", description=__doc__.split("\n\nUsage")[0]
    )
    parser.add_argument("--out", default="results/bench-memory", help="output folder")
    parser.add_argument("--seed", type=int, default=None, help="the job's seed (config key seed)")
    parser.add_argument(
        "--engine",
        default="simulation",
        choices=("simulation", "inprocess"),
        help="engine of the run (default simulation)",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--title", default="run", help="label of the table")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sets = [*args.set, *([f"seed={args.seed}"] if args.seed is not None else [])]
    cmd = [sys.executable, "-m", "feddistill.cli", "run", "--engine", args.engine, "--quiet"]
    cmd += ["--out", str(out / "run")]
    for pair in sets:
        cmd += ["--set", pair]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=parent_death_signal(),
    )
    sampler = TreeSampler(proc.pid, args.interval)
    sampler.start()
    try:
        output, _ = proc.communicate()
    finally:
        sampler.stop()
    seconds = time.perf_counter() - t0
    state = out / "run" / "client-state"
    state_bytes = sum(p.stat().st_size for p in state.rglob("*") if p.is_file())
    table = markdown(sampler.snapshot, sampler.peak_bytes, args.title)
    table += (
        f"\n\npeak PSS of the process tree {sampler.peak_pss_bytes / 2**30:.2f} GiB (shared "
        "pages divided among the processes that map them)"
        f"\nclient-state on disk {state_bytes / 1e6:.1f} MB; command {seconds:.0f} s\n"
    )
    roles = [
        {
            "name": role,
            "processes": n,
            "rss_bytes": rss,
            "cuda_lib_bytes": cuda,
            "torch_lib_bytes": t,
        }
        for role, n, rss, cuda, t in by_role(sampler.snapshot)
    ]
    result = {
        "peak_bytes": sampler.peak_bytes,
        "peak_pss_bytes": sampler.peak_pss_bytes,
        "client_state_bytes": state_bytes,
        "command_s": seconds,
        "sets": sets,
        "returncode": proc.returncode,
        "roles": roles,
    }
    atomic_write_text(out / "results.md", table)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    snapshot = [asdict(p) for p in sampler.snapshot]
    atomic_write_text(out / "snapshot.json", json.dumps(snapshot, indent=2) + "\n")
    print(table)
    if proc.returncode != 0:
        print(output[-2000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())

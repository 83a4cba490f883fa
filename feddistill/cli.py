"""feddistill: federated knowledge distillation with compression (Flower + Ray + PyTorch)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from feddistill.config import RunConfig
from feddistill.config_load import load_config, parse_overrides
from feddistill.progress import format_round_line
from feddistill.terminal import make_console

console = make_console()
err_console = make_console(stderr=True)


def _check_one_out_dir(out: str, overrides: list[str]) -> None:
    """Refuse ``--out`` together with a different ``--set out-dir=...``.

    Raises:
        ValueError: naming both values.
    """
    given = {k.replace("_", "-"): v for k, v in parse_overrides(overrides).items()}
    if "out-dir" in given and Path(str(given["out-dir"])).resolve() != Path(out).resolve():
        raise ValueError(
            f"--out {out!r} and --set out-dir={given['out-dir']!r} name different results "
            "folders; give one of them"
        )


def _format_row(row: dict[str, Any], rounds: int) -> str:
    return format_round_line(row, rounds)


def run_job(
    cfg: RunConfig,
    ray_address: str | None = None,
    quiet: bool = False,
    engine: str = "simulation",
    enter_out_dir: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run one job (federated through Flower, or the centralized baseline) with progress.

    `engine` is "simulation" (Flower's simulation runtime on Ray), "deployment" (a
    local SuperLink + SuperNodes with TLS and SuperNode auth) or "inprocess" (the same
    apps in this one process, no SuperLink or Ray: for debugging and as a baseline).

    `enter_out_dir` (simulation engine only): called once the runtime is starting;
    it blocks until the data checks passed (raising their error) and prepares the
    out-dir. The ServerApp waits for it before it writes there.

    Returns:
        The run's summary.json as a dict.
    """
    from feddistill.engine import run_simulation_job

    progress = Progress(
        TextColumn(f"[bold]{cfg.strategy}"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )
    t_start = time.monotonic()
    with progress:
        task = progress.add_task("", total=cfg.num_server_rounds)

        def on_phase(text: str) -> None:
            # one plain line per phase, so a piped or logged run shows it too
            progress.update(task, description=text)
            if not quiet:
                progress.console.print(f"{time.monotonic() - t_start:6.1f} s  {escape(text)}")

        def on_row(row: dict[str, Any]) -> None:
            progress.update(task, completed=row["round"])
            if not quiet:
                progress.console.print(_format_row(row, cfg.num_server_rounds))

        if cfg.strategy == "centralized":
            # imported here (torch): the simulation's driver stays without torch (issue 13)
            from feddistill.server.centralized import run_centralized

            return run_centralized(cfg, on_row=on_row)
        if engine == "deployment":
            return run_local_deployment(cfg, on_row)
        if engine == "inprocess":
            from feddistill.inprocess import run_inprocess_job

            return run_inprocess_job(cfg, on_row=on_row, on_phase=on_phase)
        return run_simulation_job(
            cfg,
            on_row=on_row,
            ray_address=ray_address,
            on_phase=on_phase,
            enter_out_dir=enter_out_dir,
        )


def run_local_deployment(cfg: RunConfig, on_row: Any) -> dict[str, Any]:
    """The job on Flower's Deployment Engine on this machine: a TLS SuperLink with
    SuperNode authentication and one SuperNode per partition (see deploy/README.md)."""
    import json

    from feddistill.deployment import LocalDeployment

    out = Path(cfg.out_dir)
    with LocalDeployment(out / "deployment", cfg.num_partitions) as deployment:
        summary = deployment.run_job(cfg, timeout_s=cfg.round_timeout_s * cfg.num_server_rounds)
    for line in (out / "metrics.jsonl").read_text().splitlines():
        on_row(json.loads(line))
    return summary


def cmd_run(args: argparse.Namespace) -> int:
    from feddistill.config import from_mapping
    from feddistill.outdir_lock import OutDirLock
    from feddistill.preflight import (
        check_local_resources,
        check_out_dir,
        check_resume_changes,
        check_server_threads,
        load_run_config,
        prepare_out_dir,
        run_data_checks,
        run_is_complete,
        start_data_checks,
    )

    if getattr(args, "seeds", None) is not None:  # one full run per seed, then OUT/seeds.*
        from feddistill.seed_runs import run_seeds

        return run_seeds(args, _run_and_report, describe_previous_run)
    if args.resume:
        # the interrupted run's own config, then whatever --config / --set change
        out = Path(args.resume).resolve()
        OutDirLock(out).check_free()  # a live run's folder: refused at once, naming its PID
        base = from_mapping({**load_run_config(out), "out-dir": str(out)})
        cfg = load_config(args.config, list(args.set or []), base=base)
        check_resume_changes(base, cfg)
        cfg = dataclasses.replace(cfg, out_dir=str(out), resume=True)
        if run_is_complete(cfg):
            console.print(f"{out}: the run is already complete ({cfg.num_server_rounds} rounds)")
            return 0
        done = checkpoint_round(out)
        if done > cfg.num_server_rounds:
            raise ValueError(
                f"--resume: num-server-rounds={cfg.num_server_rounds} is below the "
                f"{done} rounds the checkpoint in {out} holds; allowed: {done} or more"
            )
        console.print(
            f"resuming {out}: continuing from round {done + 1} of {cfg.num_server_rounds} "
            f"(checkpoint after round {done})"
            if done < cfg.num_server_rounds
            else f"resuming {out}: all {done} rounds are done; finishing the run"
        )
    else:
        overrides = list(args.set or [])
        if args.out:
            _check_one_out_dir(args.out, overrides)
            overrides.append(f"out-dir={str(Path(args.out).resolve())!r}")
        cfg = load_config(args.config, overrides)
        cfg = dataclasses.replace(
            cfg,
            out_dir=str(Path(cfg.out_dir).resolve()),
            data_root=str(Path(cfg.data_root).resolve()),
            resume=False,
        )
    # every check that can fail fast runs before the out-dir is touched, cheapest first
    lock = OutDirLock(cfg.out_dir)
    lock.check_free()
    if not args.resume:
        check_out_dir(cfg)  # before the data checks, which take seconds to a minute
    check_server_threads(cfg)
    if not args.ray_address and cfg.strategy != "centralized" and args.engine == "simulation":
        check_local_resources(cfg)
    # torch + data checks in a child, so this process stays small (issue 13). On the
    # simulation engine the child runs while the SuperLink, `flwr run` and Ray start,
    # and the ServerApp touches the out-dir only once they passed; elsewhere first.
    overlapped = args.engine == "simulation" and cfg.strategy != "centralized"
    with contextlib.ExitStack() as stack:
        checks = None
        if overlapped:
            checks = stack.enter_context(start_data_checks(cfg, check_cuda=not args.ray_address))
        else:
            run_data_checks(
                cfg, check_cuda=not args.ray_address, in_child=args.engine != "inprocess"
            )

        def enter_out_dir() -> None:
            """The data checks passed: lock the out-dir, replace a previous run there,
            record the command. Nothing in the out-dir is touched before."""
            shared = checks.wait() if checks is not None else None
            # held for the whole run; the kernel drops it if this process dies
            stack.enter_context(lock)
            if not args.resume:
                replaced = describe_previous_run(Path(cfg.out_dir))
                prepare_out_dir(cfg)
                if replaced:
                    console.print(f"{cfg.out_dir} held {replaced}; it was replaced by this run")
                from feddistill.server.provenance import save_command

                save_command(Path(cfg.out_dir), ["feddistill", *getattr(args, "argv", [])])
            if shared is not None:
                # the data the checks built: the ServerApp reads it instead of computing
                # it again with scikit-learn and flwr-datasets (feddistill.server.run_data)
                from feddistill.atomic import atomic_write_bytes
                from feddistill.run_folder import RunFolder

                Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(RunFolder(cfg.out_dir).client_data, shared)

        if checks is None:
            enter_out_dir()
            return _run_and_report(cfg, args)
        return _run_and_report(cfg, args, enter_out_dir)


def _run_and_report(
    cfg: RunConfig, args: argparse.Namespace, enter_out_dir: Callable[[], None] | None = None
) -> int:
    console.print(
        f"feddistill: strategy={cfg.strategy} dataset={cfg.dataset} clients={cfg.num_partitions} "
        f"({cfg.partitioner}) rounds={cfg.num_server_rounds} -> {cfg.out_dir}"
    )
    # enter_out_dir: the data checks still run; the simulation engine calls it once the
    # runtime is starting, before the ServerApp may write the out-dir
    extra = {} if enter_out_dir is None else {"enter_out_dir": enter_out_dir}
    summary = run_job(
        cfg, ray_address=args.ray_address, quiet=args.quiet, engine=args.engine, **extra
    )
    if summary.get("status") != "completed":
        err_console.print(
            f"[red]run failed:[/] {escape(str(summary.get('error', 'unknown error')))}"
        )
        err_console.print(f"logs: {Path(cfg.out_dir) / 'flower.log'}")
        return 1
    console.print(
        f"done: final accuracy {100 * summary['final_accuracy']:.2f}% (best {100 * summary['best_accuracy']:.2f}%), "
        f"uplink {summary['uplink_bytes'] / 1e6:.3f} MB, {summary['wall_seconds']:.1f} s. "
        f"Results: {cfg.out_dir}"
    )
    return 0


BENCHMARKS = {  # name -> module of feddistill.benchmarks
    "compression": "compression",
    "fed": "fed_mnist5k",
    "scaling": "scaling",
    "robustness": "robustness",
    "domains": "domains",
    "overhead": "overhead",
    "fidelity": "fidelity",
    "comm": "comm_settings",
    "memory": "memory",
    "gpu": "gpu",
}
BENCHMARK_HELP = {
    "compression": "codec settings (top-k density x bit width): compression ratio, "
    "SQNR, encode/decode MB/s; exported int8 student size, latency and accuracy",
    "fed": "feddistill vs fedavg, fedavg-compressed, fedmd, feddf, logits-only and centralized "
    "on MNIST-5k: accuracy, worst-domain accuracy, uplink/downlink/total bytes, wall time "
    "(--regime label-skew: feddistill coverage-era and domain vs fedavg(-compressed), 10 "
    "Dirichlet(0.1) clients)",
    "scaling": "the same small job on one node, on a local multi-node Ray cluster and on "
    "Flower's Deployment Engine (SuperLink + SuperNodes): start-up vs training time",
    "robustness": "malicious clients (scaled / sign-flipped / random updates, shifted or "
    "random logits with maximal affinity claims), 1 of 4 and 2 of 10: accuracy vs the clean "
    "run and vs undefended FedAvg",
    "domains": "cross-domain source -> target: leave-one-domain-out over mnist5k-rotated and "
    "both directions of digits-mix, several seeds, mean +- std per method",
    "overhead": "seconds per phase of one job (start-up, data, teacher/student training, KD, "
    "encode/decode, messaging + Ray, aggregation, evaluation, I/O, export) on the simulation "
    "and in-process engines, and their wall-time ratio",
    "fidelity": "published results' shapes beside ours: top-k 5% with and without error "
    "feedback, 4-bit updates vs fp32 FedAvg, a distilled student vs the same student alone",
    "comm": "communication settings on one split (--preset logits-bits | cheaper-logits | "
    "targets, or --setting): final/best accuracy, uplink/downlink MB, ratios vs fp32 FedAvg",
    "memory": "one `feddistill run` in a subprocess: peak RSS of its whole process tree, per "
    "process role (SuperLink, flwr-simulation, Ray, workers), CUDA/torch library share",
    "gpu": "the default and resnet18-student jobs on CUDA and on the CPU: round time, peak "
    "GPU memory and RSS; a packed run with the GPU fraction `feddistill plan` chose",
}


def checkpoint_round(out: Path) -> int:
    """The round of the last checkpoint in ``<out>/checkpoints`` (0 if there is none)."""
    latest = out / "checkpoints" / "latest"
    if not latest.is_file():
        return 0
    name = latest.read_text().strip()  # "round-<r>.pt"
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else 0


def describe_previous_run(out: Path) -> str | None:
    """What a fresh run into `out` replaces, e.g. "a finished run (fedavg, 10 rounds)"."""
    import json

    summary = out / "summary.json"
    if not summary.is_file():
        return None
    try:
        data = json.loads(summary.read_text())
    except ValueError:
        return "a previous run"
    kind = "a finished run" if data.get("status") == "completed" else "a failed run"
    return f"{kind} ({data.get('strategy')}, {data.get('rounds', 0)} rounds)"


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"feddistill.benchmarks.{BENCHMARKS[args.which]}")
    if not getattr(module, "NATIVE_SEEDS", False) and any(
        a == "--seeds" or a.startswith("--seeds=") for a in args.rest
    ):  # issue 10: the runner runs the benchmark once per seed and aggregates
        from feddistill.seed_runs import bench_seeds

        return bench_seeds(args.which, module.main, list(args.rest))
    return int(module.main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feddistill", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the federated job (Flower simulation on Ray)",
        epilog="Config keys (kebab-case) and their defaults: README.md, or "
        "[tool.flwr.app.config] in pyproject.toml. Example: --set num-server-rounds=3 "
        "--set strategy=fedavg",
    )
    run.add_argument(
        "--config", help="TOML file with kebab-case keys (top level or [tool.flwr.app.config])"
    )
    run.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one config key (repeatable)"
    )
    run.add_argument("--out", help="results directory (config key out-dir)")
    run.add_argument(
        "--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint"
    )
    run.add_argument(
        "--ray-address", help="attach to an existing Ray cluster (else RAY_ADDRESS or a local one)"
    )
    run.add_argument(
        "--engine",
        choices=("simulation", "deployment", "inprocess"),
        default="simulation",
        help="simulation: Flower simulation on Ray (default); deployment: local TLS SuperLink "
        "behind a Fleet-only nginx proxy + one authenticated SuperNode per partition; "
        "inprocess: the same ServerApp/ClientApp in this one process, no SuperLink or Ray "
        "(debugging with pdb, overhead baseline)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or per-round lines")
    run.add_argument(
        "--seeds",
        metavar="0,1,2",
        help="run the job once per seed into OUT/seed-N, then write OUT/seeds.md and "
        "OUT/seeds.json (mean ± std); not with --resume",
    )
    run.set_defaults(func=cmd_run)

    try:
        from feddistill.partition_cli import add_partition_parser

        add_partition_parser(sub)
    except ImportError:  # pragma: no cover - the data package is always installed
        pass

    from feddistill.cluster.cli_plan import add_plan_parser

    add_plan_parser(sub)

    from feddistill.compare import add_compare_parser

    add_compare_parser(sub)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: " + " | ".join(BENCHMARKS),
        description="Run one of feddistill's benchmarks; each writes results.json and "
        "results.md to its --out folder. `feddistill bench NAME --help` lists its options. "
        "Every benchmark takes --seeds 0,1,2: domains and fidelity natively; the others run "
        "once per seed (--seed N --out OUT/seed-N) and OUT/seeds.md / seeds.json hold "
        "mean ± std of every number in their results.json.",
        epilog="benchmarks:\n"
        + "\n".join(f"  {name:<12} {BENCHMARK_HELP.get(name, '')}" for name in BENCHMARKS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("which", choices=tuple(BENCHMARKS), help="the benchmark to run")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(func=cmd_bench)
    return parser


def version_text() -> str:
    """``feddistill 0.1.0 (flwr 1.42.0, torch 2.x, ray 2.x, python 3.11.x)``."""
    from feddistill.server.provenance import package_versions

    versions = package_versions()
    others = ", ".join(f"{name} {v}" for name, v in versions.items() if name != "feddistill")
    return f"feddistill {versions['feddistill']} ({others})"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every finally-block runs."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``feddistill`` console script."""
    started = time.time()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so the engine's finally-block stops what it started.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    except PermissionError as exc:  # e.g. a read-only out-dir given to --resume
        err_console.print(f"[red]error:[/] cannot write there: {escape(str(exc))}")
        return 2
    except RuntimeError as exc:
        err_console.print(f"[red]run failed:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt as exc:
        err_console.print("interrupted; every process this run started was stopped.")
        out = getattr(args, "resume", None) or getattr(args, "out", None)
        summary = Path(out) / "summary.json" if out else None
        # only this command's summary: the out-dir may still hold a previous run's
        # (the simulation engine replaces it once the data checks passed)
        if (
            summary is not None
            and summary.is_file()
            and summary.stat().st_mtime >= started
            and '"completed"' in summary.read_text()
        ):
            err_console.print(f"the run had already completed; results in {out}")
        elif out and (Path(out) / "checkpoints" / "latest").is_file():
            err_console.print(f"continue with: feddistill run --resume {out}")
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())

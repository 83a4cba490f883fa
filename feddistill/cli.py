"""feddistill: federated knowledge distillation with compression (Flower + Ray + PyTorch)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from feddistill.config import RunConfig, load_config
from feddistill.terminal import make_console

console = make_console()
err_console = make_console(stderr=True)


def _format_row(row: dict[str, Any], rounds: int) -> str:
    ratio = row.get("ratio_vs_fedavg_fp32")
    ratio_txt = f" | {ratio:5.1f}x smaller than fp32 FedAvg" if isinstance(ratio, float) else ""
    return (
        f"round {row['round']:>3}/{rounds} | acc {100 * row['accuracy']:5.1f}% "
        f"(worst domain {100 * row['worst_domain_accuracy']:5.1f}%) | loss {row['loss']:.3f} | "
        f"uplink {row['uplink_bytes'] / 1e6:7.3f} MB{ratio_txt} | failed {row.get('failed', 0)} | "
        f"{row['round_seconds']:5.1f} s"
    )


def run_job(
    cfg: RunConfig, ray_address: str | None = None, quiet: bool = False, engine: str = "simulation"
) -> dict[str, Any]:
    """Run one job (federated through Flower, or the centralized baseline) with progress.

    `engine` is "simulation" (Flower's simulation runtime on Ray) or "deployment" (a
    local SuperLink + SuperNodes with TLS and SuperNode auth).

    Returns:
        The run's summary.json as a dict.
    """
    from feddistill.engine import run_simulation_job
    from feddistill.server.centralized import run_centralized

    progress = Progress(
        TextColumn(f"[bold]{cfg.strategy}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )
    with progress:
        task = progress.add_task("rounds", total=cfg.num_server_rounds)

        def on_row(row: dict[str, Any]) -> None:
            progress.update(task, completed=row["round"])
            if not quiet:
                progress.console.print(_format_row(row, cfg.num_server_rounds))

        if cfg.strategy == "centralized":
            return run_centralized(cfg, on_row=on_row)
        if engine == "deployment":
            return run_local_deployment(cfg, on_row)
        return run_simulation_job(cfg, on_row=on_row, ray_address=ray_address)


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
    from feddistill.engine import (
        check_dataset_available,
        check_local_resources,
        load_run_config,
        prepare_out_dir,
        run_is_complete,
    )

    if args.resume:
        # the interrupted run's own config, then whatever --config / --set change
        out = Path(args.resume).resolve()
        base = from_mapping({**load_run_config(out), "out-dir": str(out)})
        cfg = load_config(args.config, list(args.set or []), base=base)
        cfg = dataclasses.replace(cfg, out_dir=str(out), resume=True)
        if run_is_complete(cfg):
            console.print(f"{out}: the run is already complete ({cfg.num_server_rounds} rounds)")
            return 0
    else:
        overrides = list(args.set or [])
        if args.out:
            overrides.append(f"out-dir={str(Path(args.out).resolve())!r}")
        cfg = load_config(args.config, overrides)
        cfg = dataclasses.replace(
            cfg,
            out_dir=str(Path(cfg.out_dir).resolve()),
            data_root=str(Path(cfg.data_root).resolve()),
            resume=False,
        )
    # every check that can fail fast runs before the out-dir is touched
    if cfg.strategy != "centralized" and args.engine == "simulation" and not args.ray_address:
        check_local_resources(cfg)
    check_dataset_available(cfg)
    if not args.resume:
        prepare_out_dir(cfg)
    console.print(
        f"feddistill: strategy={cfg.strategy} dataset={cfg.dataset} clients={cfg.num_partitions} "
        f"({cfg.partitioner}) rounds={cfg.num_server_rounds} -> {cfg.out_dir}"
    )
    summary = run_job(cfg, ray_address=args.ray_address, quiet=args.quiet, engine=args.engine)
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


BENCHMARKS = {
    "compression": "compression.py",
    "fed": "fed_mnist5k.py",
    "scaling": "scaling.py",
    "domains": "domains.py",
}


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib.util

    from feddistill.engine import app_dir

    path = app_dir() / "benchmarks" / BENCHMARKS[args.which]
    spec = importlib.util.spec_from_file_location(f"feddistill_bench_{args.which}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"benchmark script {path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feddistill", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
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
        choices=("simulation", "deployment"),
        default="simulation",
        help="simulation: Flower simulation on Ray (default); deployment: local TLS SuperLink "
        "+ one authenticated SuperNode per partition",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or per-round lines")
    run.set_defaults(func=cmd_run)

    try:
        from feddistill.data.cli_partition import add_partition_parser

        add_partition_parser(sub)
    except ImportError:  # pragma: no cover - the data package is always installed
        pass

    from feddistill.cluster.cli_plan import add_plan_parser

    add_plan_parser(sub)

    bench = sub.add_parser("bench", help="benchmarks: compression | fed | scaling | domains")
    bench.add_argument("which", choices=tuple(BENCHMARKS))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(func=cmd_bench)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every finally-block runs."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``feddistill`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
    except RuntimeError as exc:
        err_console.print(f"[red]run failed:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt as exc:
        err_console.print("interrupted; every process this run started was stopped.")
        out = getattr(args, "resume", None) or getattr(args, "out", None)
        summary = Path(out) / "summary.json" if out else None
        if summary is not None and summary.is_file() and '"completed"' in summary.read_text():
            err_console.print(f"the run had already completed; results in {out}")
        elif out and (Path(out) / "checkpoints" / "latest").is_file():
            err_console.print(f"continue with: feddistill run --resume {out}")
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())

"""Several seeds of one command: ``feddistill run --seeds`` and ``feddistill bench X --seeds``.

``run --seeds 0,1,2 --out OUT`` runs the job once per seed, each into ``OUT/seed-N`` (a
full run folder, as ``run --out OUT/seed-N --set seed=N`` would write), then writes
``OUT/seeds.json`` and ``OUT/seeds.md``: mean ± std over the completed seeds of the
final and best accuracy, the worst-domain accuracy, the source / target accuracy when
the run has target domains, uplink / downlink bytes and wall time.

``bench X --seeds 0,1,2``: a benchmark that handles seeds itself (its module sets
``NATIVE_SEEDS = True``: ``domains``, ``fidelity``) gets the option as it is. Any other
runs once per seed with ``--seed N --out OUT/seed-N`` (every benchmark takes both and
writes ``results.json`` into ``--out``); then every number found in all the seeds'
``results.json`` (see :func:`feddistill.seeds.numeric_leaves`) is aggregated into
``OUT/seeds.json`` and ``OUT/seeds.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feddistill.config import RunConfig
from feddistill.config_load import load_config, parse_overrides
from feddistill.seeds import RUN_METRICS, aggregate, numeric_leaves, parse_seeds, seeds_markdown
from feddistill.terminal import make_console

console = make_console()

SEED_DIR = re.compile(r"seed-\d+")
SEEDS_FILES = ("seeds.json", "seeds.md")


def check_seeds_out(out: Path) -> None:
    """Refuse a folder that a multi-seed command must not write into; touches nothing.

    Allowed: a missing or empty folder, or one that holds only ``seed-N`` folders and
    ``seeds.json`` / ``seeds.md`` (a previous multi-seed run, replaced seed by seed).

    Raises:
        ValueError: if `out` is a file, or holds anything else (named in the message).
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder")
    if not out.is_dir():
        return
    others = sorted(
        p.name
        for p in out.iterdir()
        if not (p.is_dir() and SEED_DIR.fullmatch(p.name)) and p.name not in SEEDS_FILES
    )
    if others:
        raise ValueError(
            f"--out {str(out)!r} holds {', '.join(others[:5])}"
            f"{' ...' if len(others) > 5 else ''}; with --seeds it must be new, empty or a "
            "previous --seeds run's folder (only seed-N folders, seeds.json, seeds.md)"
        )


def seed_configs(args: argparse.Namespace) -> tuple[Path, list[RunConfig]]:
    """The per-seed configs of ``feddistill run --seeds``: ``seed=N``, ``out-dir=OUT/seed-N``.

    Raises:
        ValueError: if ``--seeds`` is malformed, comes with ``--resume`` or with a
            ``seed`` key in ``--set``.
    """
    seeds = parse_seeds(args.seeds)
    if args.resume:
        raise ValueError(
            "--seeds cannot be combined with --resume; continue one seed's run with "
            "`feddistill run --resume OUT/seed-N`"
        )
    overrides = list(args.set or [])
    if "seed" in {k.replace("_", "-") for k in parse_overrides(overrides)}:
        raise ValueError("--seeds sets each run's seed; drop --set seed=... or drop --seeds")
    base = load_config(args.config, overrides)
    out = Path(args.out or base.out_dir).resolve()
    data_root = str(Path(base.data_root).resolve())
    configs = [
        dataclasses.replace(
            base, seed=s, out_dir=str(out / f"seed-{s}"), data_root=data_root, resume=False
        )
        for s in seeds
    ]
    return out, configs


def run_seeds(
    args: argparse.Namespace,
    run_and_report: Callable[[RunConfig, argparse.Namespace], int],
    describe_previous_run: Callable[[Path], str | None],
) -> int:
    """``feddistill run --seeds``: every check first, then one full run per seed, then the table.

    Args:
        args: the ``run`` command's options (``seeds``, ``out``, ``set``, ``config``, ...).
        run_and_report: runs one checked config whose folder is ready; returns the
            exit status (0 when the run completed).
        describe_previous_run: what a fresh run into a folder replaces, or None.

    Returns:
        0 if every seed's run completed, else 1 (the table then covers the completed
        ones and names the others).

    Raises:
        ValueError: on bad options or a folder that cannot be used, before anything runs.
    """
    from feddistill.outdir_lock import OutDirLock
    from feddistill.preflight import (
        check_data_splits,
        check_dataset_available,
        check_device,
        check_local_resources,
        check_out_dir,
        check_server_threads,
        prepare_out_dir,
    )
    from feddistill.server.provenance import save_command

    out, configs = seed_configs(args)
    check_seeds_out(out)
    first = configs[0]
    check_server_threads(first)
    if not args.ray_address:
        check_device(first)
        if first.strategy != "centralized" and args.engine == "simulation":
            check_local_resources(first)
    check_dataset_available(first)
    for cfg in configs:  # every seed's splits and folder, before any run starts
        OutDirLock(cfg.out_dir).check_free()
        check_data_splits(cfg)
        check_out_dir(cfg)
    summaries: dict[int, dict[str, Any]] = {}
    failed: list[int] = []
    for cfg in configs:
        with OutDirLock(cfg.out_dir):
            replaced = describe_previous_run(Path(cfg.out_dir))
            prepare_out_dir(cfg)
            if replaced:
                console.out(f"{cfg.out_dir} held {replaced}; it was replaced by this run")
            save_command(Path(cfg.out_dir), ["feddistill", *getattr(args, "argv", [])])
            status = run_and_report(cfg, args)
        summary = _read_json(Path(cfg.out_dir) / "summary.json")
        if status == 0 and summary.get("status") == "completed":
            summaries[cfg.seed] = summary
        else:
            failed.append(cfg.seed)
    text = write_run_seeds(out, first, summaries, failed)
    console.out(text, highlight=False)
    return 1 if failed else 0


def write_run_seeds(
    out: Path, cfg: RunConfig, summaries: dict[int, dict[str, Any]], failed: list[int]
) -> str:
    """Write ``OUT/seeds.json`` and ``OUT/seeds.md`` for ``run --seeds``; return the markdown.

    Args:
        out: the multi-seed folder.
        cfg: one seed's config (strategy, dataset and rounds for the title).
        summaries: seed -> that seed's completed summary.json.
        failed: the seeds whose run did not complete.
    """
    seeds = sorted(summaries)
    metrics = aggregate(summaries, [k for k, *_ in RUN_METRICS]) if summaries else {}
    labels = {k: (label, scale, digits) for k, label, scale, digits in RUN_METRICS}
    title = (
        f"## feddistill run --seeds {','.join(map(str, seeds)) or '-'} "
        f"({cfg.strategy}, {cfg.dataset}, {cfg.num_server_rounds} rounds)"
    )
    text = seeds_markdown(title, seeds, metrics, labels)
    if failed:
        text += f"\nNot completed (left out): seeds {', '.join(map(str, failed))}.\n"
    payload = {
        "seeds": seeds,
        "failed": failed,
        "runs": {str(s): str(out / f"seed-{s}") for s in [*seeds, *failed]},
        "metrics": metrics,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "seeds.md").write_text(text)
    return text


def split_bench_args(rest: list[str]) -> tuple[str | None, str | None, list[str]]:
    """Take ``--seeds`` and ``--out`` (``--x V`` or ``--x=V``) out of a benchmark's arguments.

    Returns:
        (seeds text or None, out or None, the other arguments in order).

    Raises:
        ValueError: if ``--seeds`` or ``--out`` has no value.
    """
    values: dict[str, str | None] = {"--seeds": None, "--out": None}
    others: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        name = arg.split("=", 1)[0]
        if name in values:
            if "=" in arg:
                values[name] = arg.split("=", 1)[1]
            elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                values[name] = rest[i + 1]
                i += 1
            else:
                raise ValueError(f"{name} needs a value, e.g. {name} 0,1,2")
        else:
            others.append(arg)
        i += 1
    return values["--seeds"], values["--out"], others


def bench_seeds(which: str, main: Callable[[list[str]], int | None], rest: list[str]) -> int:
    """``feddistill bench WHICH --seeds ...`` for a benchmark without its own ``--seeds``.

    Runs ``main([*rest, "--seed", N, "--out", OUT/seed-N])`` per seed (``OUT`` is
    ``--out``, default ``results/bench-WHICH``), reads each ``results.json`` and writes
    ``OUT/seeds.json`` / ``OUT/seeds.md`` with mean ± std of every number all seeds have.

    Returns:
        0 if every seed's benchmark returned 0, 2 if the first one refused to start
        (returned 2: nothing runs and nothing is written), else 1.

    Raises:
        ValueError: on a malformed ``--seeds``, ``--seed`` given with it, or an ``--out``
            that holds other files.
    """
    seeds_text, out_text, others = split_bench_args(rest)
    if seeds_text is None:
        raise ValueError("bench_seeds needs --seeds")
    seeds = parse_seeds(seeds_text)
    if any(a == "--seed" or a.startswith("--seed=") for a in others):
        raise ValueError("--seeds sets each run's --seed; give one of the two")
    out = Path(out_text or f"results/bench-{which}").resolve()
    check_seeds_out(out)
    per_seed: dict[int, dict[str, float]] = {}
    failed: list[int] = []
    for seed in seeds:
        seed_out = out / f"seed-{seed}"
        status = int(main([*others, "--seed", str(seed), "--out", str(seed_out)]) or 0)
        if status == 2 and not per_seed and not failed:
            return 2  # the benchmark refused to start (usage, no GPU): the same for every seed
        results = seed_out / "results.json"
        if status == 0 and results.is_file():
            per_seed[seed] = numeric_leaves(json.loads(results.read_text()))
        else:
            failed.append(seed)
    keys = list(dict.fromkeys(k for leaves in per_seed.values() for k in leaves))
    metrics = aggregate(per_seed, keys) if per_seed else {}
    done = sorted(per_seed)
    title = f"## feddistill bench {which} --seeds {','.join(map(str, done)) or '-'}"
    text = seeds_markdown(title, done, metrics)
    if failed:
        text += f"\nNot completed (left out): seeds {', '.join(map(str, failed))}.\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(
        json.dumps({"seeds": done, "failed": failed, "metrics": metrics}, indent=2) + "\n"
    )
    (out / "seeds.md").write_text(text)
    console.out(text, highlight=False)
    return 1 if failed else 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}

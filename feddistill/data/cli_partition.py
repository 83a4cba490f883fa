"""``feddistill partition``: show and save how a run's training data is split among clients.

Example::

    feddistill partition --dataset mnist5k --partitioner kmeans --num-partitions 4 --seed 0

prints a table (partition id, size, domain, samples per class) and writes
``<out>/partitions.json`` and ``<out>/partitions.png`` (samples per class of each
partition, stacked bars). With ``--json`` stdout holds only one JSON object::

    {"partitions": [{"id": 0, "size": 907, "label_counts": [3, 0, ...]}, ...],
     "proxy_size": 1000, "test_size": 1000}

Settings are checked by :class:`feddistill.config.RunConfig`; any error goes to stderr
with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from feddistill.config import DATASETS, PARTITIONERS, RunConfig

if TYPE_CHECKING:  # torch is imported when the command runs, not with the parser (issue 13)
    from feddistill.data.federated import FederatedData

DEFAULT_OUT = "results/partition"
EXIT_ERROR = 2
_SPARK = " ▁▂▃▄▅▆▇█"


def add_partition_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``partition`` sub-command to an ``argparse`` sub-parsers object.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new sub-parser; its ``func`` default is :func:`run_partition`.
    """
    defaults = RunConfig()
    parser = subparsers.add_parser(
        "partition",
        help="show and save the client partitions of a dataset",
        description=(
            "Split a dataset into train / proxy / test by seed, partition the train part "
            "among clients, print a table and write partitions.json and partitions.png."
        ),
    )
    parser.add_argument("--dataset", default=defaults.dataset, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument(
        "--partitioner", default=defaults.partitioner, help=f"one of {', '.join(PARTITIONERS)}"
    )
    parser.add_argument("--num-partitions", type=int, default=defaults.num_partitions)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--min-partition-size", type=int, default=defaults.min_partition_size)
    parser.add_argument(
        "--dirichlet-alpha",
        type=float,
        default=defaults.dirichlet_alpha,
        help="Dirichlet concentration (partitioner dirichlet); small = strong label skew",
    )
    parser.add_argument("--data-root", default=defaults.data_root, help="torchvision data folder")
    parser.add_argument(
        "--download", action="store_true", help="let torchvision download missing datasets"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary on stdout")
    parser.set_defaults(func=run_partition)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run config of a ``partition`` command (checked by :class:`RunConfig`).

    Raises:
        ValueError: if a value is out of range (the message names the key).
    """
    return RunConfig(
        dataset=args.dataset,
        partitioner=args.partitioner,
        num_partitions=args.num_partitions,
        seed=args.seed,
        min_partition_size=args.min_partition_size,
        dirichlet_alpha=args.dirichlet_alpha,
        data_root=args.data_root,
        download=args.download,
        # the federation's own check (min-train-nodes <= num-partitions) is not this
        # command's business: keep it satisfiable for any valid num-partitions
        min_train_nodes=max(1, min(RunConfig.min_train_nodes, args.num_partitions)),
    )


def summarize(data: FederatedData) -> dict[str, Any]:
    """The ``--json`` summary: per partition id, size and samples per class.

    Returns:
        ``{"partitions": [{"id", "size", "label_counts"}, ...], "proxy_size",
        "test_size"}``, plain ints only.
    """
    counts = data.partition_label_counts()  # (num_partitions, K)
    return {
        "partitions": [
            {"id": k, "size": int(len(p)), "label_counts": [int(c) for c in counts[k]]}
            for k, p in enumerate(data.partitions)
        ],
        "proxy_size": int(data.splits.proxy_x.shape[0]),
        "test_size": int(data.splits.test_x.shape[0]),
    }


def full_report(cfg: RunConfig, data: FederatedData) -> dict[str, Any]:
    """The content of ``partitions.json``: the summary plus settings and domains."""
    report = summarize(data)
    for entry, domain in zip(report["partitions"], data.partition_domains, strict=True):
        entry["domain"] = int(domain)
    settings = [
        "dataset",
        "partitioner",
        "num_partitions",
        "seed",
        "min_partition_size",
        "dirichlet_alpha",
        "proxy_fraction",
        "test_fraction",
    ]
    return {
        "config": {key.replace("_", "-"): getattr(cfg, key) for key in settings},
        "num_classes": data.splits.num_classes,
        "num_domains": data.num_domains,
        "train_size": int(data.splits.train_x.shape[0]),
        **report,
        "test_domain_counts": np.bincount(data.test_domains, minlength=data.num_domains).tolist(),
    }


def save_plot(counts: np.ndarray, path: Path, title: str) -> None:
    """Stacked bars of samples per class for each partition, written as a PNG.

    Args:
        counts: samples per class, shape (num_partitions, K).
        path: the PNG file to write.
        title: the figure title.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    num_partitions, num_classes = counts.shape
    fig = Figure(figsize=(max(4.0, 0.5 * num_partitions + 2.0), 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ids = np.arange(num_partitions)
    bottom = np.zeros(num_partitions)
    cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    for c in range(num_classes):
        ax.bar(ids, counts[:, c], bottom=bottom, color=cmap(c % cmap.N), label=str(c), width=0.8)
        bottom += counts[:, c]
    ax.set_xlabel("partition (client) id")
    ax.set_ylabel("samples")
    ax.set_title(title)
    if num_partitions <= 40:
        ax.set_xticks(ids)
    ax.legend(title="class", fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})


def _spark(counts: np.ndarray) -> str:
    top = max(int(counts.max()), 1)
    return "".join(_SPARK[int(round(8 * int(c) / top))] for c in counts)


def print_table(cfg: RunConfig, data: FederatedData, files: list[Path]) -> None:
    """Print the partition table with rich on stdout."""
    from rich import box
    from rich.table import Table

    from feddistill.terminal import make_console

    counts = data.partition_label_counts()
    table = Table(
        title=(
            f"{cfg.dataset}: {cfg.partitioner} partitions (seed {cfg.seed}), "
            f"train {data.splits.train_x.shape[0]}"
        ),
        caption=(
            f"proxy set {data.splits.proxy_x.shape[0]} (unlabeled), test set "
            f"{data.splits.test_x.shape[0]}, {data.num_domains} domains"
        ),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("id", justify="right")
    table.add_column("size", justify="right")
    table.add_column("domain", justify="right")
    table.add_column("labels", no_wrap=True)
    for c in range(counts.shape[1]):
        table.add_column(str(c), justify="right")
    for k, part in enumerate(data.partitions):
        table.add_row(
            str(k),
            str(len(part)),
            str(data.partition_domains[k]),
            _spark(counts[k]),
            *(str(int(n)) for n in counts[k]),
        )
    console = make_console(file=sys.stdout)
    console.print(table)
    for path in files:
        console.print(f"wrote {path}")


def run_partition(args: argparse.Namespace) -> int:
    """Run ``feddistill partition``.

    Args:
        args: parsed arguments of the parser from :func:`add_partition_parser`.

    Returns:
        0 on success, 2 on bad settings, missing data or an unwritable output folder
        (the message goes to stderr).
    """
    try:
        cfg = config_from_args(args)
        from feddistill.data.federated import prepare_federated_data

        data = prepare_federated_data(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"feddistill partition: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    out = Path(args.out)
    json_path, png_path = out / "partitions.json", out / "partitions.png"
    try:
        out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(full_report(cfg, data), indent=2) + "\n")
        save_plot(
            data.partition_label_counts(),
            png_path,
            f"{cfg.dataset}, {cfg.partitioner}, {cfg.num_partitions} partitions, seed {cfg.seed}",
        )
    except OSError as err:
        print(
            f"feddistill partition: error: cannot write to --out {str(out)!r}: {err}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(json.dumps(summarize(data)) + "\n")
    else:
        print_table(cfg, data, [json_path, png_path])
    return 0

"""Published results' shapes in our harness (``feddistill bench fidelity``).

Each row of the table is the *shape* of a published result (who beats whom, by about
how much), the published numbers, and our measured value (mean ± std over seeds) on
MNIST-5k; a row says whether the shape held, and its note explains a disagreement.

Federated rows (FedAvg through the real ServerApp loop and ClientApp, in this process:
:func:`feddistill.inprocess.run_rounds`, no Ray; 4 IID clients, ``cnn-small``,
``--rounds`` rounds, the project's learning rate, momentum and batch size):

- ``fedavg``: dense fp32 updates (the reference);
- ``topk-5%``: ``fedavg-compressed``, ``update-density=0.05``, fp32 values,
  ``error-feedback=false`` (the 95% not sent are dropped);
- ``topk-5%+ef``: the same with ``error-feedback=true`` (they are added to the next
  round's update);
- ``4-bit``: ``fedavg-compressed``, dense, ``update-bit-width=4``, no error feedback.

  FedLab's MNIST table (top-5% 11.35%, QSGD 4-bit 93.03%, FedAvg 93.14%); EF-SGD,
  Karimireddy et al., arXiv:1901.09847; QSGD, Alistarh et al., arXiv:1610.02132.

Distillation rows (centralized, no federation): ``cnn`` teacher trained on ``--labels``
labelled training samples; ``cnn-small`` trained on the same samples alone, and again
with ``alpha * KD`` to the teacher's soft labels on those same samples (temperature
``KD_TEMPERATURE``). Hinton et al., arXiv:1503.02531 (MNIST: distilled small net 74
test errors vs 146 alone, teacher 67).

Outputs in ``--out`` (default ``results/bench-fidelity``): ``results.csv`` (one row per
setting and seed), ``results.md`` (the table); the table is printed too.

Usage: feddistill bench fidelity [--quick] [--seeds 0,1,2] [--rounds 10] [--labels 500]
       [--out results/bench-fidelity] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from feddistill.benchmarks.domain_runs import cpu_seconds
from feddistill.config import from_mapping
from feddistill.config_load import parse_overrides
from feddistill.seeds import format_mean_std, mean_std, parse_seeds

NATIVE_SEEDS = True  # `feddistill bench fidelity --seeds` is handled here, not by the runner

FED_SETTINGS: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy": "fedavg"},
    "topk-5%": {
        "strategy": "fedavg-compressed",
        "update-density": 0.05,
        "update-bit-width": 32,
        "error-feedback": False,
    },
    "topk-5%+ef": {
        "strategy": "fedavg-compressed",
        "update-density": 0.05,
        "update-bit-width": 32,
        "error-feedback": True,
    },
    "4-bit": {
        "strategy": "fedavg-compressed",
        "update-density": 1.0,
        "update-bit-width": 4,
        "error-feedback": False,
    },
}
FED_COMMON = {
    "partitioner": "iid",
    "num-partitions": 4,
    "student-model": "cnn-small",
    "device": "cpu",
}
KD_SETTINGS = ("kd-teacher", "kd-student-alone", "kd-student-distilled")
KD_TEMPERATURE = 4.0
KD_ALPHA = 1.0
CHANCE = 0.1  # 10 classes


class Scale(NamedTuple):
    """How big the benchmark is: the full run or ``--quick`` (its test)."""

    dataset: str
    rounds: int
    labels: int
    teacher_epochs: int
    student_epochs: int


FULL = Scale(dataset="mnist5k", rounds=10, labels=500, teacher_epochs=20, student_epochs=20)
QUICK = Scale(dataset="digits", rounds=2, labels=200, teacher_epochs=2, student_epochs=2)


def run_federated(setting: str, seed: int, scale: Scale, out: Path, extra: dict) -> dict:
    """One FedAvg-family run of `setting`; its final accuracy and uplink bytes."""
    from feddistill.inprocess import run_rounds

    run_dir = out / "runs" / setting.replace("%", "pct") / f"seed-{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run every time: no resume from an old checkpoint
    cfg = from_mapping(
        {
            **FED_COMMON,
            "dataset": scale.dataset,
            "num-server-rounds": scale.rounds,
            "seed": seed,
            **FED_SETTINGS[setting],
            **extra,
            "out-dir": str(run_dir),
        }
    )
    t0 = time.perf_counter()
    rows = run_rounds(cfg)
    return {
        "setting": setting,
        "seed": seed,
        "accuracy": rows[-1]["accuracy"],
        "uplink_bytes": rows[-1]["cumulative_uplink_bytes"],
        "wall_seconds": time.perf_counter() - t0,
    }


def run_distillation(seed: int, scale: Scale) -> list[dict]:
    """Teacher ``cnn``, then ``cnn-small`` alone and with KD, on the same labelled samples.

    Returns:
        Three rows (``KD_SETTINGS``) with the test accuracy of each model.
    """
    from feddistill.data.datasets import load_dataset
    from feddistill.data.splits import split_dataset
    from feddistill.distill import soft_labels
    from feddistill.learn import (
        KDSpec,
        KDTarget,
        SGDSpec,
        evaluate,
        predict_logits,
        train_supervised,
    )
    from feddistill.models import build_model

    cfg = from_mapping({"dataset": scale.dataset, "seed": seed})
    splits = split_dataset(
        load_dataset(cfg.dataset, cfg.data_root), cfg.proxy_fraction, cfg.test_fraction, seed
    )
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(splits.train_x.shape[0], generator=gen)[: scale.labels]
    x, y = splits.train_x[idx], splits.train_y[idx]  # (labels, C, H, W), (labels,)
    cpu = torch.device("cpu")
    shape, k = splits.in_shape, splits.num_classes
    rows = []

    def fit(name: str, model_name: str, epochs: int, lr: float, kd: KDTarget | None) -> Any:
        t0 = time.perf_counter()
        model = build_model(model_name, shape, k, seed=seed)
        sgd = SGDSpec(lr, cfg.momentum, cfg.batch_size, epochs=epochs, seed=seed)
        train_supervised(model, x, y, sgd, cpu, kd=kd)
        acc = evaluate(model, splits.test_x, splits.test_y, cpu)["accuracy"]
        rows.append(
            {
                "setting": name,
                "seed": seed,
                "accuracy": acc,
                "uplink_bytes": 0,
                "wall_seconds": time.perf_counter() - t0,
            }
        )
        return model

    teacher = fit("kd-teacher", "cnn", scale.teacher_epochs, cfg.teacher_learning_rate, None)
    soft = soft_labels(predict_logits(teacher, x, cpu), KD_TEMPERATURE)  # (labels, K)
    fit("kd-student-alone", "cnn-small", scale.student_epochs, cfg.learning_rate, None)
    kd = KDTarget(proxy_x=x, soft_labels=soft, kd=KDSpec(KD_ALPHA, KD_TEMPERATURE))
    fit("kd-student-distilled", "cnn-small", scale.student_epochs, cfg.learning_rate, kd)
    return rows


class Claim(NamedTuple):
    """One published result's shape: the settings it compares and when it holds.

    Attributes:
        claim: the shape, in words, with its source.
        ours: the settings whose mean accuracies the row shows, first the one tested.
        published: the published numbers, as text.
        holds: mean accuracy per setting -> whether the shape held.
        disagrees: the note when it did not hold (why our harness differs).
        note: a note shown whatever the outcome.
    """

    claim: str
    ours: tuple[str, ...]
    published: str
    holds: Callable[[dict[str, float]], bool]
    disagrees: str = ""
    note: str = ""


CLAIMS = (
    Claim(
        "FedAvg, fp32 updates: the reference (FedLab MNIST)",
        ("fedavg",),
        "93.14%",
        lambda m: True,
        note="reference row; our data, model and round count differ from FedLab's.",
    ),
    Claim(
        "top-k 5% without error feedback loses most of FedAvg's accuracy (FedLab MNIST)",
        ("topk-5%", "fedavg"),
        "11.35% vs FedAvg 93.14%",
        lambda m: m["fedavg"] - m["topk-5%"] > 0.5 * (m["fedavg"] - CHANCE),
        disagrees="not reproduced: here plain top-k ends below FedAvg but does not collapse. "
        "11.35% is exactly the share of the digit 1 in MNIST's test set (1,135 of 10,000): "
        "FedLab's model ended predicting one class, a diverged run. Ours sends the top 5% "
        "of local - global after one local epoch, averaged over 4 IID clients; the 95% "
        "not sent are lost, which slows training but did not make it diverge. EF-SGD's "
        "examples where compression without feedback fails to converge are constructed "
        "problems, not this one.",
    ),
    Claim(
        "top-k 5% with error feedback stays within ~1 point of FedAvg (EF-SGD, "
        "Karimireddy et al. 2019)",
        ("topk-5%+ef", "fedavg"),
        "EF-SGD ≈ SGD (within ~1 point)",
        lambda m: m["fedavg"] - m["topk-5%+ef"] <= 0.01,
        disagrees="not reproduced at this round count. Untested explanation: the residual "
        "delays most of each update by one or more rounds, and with few rounds part of it "
        "has not arrived yet.",
    ),
    Claim(
        "4-bit updates within 0.5 point of fp32 FedAvg (FedLab MNIST, QSGD)",
        ("4-bit", "fedavg"),
        "93.03% vs 93.14%",
        lambda m: m["fedavg"] - m["4-bit"] <= 0.005,
        disagrees="not reproduced: 4-bit codes of a dense update lose more than half a "
        "point here; untested whether stochastic rounding (QSGD) would close the gap.",
        note="our quantizer is not QSGD: uniform affine codes with a min-max scale per "
        "output channel and round-to-nearest (the client round leaves "
        "CompressionSpec.stochastic at False); QSGD rounds norm-scaled values "
        "stochastically (unbiased).",
    ),
    Claim(
        "a small student distilled from a large teacher beats the same student trained "
        "alone on the same labels (Hinton et al. 2015, MNIST)",
        ("kd-student-distilled", "kd-student-alone", "kd-teacher"),
        "99.26% vs 98.54% alone (teacher 99.33%)",
        lambda m: m["kd-student-distilled"] > m["kd-student-alone"],
        disagrees="not reproduced: the distilled student ends below the one trained alone. "
        "The teacher learnt from the same few labels and fits them, so its soft labels on "
        f"those samples carry little beyond them, and the soft term, weighted "
        f"T^2 = {KD_TEMPERATURE**2:g} times the KL here, pulls the student toward them "
        "(README, 'Fidelity to published results': a check at other T / alpha). "
        "Hinton's teacher and transfer set: 60k images. Not tried: an unlabelled "
        "transfer set, longer training.",
        note=f"centralized; cnn teacher, cnn-small student, KD at T={KD_TEMPERATURE:g}, "
        f"alpha={KD_ALPHA:g} on the labelled samples only (Hinton used all 60k MNIST "
        "training images).",
    ),
)


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The fidelity table: one line per claim, published vs ours (mean ± std over seeds).

    Args:
        rows: one dict per (setting, seed) with ``setting``, ``seed``, ``accuracy`` in
            [0, 1]; a claim whose settings are missing is left out.
        title: the heading line.

    Returns:
        Markdown: the heading, the table, then the notes.
    """
    seeds = sorted({r["seed"] for r in rows})
    acc = {s: [r["accuracy"] for r in rows if r["setting"] == s] for s in _settings(rows)}
    means = {s: mean_std(v)[0] for s, v in acc.items()}
    lines = [
        title,
        "",
        f"Accuracy (%), mean ± std over seeds {','.join(map(str, seeds))}.",
        "",
        "| # | published shape | published | ours | shape held |",
        "|---|---|---|---|---|",
    ]
    notes = []
    for i, c in enumerate(CLAIMS, start=1):
        if any(s not in acc for s in c.ours):
            continue
        ours = " vs ".join(f"{s} {format_mean_std(acc[s])}" for s in c.ours)
        held = c.holds(means)
        verdict = "yes" if held else "NO"
        lines.append(f"| {i} | {c.claim} | {c.published} | {ours} | {verdict} |")
        text = " ".join(t for t in (c.note, "" if held else c.disagrees) if t)
        if text:
            notes.append(f"{i}. {text}")
    return "\n".join([*lines, "", "Notes:", "", *notes, ""])


def _settings(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["setting"] for r in rows))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``results.csv``: setting, seed, accuracy, uplink_bytes, wall_seconds per row."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["setting", "seed", "accuracy", "uplink_bytes", "wall_seconds"]
        )
        writer.writeheader()
        writer.writerows(rows)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="feddistill bench fidelity", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"digits, {QUICK.rounds} rounds, {QUICK.labels} labels, "
        f"{QUICK.teacher_epochs} epochs (its test)",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2)")
    parser.add_argument("--rounds", type=int, default=None, help=f"default {FULL.rounds}")
    parser.add_argument(
        "--labels", type=int, default=None, help=f"labelled samples for KD (default {FULL.labels})"
    )
    parser.add_argument("--out", default="results/bench-fidelity")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of the federated runs (repeatable)",
    )
    return parser


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Scale, list[int]]:
    """Options, the run's scale and its seeds; a bad value exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    base = QUICK if args.quick else FULL
    rounds = base.rounds if args.rounds is None else args.rounds
    labels = base.labels if args.labels is None else args.labels
    if rounds < 1:
        parser.error(f"--rounds must be an integer >= 1, got {rounds}")
    if labels < 10:
        parser.error(f"--labels must be an integer >= 10 (one batch of 10 classes), got {labels}")
    available = _train_size(base.dataset)
    if labels > available:
        parser.error(
            f"--labels must be at most the {available} training samples of {base.dataset}, "
            f"got {labels}"
        )
    scale = Scale(base.dataset, rounds, labels, base.teacher_epochs, base.student_epochs)
    return args, scale, seeds


def main(argv: list[str] | None = None) -> int:
    """Run every setting for every seed; write results.csv / results.md; print the table."""
    args, scale, seeds = parse_args(argv)
    extra = parse_overrides(args.set)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    for seed in seeds:
        for setting in FED_SETTINGS:
            rows.append(run_federated(setting, seed, scale, out, extra))
            _progress(rows[-1])
        for row in run_distillation(seed, scale):
            rows.append(row)
            _progress(row)
        write_csv(rows, out / "results.csv")
    title = (
        f"## feddistill bench fidelity ({scale.dataset}; federated: {scale.rounds} rounds, "
        f"4 IID clients, cnn-small; distillation: {scale.labels} labels, "
        f"{scale.teacher_epochs} teacher / {scale.student_epochs} student epochs)"
    )
    text = markdown(rows, title) + cost_line(time.perf_counter() - t0, cpu_seconds() - cpu0)
    (out / "results.md").write_text(text)
    print(text)
    return 0


def cost_line(wall_s: float, cpu_s: float) -> str:
    """The benchmark's cost, as the last line of results.md.

    Args:
        wall_s: wall-clock seconds of the whole benchmark.
        cpu_s: CPU seconds (user + system) of this process and its children.

    Returns:
        One markdown line, e.g. ``Time: 12.0 min wall, 8.5 CPU-min ...``.
    """
    return (
        f"\nTime: {wall_s / 60:.1f} min wall, {cpu_s / 60:.1f} CPU-min (user + system, "
        "this process and its children).\n"
    )


def _train_size(dataset: str) -> int:
    """Training samples of `dataset` with the default proxy / test fractions."""
    from feddistill.data.datasets import load_dataset
    from feddistill.data.splits import split_sizes

    cfg = from_mapping({"dataset": dataset})
    num = len(load_dataset(dataset, cfg.data_root))
    return split_sizes(num, cfg.proxy_fraction, cfg.test_fraction)[0]


def _progress(row: dict[str, Any]) -> None:
    print(
        f"seed {row['seed']} {row['setting']}: {100 * row['accuracy']:.1f}% "
        f"({row['wall_seconds']:.0f} s)",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

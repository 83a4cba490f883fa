"""Malicious clients: accuracy under attack, defaults vs plain FedAvg (`feddistill bench robustness`).

MNIST-5k, KMeans clients, `cnn-small` teachers and student, 5 rounds, default
compression; every run goes through the real ServerApp round loop and ClientApp in
this process (:mod:`feddistill.inprocess`: no Ray, no SuperLink). For each cohort
(1 malicious client of 4, 2 of 10) and each attack of :mod:`feddistill.clients.attacks`,
two servers face the same attackers:

- ``defaults``: the default config (clipping to 2 x the median norm, robust consensus);
- ``fedavg``: no defence (``aggregator=fedavg clip-multiple=0 robust-consensus=false``),
  the behaviour before issue 17.

Each is compared with its own clean run (no attack). A run that ends with an error
(too few valid clients) is reported as ended, with the reason. Also reported: the
honest runs with ``consensus=domain`` vs ``consensus=mean`` under the defaults.

``--left-out`` runs instead, per cohort, the defaults with the attackers' clients
failing every round (``fail-partitions``): what a perfect detector that drops them
would reach. On KMeans clients each client holds a domain, so this is the ceiling for
the update attacks, below the clean run.

Usage: feddistill bench robustness [--quick] [--left-out] [--rounds 5] [--out DIR] [--json PATH]
       [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from feddistill.config import ATTACKS, from_mapping
from feddistill.inprocess import run_rounds

BASE = {"teacher-models": "cnn-small", "student-model": "cnn-small", "device": "cpu"}
UNDEFENDED = {"aggregator": "fedavg", "clip-multiple": 0.0, "robust-consensus": False}
DEFENCES = {"defaults": {}, "fedavg": UNDEFENDED}
COHORTS = {"1 of 4": (4, "0"), "2 of 10": (10, "0,1")}
TARGETS = {"1 of 4": 0.03, "2 of 10": 0.05}  # allowed accuracy loss vs the clean run


def run_one(values: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one in-process job; final accuracy, or the error that ended it."""
    cfg = from_mapping({**BASE, **values, "out-dir": str(out)})
    t0 = time.perf_counter()
    try:
        rows = run_rounds(cfg)
    except RuntimeError as exc:
        return {"ended": str(exc).split(";")[0], "seconds": time.perf_counter() - t0}
    last = rows[-1]
    return {
        "accuracy": last["accuracy"],
        "clipped": sum(int(r["clipped"]) for r in rows),
        "down_weighted": sum(int(r["down_weighted"]) for r in rows),
        "seconds": time.perf_counter() - t0,
    }


def run_all(
    rounds: int, cohorts: list[str], attacks: list[str], tmp: Path, seed: int = 0
) -> dict[str, Any]:
    """Every (cohort, defence, attack) run plus the clean ones; results by key."""
    results: dict[str, Any] = {}
    for cohort in cohorts:
        num_partitions, attackers = COHORTS[cohort]
        common = {"num-server-rounds": rounds, "num-partitions": num_partitions, "seed": seed}
        for defence, extra in DEFENCES.items():
            for attack in ["none", *attacks]:
                key = f"{cohort} | {defence} | {attack}"
                values = {**common, **extra}
                if attack != "none":
                    values.update({"attack": attack, "attack-partitions": attackers})
                results[key] = run_one(values, tmp / key.replace(" | ", "_").replace(" ", "-"))
                print(f"{key}: {results[key]}", flush=True)
    return results


def table(results: dict[str, Any], cohorts: list[str], attacks: list[str]) -> list[str]:
    """Markdown rows: accuracy and change vs clean, defaults and FedAvg side by side."""

    def cell(cohort: str, defence: str, attack: str) -> str:
        r = results[f"{cohort} | {defence} | {attack}"]
        if "ended" in r:
            return "run ended"
        clean = results[f"{cohort} | {defence} | none"].get("accuracy")
        delta = (
            "" if attack == "none" or clean is None else f" ({100 * (r['accuracy'] - clean):+.1f})"
        )
        return f"{100 * r['accuracy']:.1f}{delta}"

    lines = [
        "| malicious | attack | defaults: accuracy % (vs clean) | target met | "
        "FedAvg, no defence: accuracy % (vs clean) |",
        "|---|---|---|---|---|",
    ]
    for cohort in cohorts:
        for attack in ["none", *attacks]:
            r = results[f"{cohort} | defaults | {attack}"]
            clean = results[f"{cohort} | defaults | none"].get("accuracy")
            met = "-"
            if attack != "none":
                ok = "accuracy" in r and clean is not None
                met = "yes" if ok and clean - r["accuracy"] <= TARGETS[cohort] else "NO"
            lines.append(
                f"| {cohort} | {attack} | {cell(cohort, 'defaults', attack)} | {met} | "
                f"{cell(cohort, 'fedavg', attack)} |"
            )
    return lines


def left_out(rounds: int, cohorts: list[str], out: str | None, t0: float, seed: int = 0) -> int:
    """Defaults with the attackers' clients failing every round: the detection ceiling."""
    lines = ["| malicious | attackers left out (fail-partitions): accuracy % |", "|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out) if out else Path(tmp)
        for cohort in cohorts:
            num_partitions, attackers = COHORTS[cohort]
            values = {
                "num-server-rounds": rounds,
                "num-partitions": num_partitions,
                "fail-partitions": attackers,
                "seed": seed,
            }
            r = run_one(values, root / f"left-out-{num_partitions}")
            acc = f"{100 * r['accuracy']:.1f}" if "accuracy" in r else "run ended"
            lines.append(f"| {cohort} | {acc} |")
    lines.append(f"\n({time.perf_counter() - t0:.0f} s)")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the markdown table; optionally write JSON."""
    parser = argparse.ArgumentParser(prog="feddistill bench robustness", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 of 4, 2 rounds, 2 attacks")
    parser.add_argument(
        "--left-out", action="store_true", help="only the runs with the attackers left out"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="folder for the runs (default: temporary)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    attacks = [a for a in ATTACKS if a != "none"]
    cohorts = list(COHORTS)
    rounds = args.rounds
    if args.quick:
        attacks, cohorts, rounds = ["scaled-update", "shifted-logits"], ["1 of 4"], 2
    t0 = time.perf_counter()
    if args.left_out:
        return left_out(rounds, cohorts, args.out, t0, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        results = run_all(rounds, cohorts, attacks, root, args.seed)
        honest = {}
        if not args.quick:
            num_partitions = COHORTS["1 of 4"][0]
            for mode in ("domain", "mean"):
                values = {
                    "num-server-rounds": rounds,
                    "num-partitions": num_partitions,
                    "seed": args.seed,
                }
                honest[mode] = run_one({**values, "consensus": mode}, root / f"honest-{mode}")
    lines = [f"{rounds} rounds, MNIST-5k, KMeans clients, cnn-small teacher and student", ""]
    lines += table(results, cohorts, attacks)
    if honest:
        lines += ["", "| honest run, defaults | final accuracy % |", "|---|---|"]
        lines += [
            f"| consensus={m} | {100 * r['accuracy']:.1f} |"
            if "accuracy" in r
            else f"| consensus={m} | run ended |"
            for m, r in honest.items()
        ]
    lines.append(f"\n({time.perf_counter() - t0:.0f} s)")
    print("\n".join(lines))
    payload = json.dumps({"runs": results, "honest": honest}, indent=2)
    if args.json:
        Path(args.json).write_text(payload)
    if args.out:  # results.json beside the runs, as every benchmark (bench --seeds reads it)
        (Path(args.out) / "results.json").write_text(payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The label-skew regime of `feddistill bench fed --regime label-skew` (issue 10, part 5).

MNIST-5k, 10 clients, Dirichlet(alpha = 0.1) label skew (each client holds a few
classes), 20 rounds, `cnn-small` student, in process (the in-process engine runs the
same ServerApp / ClientApp code without Ray). Two rows: feddistill with the
class-coverage consensus sharpened as ERA (``consensus = "coverage-era"``,
:mod:`feddistill.distill.coverage`) and fp32 FedAvg; the target is feddistill >= FedAvg.

One seed per call (``--seed``); ``feddistill bench fed --regime label-skew --seeds 0,1,2``
runs it once per seed through :mod:`feddistill.seed_runs` and writes mean ± std of every
number of the seeds' ``results.json`` (e.g. ``feddistill.final_accuracy``).

Usage: feddistill bench fed --regime label-skew [--seed 0 | --seeds 0,1,2] [--out DIR]
"""

from __future__ import annotations

from collections.abc import Sequence

# the split: each client holds a few classes
LABEL_SKEW = (
    "partitioner='dirichlet'",
    "dirichlet-alpha=0.1",
    "num-partitions=10",
)
ROUNDS = 20
STRATEGIES = ("feddistill", "fedavg")
ENGINE = "inprocess"
# per strategy, before the user's --set (which wins)
EXTRA = {"feddistill": ("consensus='coverage-era'",)}


def overrides(name: str, rounds: int, seed: int, sets: Sequence[str]) -> list[str]:
    """The config overrides of strategy `name` in this regime.

    Args:
        name: a strategy of ``feddistill bench fed`` (``STRATEGIES`` by default).
        rounds: server rounds.
        seed: the run's seed (data, partitions, init).
        sets: the user's ``--set KEY=VALUE`` overrides; applied last.

    Returns:
        ``KEY=VALUE`` strings for :func:`feddistill.config.load_config`.
    """
    return [
        *LABEL_SKEW,
        f"num-server-rounds={rounds}",
        f"seed={seed}",
        f"strategy={name!r}",
        *EXTRA.get(name, ()),
        *sets,
    ]

"""The logits-only strategy's server-side columns: each client model's test accuracy.

In ``strategy=logits-only`` clients upload only their own model's logits on the
proxy set (DS-FL, arXiv:2008.06180; FedMD, arXiv:1910.03581); each may run its own
architecture (``teacher-models``), and the server student is distilled to the
consensus (FedDF's server step, arXiv:2006.07242). Each client also reports its
model's accuracy on the global test set (a measurement: it does not train on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feddistill.server.strategy import RoundOutcome

CLIENT_ACCURACY = "client_test_accuracy"  # metric name a logits-only client reports


def client_accuracy_columns(outcome: RoundOutcome) -> dict[str, float]:
    """``client_<p>_accuracy`` per accepted client that reported one, and their mean.

    Args:
        outcome: the round's accepted replies.

    Returns:
        e.g. ``{"client_0_accuracy": 0.91, "client_2_accuracy": 0.87,
        "client_accuracy_mean": 0.89}``; ``{}`` when no client reported one.
    """
    cols = {
        f"client_{r.partition_id}_accuracy": r.metrics[CLIENT_ACCURACY]
        for r in outcome.accepted
        if CLIENT_ACCURACY in r.metrics
    }
    if cols:
        cols["client_accuracy_mean"] = sum(cols.values()) / len(cols)
    return cols


def latest_client_accuracy(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each client's newest reported accuracy over all rows (partial participation).

    Args:
        rows: the run's metrics rows, oldest first.

    Returns:
        ``client_<p>_accuracy`` -> the value of the last round that client took part
        in; ``{}`` when no row has one.
    """
    latest: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("client_") and key.endswith("_accuracy") and key[7:-9].isdigit():
                latest[key] = float(value)
    return dict(sorted(latest.items(), key=lambda kv: int(kv[0][7:-9])))

"""Validation and FedAvg of decoded updates (values worked out by hand)."""

import pytest
import torch

from feddistill.server.aggregate import (
    RejectedUpdate,
    apply_update,
    fedavg,
    validate_buffers,
    validate_update,
)

TEMPLATE = {"w": torch.zeros(2), "n": torch.tensor(0, dtype=torch.long)}


def test_three_clients_one_nan_gives_mean_of_the_other_two():
    # Prepare: clients of 10 examples send 1.0, 2.0 and NaN; the NaN one is rejected.
    updates = [{"w": torch.full((2,), v), "n": torch.tensor(1)} for v in (1.0, 2.0, float("nan"))]
    accepted = []
    rejected = 0
    for upd in updates:
        try:
            validate_update(upd, TEMPLATE)
            accepted.append((10, upd))
        except RejectedUpdate:
            rejected += 1
    # Execute
    avg = fedavg(accepted)
    # Assert: (10*1.0 + 10*2.0) / 20 = 1.5
    assert rejected == 1
    assert torch.equal(avg["w"], torch.full((2,), 1.5))


def test_all_zero_examples_is_a_clear_error_not_nan():
    with pytest.raises(ValueError, match="all 2 clients reported 0 examples"):
        fedavg([(0, TEMPLATE), (0, TEMPLATE)])


def test_empty_and_negative_counts_are_errors():
    with pytest.raises(ValueError, match="at least one update"):
        fedavg([])
    with pytest.raises(ValueError, match=r"num-examples must be >= 0, got \[-1, 3\]"):
        fedavg([(-1, TEMPLATE), (3, TEMPLATE)])


def test_weights_follow_num_examples():
    # 30 examples at 0.0 and 10 at 4.0: (30*0 + 10*4) / 40 = 1.0
    avg = fedavg([(30, {"w": torch.zeros(1)}), (10, {"w": torch.full((1,), 4.0)})])
    assert avg["w"].item() == 1.0


def test_integer_buffers_keep_dtype():
    avg = fedavg([(1, {"n": torch.tensor(4)}), (1, {"n": torch.tensor(6)})])
    assert avg["n"].dtype == torch.long and avg["n"].item() == 5


def test_order_of_replies_does_not_change_a_bit():
    # Prepare: the caller sorts by partition id, so any arrival order gives one sum order.
    gen = torch.Generator().manual_seed(0)
    items = [(p, 7 + p, {"w": torch.randn(1000, generator=gen)}) for p in range(5)]
    shuffled = [items[i] for i in (3, 0, 4, 1, 2)]
    # Execute
    a = fedavg([(n, u) for _, n, u in sorted(items, key=lambda t: t[0])])
    b = fedavg([(n, u) for _, n, u in sorted(shuffled, key=lambda t: t[0])])
    # Assert
    assert torch.equal(a["w"], b["w"])


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"w": torch.zeros(2)}, r"missing \['n'\]"),
        ({**TEMPLATE, "x": torch.zeros(1)}, r"unexpected \['x'\]"),
        (
            {"w": torch.zeros(3), "n": torch.tensor(0)},
            r"update\['w'\] has shape \(3,\), expected \(2,\)",
        ),
        ({"w": torch.zeros(2, dtype=torch.long), "n": torch.tensor(0)}, r"update\['w'\] has dtype"),
        (
            {"w": torch.tensor([0.0, float("inf")]), "n": torch.tensor(0)},
            r"update\['w'\] contains NaN or Inf",
        ),
        (
            {"w": torch.tensor([3e4, 0.0]), "n": torch.tensor(0)},
            r"update\['w'\] has L2 norm 3e\+04 > max",
        ),
    ],
)
def test_validate_rejects_bad_updates(update, match):
    with pytest.raises(RejectedUpdate, match=match):
        validate_update(update, TEMPLATE)


def test_apply_update_adds_floats_and_replaces_ints():
    state = {"w": torch.ones(2), "n": torch.tensor(3)}
    new = apply_update(state, {"w": torch.full((2,), 0.5), "n": torch.tensor(7)})
    assert torch.equal(new["w"], torch.full((2,), 1.5)) and new["n"].item() == 7


def test_fedavg_refuses_to_broadcast_a_size_1_tensor_into_an_8_entry_key():
    # Prepare: the second update's "w" has 1 entry, the first's 8.
    updates = [(1, {"w": torch.zeros(8)}), (1, {"w": torch.ones(1)})]

    # Execute / Assert
    with pytest.raises(ValueError, match=r"update 1\['w'\] has shape \(1,\), update 0 has \(8,\)"):
        fedavg(updates)


def test_fedavg_refuses_extra_or_missing_keys():
    # Prepare
    updates = [(1, {"w": torch.zeros(2)}), (1, {"w": torch.zeros(2), "extra": torch.zeros(2)})]

    # Execute / Assert
    with pytest.raises(ValueError, match=r"update 1 .*missing \[\], unexpected \['extra'\]"):
        fedavg(updates)
    with pytest.raises(ValueError, match=r"update 1 .*missing \['extra'\], unexpected \[\]"):
        fedavg(updates[::-1])


def test_apply_update_replaces_buffers_with_their_average():
    # Prepare: running_var is a buffer (a value), "w" a parameter (a delta).
    state = {"w": torch.ones(2), "running_var": torch.full((2,), 4.0)}

    # Execute
    new = apply_update(state, {"w": torch.full((2,), 0.5)}, {"running_var": torch.full((2,), 2.0)})

    # Assert
    assert new["w"].tolist() == [1.5, 1.5] and new["running_var"].tolist() == [2.0, 2.0]


BUFFERS = {"bn.running_var": torch.ones(2), "bn.num_batches_tracked": torch.tensor(3)}


@pytest.mark.parametrize(
    ("buffers", "match"),
    [
        (
            {"bn.running_var": torch.ones(2)},
            r"missing \['bn.num_batches_tracked'\], unexpected \[\]",
        ),
        ({**BUFFERS, "x": torch.ones(1)}, r"missing \[\], unexpected \['x'\]"),
        ({**BUFFERS, "bn.running_var": torch.ones(3)}, r"has shape \(3,\), expected \(2,\)"),
        ({**BUFFERS, "bn.running_var": torch.ones(2, dtype=torch.long)}, "dtype torch.int64"),
        ({**BUFFERS, "bn.num_batches_tracked": torch.tensor(-1)}, "negative entry"),
    ],
)
def test_validate_buffers_rejects_with_the_key_named(buffers, match):
    with pytest.raises(RejectedUpdate, match=match):
        validate_buffers(buffers, BUFFERS)


def test_validate_buffers_accepts_zero_variance():
    # Execute / Assert: a variance of exactly 0 (a dead channel) is valid; no exception
    validate_buffers({**BUFFERS, "bn.running_var": torch.zeros(2)}, BUFFERS)


def test_apply_update_keeps_buffers_no_client_sent_logits_only_regression():
    # Prepare: logits-only sends no buffers; the update has the parameters only
    state = {"w": torch.ones(2), "bn.running_mean": torch.full((2,), 3.0)}
    # Execute
    out = apply_update(state, {"w": torch.full((2,), 0.5)})
    # Assert: w moved by the update, the BatchNorm statistic kept its value
    assert torch.equal(out["w"], torch.full((2,), 1.5))
    assert torch.equal(out["bn.running_mean"], torch.full((2,), 3.0))

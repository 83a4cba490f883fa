"""Downlink deltas against per-client replicas (server-side error feedback)."""

from __future__ import annotations

import pytest
import torch

from feddistill.compression import CompressionSpec
from feddistill.compression.downlink import (
    FULL_MODEL,
    INITIAL_MODEL,
    ReplicaBook,
    receive_student,
)

SPEC = CompressionSpec(density=0.25, bit_width=4, error_feedback=False)


def _template() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(8, 4), "b": torch.zeros(4), "bn.running_mean": torch.zeros(4)}


def _global(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return {"w": torch.randn(8, 4, generator=gen), "b": torch.randn(4, generator=gen)}


def _client_receive(book, store, pid, rnd, params, buffers):
    """What the client does: rebuild from its replica, keep the new one."""
    payload = book.payload_for(pid, rnd, params, buffers)
    replica, replica_round = store.get(pid, (None, 0))
    state, new_replica = receive_student(
        payload, replica, replica_round, _template(), ["bn.running_mean"]
    )
    store[pid] = (new_replica, rnd)
    return payload, state


def test_replicas_equal_the_servers_view_bit_for_bit_under_partial_participation():
    # Prepare: 4 clients, 2 sampled per round for 12 rounds, one reply rejected in round 5
    book, store = ReplicaBook(SPEC), {}
    buffers = {"bn.running_mean": torch.ones(4)}
    # Execute
    for rnd in range(1, 13):
        sampled = [(rnd + i) % 4 for i in (0, 2)]
        for pid in sampled:
            _client_receive(book, store, pid, rnd, _global(rnd), buffers)
        accepted = [p for p in sampled if not (rnd == 5 and p == sampled[0])]
        if rnd == 5:
            store.pop(sampled[0])  # the failed client never stored the round
        book.commit(accepted)
    # Assert
    assert set(book.replicas) == set(store)
    for pid, (server_round, server_replica) in book.replicas.items():
        replica, client_round = store[pid]
        assert client_round == server_round
        for key in server_replica:
            assert torch.equal(replica[key], server_replica[key])


def test_client_that_sat_out_rounds_catches_up_with_a_delta_against_its_old_replica():
    # Prepare
    book, store = ReplicaBook(CompressionSpec(bit_width=32, error_feedback=False)), {}
    buffers = {"bn.running_mean": torch.ones(4)}
    _client_receive(book, store, 0, 1, _global(1), buffers)
    book.commit([0])
    # Execute: rounds 2-4 skipped, round 5 received
    payload, state = _client_receive(book, store, 0, 5, _global(5), buffers)
    # Assert: a delta against round 1, and (fp32, dense) the exact round-5 model
    assert payload.base_round == 1
    assert torch.allclose(state["w"], _global(5)["w"], atol=1e-6)
    assert torch.equal(state["bn.running_mean"], torch.ones(4))


def test_delta_that_is_not_sent_now_goes_down_later():
    # Prepare: top-1 of 4 entries per round; the global model stays put after round 1
    spec = CompressionSpec(k=1, bit_width=32, error_feedback=False)
    book, store = ReplicaBook(spec), {}
    params = {"b": torch.zeros(4)}
    template = {"b": torch.zeros(4)}
    book.payload_for(0, 1, params)
    book.commit([0])
    store[0] = ({"b": torch.zeros(4)}, 1)
    target = {"b": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    # Execute: four rounds, one entry each, largest remaining first
    for rnd in range(2, 6):
        payload = book.payload_for(0, rnd, target)
        replica, replica_round = store[0]
        _, new = receive_student(payload, replica, replica_round, template, [])
        store[0] = (new, rnd)
        book.commit([0])
    # Assert
    assert torch.equal(store[0][0]["b"], target["b"])


def test_new_client_gets_the_full_model_at_hand_computed_size():
    # Prepare: one tensor "b" of 4 non-zero fp32 values
    book = ReplicaBook(SPEC)
    params = {"b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    # Execute
    payload = book.payload_for(7, 3, params)
    # Assert: header 18 + record (2+1 name, 1 dtype, 1 ndim, 4 shape, 1 kind,
    # 17 float meta, 8 index length, 16 values) 51 + crc 4 = 73
    assert payload.base_round == FULL_MODEL
    assert payload.num_bytes == 73


def test_rejected_reply_makes_the_server_send_the_full_model_next_time():
    # Prepare
    book = ReplicaBook(SPEC)
    book.payload_for(0, 1, _global(1))
    book.commit([0])
    book.payload_for(0, 2, _global(2))
    # Execute: the round-2 reply was not accepted
    book.commit([])
    # Assert
    assert book.payload_for(0, 3, _global(3)).base_round == FULL_MODEL


def test_delta_against_a_replica_the_client_does_not_hold_is_refused():
    # Prepare
    book = ReplicaBook(SPEC)
    book.payload_for(0, 1, _global(1))
    book.commit([0])
    payload = book.payload_for(0, 4, _global(4))
    # Execute / Assert
    with pytest.raises(ValueError, match="round 1, this client holds round 3"):
        receive_student(payload, _global(1), 3, {"w": torch.zeros(8, 4), "b": torch.zeros(4)}, [])


def test_unchanged_initial_model_goes_down_as_a_delta_the_client_rebuilds_exactly():
    # Prepare: the server's student is still the seeded initial one
    initial = _global(0)
    book = ReplicaBook(SPEC, initial={k: v.clone() for k, v in initial.items()})
    template = {"w": torch.zeros(8, 4), "b": torch.zeros(4)}
    # Execute
    payload = book.payload_for(0, 1, initial)
    state, _ = receive_student(payload, None, 0, template, [], initial=initial)
    # Assert
    assert payload.base_round == INITIAL_MODEL
    assert all(torch.equal(state[k], initial[k]) for k in initial)


def test_delta_against_the_initial_model_without_it_is_refused():
    # Prepare
    initial = _global(0)
    payload = ReplicaBook(SPEC, initial=initial).payload_for(0, 1, initial)
    # Execute / Assert
    with pytest.raises(ValueError, match="against the initial model, which is not given"):
        receive_student(payload, None, 0, {"w": torch.zeros(8, 4), "b": torch.zeros(4)}, [])


def test_changed_model_goes_to_a_new_client_in_full_despite_the_initial_one():
    # Prepare
    book = ReplicaBook(SPEC, initial=_global(0))
    # Execute
    payload = book.payload_for(0, 2, _global(1))
    # Assert
    assert payload.base_round == FULL_MODEL

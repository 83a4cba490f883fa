"""Downlink compression: the global student goes down as a compressed delta per client.

The server keeps, for every client, a *replica*: the exact parameters that client
holds (what it decoded last time it took part). Each round it sends
``compress(global - replica)`` (top-k + few-bit quantization), decodes its own payload
exactly as the client will, and adds it to the replica. Whatever was not sent stays
in ``global - replica`` and goes down the next time: this is server-side error
feedback with one memory per client (DoubleSqueeze, Tang et al. 2019; Artemis,
Philippenko & Dieuleveut 2020), and both sides run the same float32 additions on the
same decoded tensors, so the replicas are equal bit for bit.

Catch-up: a client the server has no replica for (a new client, or one whose last
reply was not accepted, so the server cannot know whether it stored the round) gets
the full parameters in fp32 (``base_round = 0``), unless the global student is still
the seeded initial one (round 1): every client builds that model itself from the
run's seed, so it gets a delta against it (all zeros: a few bytes per tensor,
``base_round = -1``). A client that merely sat out rounds
gets the delta against its replica, however old: the delta is larger, not wrong.
The client checks that its stored replica is of ``base_round`` and refuses otherwise.
Buffers (BatchNorm statistics) always go down dense, as values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from feddistill.compression.update import (
    CompressionSpec,
    compress_update,
    decode_tensors,
    encode_state,
)

FULL_MODEL = 0  # base round of a payload that carries the full parameters
INITIAL_MODEL = -1  # base round of a delta against the seeded initial student


@dataclass
class DownlinkPayload:
    """What one client receives for the student.

    Attributes:
        base_round: the round of the replica the delta is against; 0: full parameters.
        params: encoded parameters (full, fp32) or compressed delta.
        buffers: dense buffer values (:func:`encode_state`), ``b""`` if none.
    """

    base_round: int
    params: bytes
    buffers: bytes = b""

    @property
    def num_bytes(self) -> int:
        """Exact bytes on the wire for the student (params + buffers)."""
        return len(self.params) + len(self.buffers)


def add_delta(replica: Mapping[str, Tensor], delta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``replica + delta`` for float tensors; integer tensors travel as values.

    Both server and client call this on the same decoded tensors, so the result is
    the same bit for bit.
    """
    out: dict[str, Tensor] = {}
    for key, value in replica.items():
        if value.is_floating_point():
            out[key] = value + delta[key].to(value.dtype)
        else:
            out[key] = delta[key].to(value.dtype)
    return out


def _equal(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k]) for k in a)


def _shapes(template: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in template.items()}


@dataclass
class ReplicaBook:
    """The server's view of every client's student parameters.

    Args:
        spec: compression of the delta (bit_width 32 and density 1.0: exact fp32).

    References:
        DoubleSqueeze, Tang et al., arXiv:1905.05957; Artemis, Philippenko &
        Dieuleveut, arXiv:2006.14591.
    """

    spec: CompressionSpec
    initial: dict[str, Tensor] | None = None  # the seeded initial parameters, if known
    replicas: dict[int, tuple[int, dict[str, Tensor]]] = field(default_factory=dict)
    pending: dict[int, tuple[int, dict[str, Tensor]]] = field(default_factory=dict)

    def payload_for(
        self,
        partition_id: int,
        server_round: int,
        params: Mapping[str, Tensor],
        buffers: Mapping[str, Tensor] | None = None,
    ) -> DownlinkPayload:
        """Encode `params` for one client and remember the replica it will hold.

        The replica becomes the client's only when :meth:`commit` sees its reply
        accepted.
        """
        buffer_bytes = encode_state(buffers) if buffers else b""
        known = self.replicas.get(partition_id)
        if known is None and self.initial is not None and _equal(params, self.initial):
            known = (INITIAL_MODEL, self.initial)
        if known is None:
            encoded = encode_state({k: v.detach().cpu() for k, v in params.items()})
            # the replica is what the client decodes (e.g. -0.0 comes back as 0.0)
            full = decode_tensors(encoded, _shapes(params))
            self.pending[partition_id] = (server_round, full)
            return DownlinkPayload(FULL_MODEL, encoded, buffer_bytes)
        base_round, replica = known
        delta = {
            k: (v.detach().cpu().float() - replica[k]) if v.is_floating_point() else v
            for k, v in params.items()
        }
        payload, _ = compress_update(delta, self.spec)  # the replica is the memory
        decoded = decode_tensors(payload, _shapes(replica))
        self.pending[partition_id] = (server_round, add_delta(replica, decoded))
        return DownlinkPayload(base_round, payload, buffer_bytes)

    def commit(self, accepted: Iterable[int]) -> None:
        """Keep the replicas of accepted clients; forget those whose reply was not.

        A client whose reply failed may or may not have stored the round's model, so
        the server forgets its replica and sends it the full model next time.
        """
        ok = set(accepted)
        for pid, entry in self.pending.items():
            if pid in ok:
                self.replicas[pid] = entry
            else:
                self.replicas.pop(pid, None)
        self.pending = {}

    def state(self) -> dict[int, tuple[int, dict[str, Tensor]]]:
        """For the checkpoint."""
        return dict(self.replicas)


def receive_student(
    payload: DownlinkPayload,
    replica: Mapping[str, Tensor] | None,
    replica_round: int,
    template: Mapping[str, Tensor],
    buffer_keys: Iterable[str],
    initial: Mapping[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The client side: rebuild the global student from its replica and the payload.

    Args:
        payload: what the server sent.
        replica: the parameters the client stored (None if it has none).
        replica_round: the round that replica is of (0 if none).
        template: the student's state_dict (names, shapes) to check the payload with.
        buffer_keys: names of the buffers in `template`.
        initial: the seeded initial student's state_dict, needed for a payload of
            ``base_round = -1`` (None: such a payload is refused).

    Returns:
        (full state_dict to train from, new replica parameters to store).

    Raises:
        ValueError: if the payload is a delta against a replica round the client does
            not hold (both rounds named), or does not decode to the student's shapes.
    """
    buffers = set(buffer_keys)
    param_shapes = {k: tuple(v.shape) for k, v in template.items() if k not in buffers}
    buffer_shapes = {k: tuple(v.shape) for k, v in template.items() if k in buffers}
    decoded = decode_tensors(payload.params, param_shapes)
    if payload.base_round == FULL_MODEL:
        params = decoded
    elif payload.base_round == INITIAL_MODEL:
        if initial is None:
            raise ValueError("downlink delta is against the initial model, which is not given")
        params = add_delta({k: initial[k] for k in param_shapes}, decoded)
    else:
        if replica is None or replica_round != payload.base_round:
            raise ValueError(
                f"downlink delta is against the replica of round {payload.base_round}, "
                f"this client holds round {replica_round}; the server must send the full model"
            )
        params = add_delta(replica, decoded)
    state = dict(params)
    if buffer_shapes:
        state.update(decode_tensors(payload.buffers, buffer_shapes))
    full = {k: state[k].to(template[k].dtype) for k in template}
    return full, {k: torch.as_tensor(v) for k, v in params.items()}

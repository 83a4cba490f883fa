"""Issue 8, section 1: buffers (BatchNorm statistics) are state, not updates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from torch import nn

from feddistill import protocol as P
from feddistill.clients.round import encode_student
from feddistill.compression import CompressionSpec, encode_state
from feddistill.compression.codec import encode_raw, pack_payload
from feddistill.compression.teacher_upload import TeacherUpload
from feddistill.config import RunConfig
from feddistill.models import buffer_names
from feddistill.server.aggregate import apply_update
from feddistill.server.strategy import FedDistill

PROXY, CLASSES = 6, 3


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: intra-op threads only contend for the shared CPUs (100x slower).
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


class BNNet(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear: a small model with BN buffers.

    The 64 features have scales from 0.01 to 3 (like a real network's channels), so
    their running variances span ~5 orders of magnitude: one quantization step of the
    large ones exceeds the small ones, which is how compressed buffers went negative.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 64)
        self.bn = nn.BatchNorm1d(64)
        self.fc2 = nn.Linear(64, CLASSES)
        with torch.no_grad():
            self.fc1.weight.mul_(torch.logspace(-2, 0.5, 64)[:, None])
            self.fc1.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def make_model() -> BNNet:
    torch.manual_seed(0)
    return BNNet()


def message(node: int, partition: int, update: bytes, buffers: bytes, n: int = 10) -> Message:
    request = Message(RecordDict({P.CONFIG: ConfigRecord({"x": 1})}), node, MessageType.TRAIN)
    logits = TeacherUpload(torch.zeros(PROXY, CLASSES), torch.zeros(PROXY)).encode(32)
    content = RecordDict(
        {
            P.METRICS: MetricRecord(
                {
                    P.NUM_EXAMPLES: n,
                    P.PARTITION_ID: partition,
                    # consensus = "coverage": all n examples of class 0
                    **P.class_count_metrics([0] * n, CLASSES),
                }
            ),
            P.PAYLOAD: ConfigRecord({P.UPDATE: update, P.LOGITS: logits, P.BUFFERS: buffers}),
        }
    )
    return Message(content, reply_to=request)


def server(model: nn.Module, cfg: RunConfig) -> FedDistill:
    template = {k: v.clone() for k, v in model.state_dict().items()}
    return FedDistill(
        template,
        P.plan_for(cfg),
        temperature=2.0,
        seed=0,
        buffer_keys=buffer_names(model),
        num_classes=CLASSES,
        proxy_size=PROXY,
    )


def spec_of(cfg: RunConfig) -> CompressionSpec:
    plan = P.plan_for(cfg)
    return CompressionSpec(
        density=plan.density, bit_width=plan.bit_width, error_feedback=plan.error_feedback
    )


def test_buffer_names_are_the_batchnorm_statistics() -> None:
    # Execute / Assert
    assert buffer_names(make_model()) == {
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    }


def test_running_mean_0_and_10_average_to_5_everywhere_under_default_compression() -> None:
    # Prepare: default feddistill compression (density 0.05, 4 bits, error feedback);
    # client A's running_mean is all 0.0, B's all 10.0, equal num-examples.
    cfg = RunConfig()
    global_model = make_model()
    global_state = {k: v.clone() for k, v in global_model.state_dict().items()}
    replies = []
    for node, value in ((1, 0.0), (2, 10.0)):
        client = make_model()
        client.bn.running_mean.fill_(value)
        update, buffers, _ = encode_student(client, global_state, spec_of(cfg), None)
        replies.append(message(node, node - 1, update, buffers))

    # Execute
    outcome = server(global_model, cfg).aggregate_round(1, replies)
    new_state = apply_update(global_state, outcome.update or {}, outcome.buffers)

    # Assert: (0 + 10) / 2 in all 64 entries (was ~5% of them).
    assert outcome.failures == []
    assert torch.equal(new_state["bn.running_mean"], torch.full((64,), 5.0))
    assert new_state["bn.num_batches_tracked"].dtype == torch.int64


def test_negative_running_var_is_a_failed_client_with_the_reason() -> None:
    # Prepare
    cfg = RunConfig()
    model = make_model()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    good_update, good_buffers, _ = encode_student(model, global_state, spec_of(cfg), None)
    bad = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("bn.running")}
    bad["bn.running_var"][3] = -0.5
    bad["bn.num_batches_tracked"] = torch.tensor(0)

    # Execute
    outcome = server(model, cfg).aggregate_round(
        1,
        [message(1, 0, good_update, good_buffers), message(2, 1, good_update, encode_state(bad))],
    )

    # Assert
    assert [r.partition_id for r in outcome.accepted] == [0]
    assert len(outcome.failures) == 1
    assert "buffer 'bn.running_var' has a negative entry (-0.5)" in outcome.failures[0]


def test_non_finite_running_mean_is_a_failed_client() -> None:
    # Prepare: encode_state refuses NaN, so a hostile client's bytes are built raw.
    cfg = RunConfig()
    model = make_model()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    update, _, _ = encode_student(model, global_state, spec_of(cfg), None)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if k in buffer_names(model)}
    buffers["bn.running_mean"] = buffers["bn.running_mean"].to(torch.float64)  # raw record
    buffers["bn.running_mean"][0] = float("inf")
    raw = pack_payload(encode_raw(k, v) for k, v in buffers.items())

    # Execute
    outcome = server(model, cfg).aggregate_round(1, [message(1, 0, update, raw)])

    # Assert
    assert outcome.accepted == []
    assert "buffer 'bn.running_mean' contains NaN or Inf" in outcome.failures[0]


def test_missing_buffers_payload_is_a_failed_client() -> None:
    # Prepare
    cfg = RunConfig()
    model = make_model()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    update, _, _ = encode_student(model, global_state, spec_of(cfg), None)
    msg = message(1, 0, update, b"")
    del msg.content[P.PAYLOAD][P.BUFFERS]

    # Execute
    outcome = server(model, cfg).aggregate_round(1, [msg])

    # Assert
    assert outcome.accepted == []
    assert "malformed reply" in outcome.failures[0] and "buffers" in outcome.failures[0]


def _client_data(partition: int, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Input scale 3 or 0.3, alternating between clients and rounds: the BatchNorm
    # statistics move by large steps of both signs.
    gen = torch.Generator().manual_seed(100 * partition + server_round)
    x = torch.randn(64, 4, generator=gen) * (3.0 if (server_round + partition) % 2 else 0.3)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


@pytest.mark.parametrize(
    ("strategy", "bit_width"),
    [("feddistill", b) for b in (1, 2, 4, 8, 16, 32)]
    + [("fedmd", 4), ("fedavg", 32), ("fedavg-compressed", 1), ("feddf", 32)],
)
def test_batchnorm_student_keeps_running_var_non_negative_and_loss_finite(
    strategy: str, bit_width: int
) -> None:
    # Prepare: 2 clients train a BN student for 6 compressed rounds (density 0.05).
    # Sent as compressed updates (before issue 8) running_var reached -0.025 and the
    # loss NaN here for every compressed setting but 1 bit.
    cfg = RunConfig(strategy=strategy, update_bit_width=bit_width, update_density=0.05)
    spec = spec_of(cfg)
    global_model = make_model()
    strategy_ = server(global_model, cfg)
    residuals: dict[int, dict[str, torch.Tensor]] = {0: {}, 1: {}}
    x_test, y_test = _client_data(0, 0)
    losses, min_var = [], []

    # Execute
    for server_round in range(1, 7):
        global_state = {k: v.clone() for k, v in global_model.state_dict().items()}
        replies = []
        for partition in (0, 1):
            client = make_model()
            client.load_state_dict(global_state)
            opt = torch.optim.SGD(client.parameters(), lr=0.01, momentum=0.9)
            x, y = _client_data(partition, server_round)
            client.train()
            for start in range(0, 64, 16):
                opt.zero_grad()
                F.cross_entropy(client(x[start : start + 16]), y[start : start + 16]).backward()
                opt.step()
            update, buffers, residuals[partition] = encode_student(
                client, global_state, spec, residuals[partition]
            )
            replies.append(message(partition + 1, partition, update, buffers))
        outcome = strategy_.aggregate_round(server_round, replies)
        assert outcome.failures == [] and outcome.update is not None
        global_model.load_state_dict(apply_update(global_state, outcome.update, outcome.buffers))
        global_model.eval()
        with torch.no_grad():
            losses.append(F.cross_entropy(global_model(x_test), y_test).item())
        min_var.append(global_model.bn.running_var.min().item())

    # Assert
    assert all(v >= 0.0 for v in min_var), min_var
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert int(global_model.bn.num_batches_tracked) == 6 * 4

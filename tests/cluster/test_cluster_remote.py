"""Server-side work on a GPU node: the local path and the Ray-task path."""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn

from feddistill.learn import SGDSpec
from feddistill.server.remote import distill_on_gpu_node, run_on_gpu_node, should_run_remote


def _pid_plus(x: int) -> tuple[int, int]:
    return os.getpid(), x + 1


def _niceness() -> int:
    return os.nice(0)


def test_without_ray_runs_here():
    # Execute
    pid, value = run_on_gpu_node(_pid_plus, 41, num_gpus=0)
    # Assert
    assert (pid, value) == (os.getpid(), 42)
    assert not should_run_remote(0)


def test_without_a_gpu_in_the_cluster_runs_here(local_ray, monkeypatch):
    # Prepare: a cluster without GPUs
    monkeypatch.setattr(local_ray, "cluster_resources", lambda: {"CPU": 2.0})
    # Execute: a GPU is asked for but the cluster has none: no task, no hang
    pid, value = run_on_gpu_node(_pid_plus, 1, num_gpus=1)
    # Assert
    assert (pid, value) == (os.getpid(), 2)


def test_ray_workers_run_at_the_suites_priority(local_ray):
    # Execute: Ray's default would be nice 15 (see tests/conftest.py)
    niceness = local_ray.get(local_ray.remote(num_cpus=0)(_niceness).remote(), timeout=120)
    # Assert: the worker runs at this process's priority, so the parallel pytest worker
    # cannot starve it
    assert niceness == os.nice(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this process has a GPU: stays local")
def test_gpu_task_runs_on_the_gpu_node(local_ray):
    # Execute: the test cluster declares 1 GPU and this process has no CUDA
    pid, value = run_on_gpu_node(_pid_plus, 1, num_gpus=1, timeout_s=120)
    # Assert
    assert value == 2
    assert pid != os.getpid()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this process has a GPU: stays local")
def test_gpus_held_by_client_actors_keep_the_work_here(local_ray, caplog):
    # Prepare: an actor holds the cluster's only GPU, as Flower's client actors do
    @local_ray.remote(num_gpus=1, num_cpus=0)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    local_ray.get(holder.ready.remote(), timeout=120)
    # Ray's resource view lags the actor start under load: wait (bounded) until it shows
    deadline = time.monotonic() + 60
    while local_ray.available_resources().get("GPU", 0.0) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        # Execute
        pid, value = run_on_gpu_node(_pid_plus, 1, num_gpus=0.5, timeout_s=120)
    finally:
        local_ray.kill(holder)
    # Assert: no task waiting for ever; it ran here, with a warning that says why
    assert (pid, value) == (os.getpid(), 2)
    assert "only 0.0 of the cluster's 1.0 GPUs are free" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this process has a GPU: stays local")
def test_with_ray_runs_as_a_task_elsewhere(local_ray):
    # Execute: num_gpus=0 makes the CPU-only test cluster eligible
    pid, value = run_on_gpu_node(_pid_plus, 1, num_gpus=0, timeout_s=120)
    # Assert: the function ran in a Ray worker process
    assert value == 2
    assert pid != os.getpid()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this process has a GPU: stays local")
def test_remote_distill_updates_the_model_like_local(local_ray):
    # Prepare: the same model and targets for both paths
    torch.manual_seed(0)
    proxy_x = torch.randn(16, 1, 4, 4)
    soft = torch.softmax(torch.randn(16, 3), dim=1)
    local = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    remote = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    remote.load_state_dict(local.state_dict())
    kw = {"temperature": 2.0, "sgd": SGDSpec(0.01, batch_size=8, epochs=2, optimizer="adam")}
    # Execute
    from feddistill.learn import distill_on_proxy

    loss_local = distill_on_proxy(local, proxy_x, soft, device="cpu", **kw)
    loss_remote = distill_on_gpu_node(remote, proxy_x, soft, num_gpus=0, device="cpu", **kw)
    # Assert: CPU training is deterministic, so both paths agree
    assert loss_remote == pytest.approx(loss_local, rel=1e-5)
    for key, value in local.state_dict().items():
        torch.testing.assert_close(remote.state_dict()[key], value)
    assert not remote.training


def test_distill_without_ray_is_distill_on_proxy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    loss = distill_on_gpu_node(
        model,
        torch.randn(8, 1, 4, 4),
        torch.full((8, 3), 1 / 3),
        temperature=1.0,
        sgd=SGDSpec(0.01, optimizer="adam"),
    )
    assert loss >= 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_gpus": -1}, "num_gpus must be >= 0, got -1"),
        ({"num_cpus": -0.5}, "num_cpus must be >= 0, got -0.5"),
        ({"timeout_s": 0}, "timeout_s must be > 0 or None, got 0"),
    ],
)
def test_rejects_bad_resources(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_on_gpu_node(_pid_plus, 1, **kwargs)


def test_remote_distillation_task_resolves_its_device_with_the_configs_determinism(
    monkeypatch,
):
    # Prepare: record how the task body resolves its device (a GPU node would say cuda)
    from feddistill.learn import specs
    from feddistill.server import remote

    asked: list[tuple[str, bool]] = []

    def fake_resolve(name: str, deterministic: bool = True) -> torch.device:
        asked.append((name, deterministic))
        return torch.device("cpu")

    monkeypatch.setattr(specs, "resolve_device", fake_resolve)
    model = nn.Linear(4, 3)
    sgd = SGDSpec(0.1, batch_size=4, epochs=1, seed=0)
    x, soft = torch.randn(8, 4), torch.full((8, 3), 1 / 3)
    # Execute
    state, loss = remote._distill_task(model, x, soft, {"temperature": 2.0, "sgd": sgd}, False)
    # Assert
    assert asked == [("auto", False)]
    assert set(state) == {"weight", "bias"} and loss >= 0.0


def test_distill_on_gpu_node_hands_deterministic_to_the_task(monkeypatch):
    # Prepare: force the remote path and capture what would be sent to Ray
    from feddistill.server import remote

    sent: list[tuple] = []

    def fake_run(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(args)
        return {k: v.clone() for k, v in args[0].state_dict().items()}, 0.5

    monkeypatch.setattr(remote, "should_run_remote", lambda num_gpus: True)
    monkeypatch.setattr(remote, "run_on_gpu_node", fake_run)
    model = nn.Linear(4, 3)
    sgd = SGDSpec(0.1, batch_size=4, epochs=1, seed=0)
    # Execute
    loss = distill_on_gpu_node(
        model,
        torch.randn(8, 4),
        torch.full((8, 3), 1 / 3),
        num_gpus=0.1,
        deterministic=False,
        temperature=2.0,
        sgd=sgd,
    )
    # Assert: (model, proxy_x, soft_labels, kwargs, deterministic)
    (args,) = sent
    assert args[4] is False and "deterministic" not in args[3]
    assert loss == 0.5

"""Resource planner: GPU fractions, concurrency and over-packing warnings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from feddistill.cluster.planner import (
    CUDA_CONTEXT_BYTES,
    WORKSPACE_FACTOR,
    ResourcePlan,
    plan_resources,
    training_memory_bytes,
)

GB = 10**9


def test_fraction_and_concurrency_from_memory():
    # Prepare: 2 GPUs of 80 GB, 10 GB per client -> 8 clients per GPU
    # Execute
    plan = plan_resources(
        cluster_cpus=64,
        cluster_gpus=2,
        gpu_memory_bytes=80 * GB,
        per_client_bytes=10 * GB,
        num_clients=20,
    )
    # Assert: fraction 1/8, 2 GPUs x 8 = 16 concurrent of 20
    assert plan.client_num_gpus == 0.125
    assert plan.clients_per_gpu == 8
    assert plan.concurrency == 16
    assert plan.warnings == []


def test_requested_fraction_that_over_packs_warns():
    # Execute: 0.05 -> 20 clients x 10 GB = 200 GB on an 80 GB GPU
    plan = plan_resources(64, 2, 80 * GB, 10 * GB, num_clients=20, requested_num_gpus=0.05)
    # Assert
    assert plan.client_num_gpus == 0.05
    assert plan.clients_per_gpu == 20
    assert plan.concurrency == 20
    assert len(plan.warnings) == 1
    assert "200 GB" in plan.warnings[0] and "80 GB" in plan.warnings[0]
    assert "0.125" in plan.warnings[0]


def test_requested_fraction_that_fits_does_not_warn():
    plan = plan_resources(64, 2, 80 * GB, 10 * GB, num_clients=20, requested_num_gpus=0.25)
    assert plan.clients_per_gpu == 4
    assert plan.concurrency == 8
    assert plan.warnings == []


def test_cpus_limit_concurrency_and_warn():
    # Prepare: 4 CPUs, 2 per client -> 2 CPU slots, while the GPUs offer 16
    plan = plan_resources(4, 2, 80 * GB, 10 * GB, num_clients=20, client_num_cpus=2)
    assert plan.concurrency == 2
    assert any("CPUs limit concurrency to 2" in w for w in plan.warnings)


def test_client_bigger_than_a_gpu_gets_a_whole_gpu_and_a_warning():
    plan = plan_resources(8, 1, 8 * GB, 10 * GB, num_clients=4)
    assert plan.client_num_gpus == 1.0
    assert plan.concurrency == 1
    assert any("out of GPU memory" in w for w in plan.warnings)


def test_cpu_only_cluster_plans_cpu_slots():
    plan = plan_resources(3, 0, 0, 10 * GB, num_clients=4)
    assert plan == ResourcePlan(1, 0.0, 3, 0, [])
    assert plan.federation_config() == ("client-resources-num-cpus=1 client-resources-num-gpus=0.0")


def test_gpus_requested_on_cpu_only_cluster_warns():
    plan = plan_resources(3, 0, 0, 10 * GB, num_clients=4, requested_num_gpus=0.5)
    assert plan.concurrency == 0
    assert any("no GPU" in w for w in plan.warnings)


def test_more_cpus_per_client_than_cluster_warns():
    plan = plan_resources(2, 0, 0, GB, num_clients=4, client_num_cpus=4)
    assert plan.concurrency == 0
    assert any("exceeds the cluster's 2 CPUs" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster_cpus": 0}, "cluster_cpus must be >= 1, got 0"),
        ({"cluster_gpus": -1}, "cluster_gpus must be >= 0, got -1"),
        ({"num_clients": 0}, "num_clients must be >= 1, got 0"),
        ({"client_num_cpus": 0}, "client_num_cpus must be >= 1, got 0"),
        ({"per_client_bytes": 0}, "per_client_bytes must be >= 1, got 0"),
        ({"server_bytes": -1}, "server_bytes must be >= 0, got -1"),
        ({"gpu_memory_bytes": 0}, "gpu_memory_bytes must be > 0 with GPUs, got 0"),
        ({"requested_num_gpus": 0.0}, r"requested_num_gpus must be in \(0, 1\], got 0.0"),
        ({"requested_num_gpus": 1.5}, r"requested_num_gpus must be in \(0, 1\], got 1.5"),
    ],
)
def test_plan_rejects_out_of_range(kwargs, message):
    args = {
        "cluster_cpus": 8,
        "cluster_gpus": 1,
        "gpu_memory_bytes": 80 * GB,
        "per_client_bytes": GB,
        "num_clients": 4,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        plan_resources(**args)


def test_server_memory_is_kept_free_on_each_gpu():
    # Prepare: 8 GB GPU, 1 GB per client, the server's work holds 2 GB
    # Execute
    plan = plan_resources(16, 1, 8 * GB, GB, num_clients=16, server_bytes=2 * GB)
    # Assert: (8 - 2) // 1 = 6 clients per GPU -> fraction 1/6, 6 at once
    assert plan.clients_per_gpu == 6
    assert plan.client_num_gpus == 1 / 6
    assert plan.concurrency == 6
    assert plan.warnings == []


def test_requested_fraction_that_over_packs_beside_the_server_warns():
    # Execute: 0.125 -> 8 clients x 1 GB = 8 GB, but only 8 - 2 = 6 GB are free
    plan = plan_resources(
        16, 1, 8 * GB, GB, num_clients=16, requested_num_gpus=0.125, server_bytes=2 * GB
    )
    # Assert
    (warning,) = plan.warnings
    assert "packs 8 clients x 1 GB = 8 GB onto a 8 GB GPU beside the server's 2 GB" in warning
    assert "use num-gpus >= 0.1667" in warning


def test_over_packing_counts_only_the_clients_that_exist():
    # Prepare: the regression guarded: 0.01 "packed 100 clients" when there were 4
    # Execute: 4 clients x 1 GB + the server's 1 GB fit an 8 GB GPU at any fraction
    plan = plan_resources(
        16, 1, 8 * GB, GB, num_clients=4, requested_num_gpus=0.01, server_bytes=GB
    )
    # Assert
    assert plan.warnings == []
    assert plan.concurrency == 4


def test_a_server_bigger_than_the_gpu_is_named_in_a_warning():
    # Execute: the server's work needs 1 GB on a 0.5 GB GPU
    plan = plan_resources(16, 1, GB // 2, GB, num_clients=4, server_bytes=GB)
    # Assert
    assert any(
        "the server's work alone needs 1 GB but a GPU has 0.5 GB" in w for w in plan.warnings
    )


def test_training_memory_estimate_by_hand():
    # Prepare: Linear(4 -> 2): 10 fp32 params = 40 B; batch 3 -> output (3, 2) = 24 B
    model = nn.Sequential(nn.Linear(4, 2))
    # Execute
    got = training_memory_bytes(model, (4,), batch_size=3, optimizer="sgd-momentum")
    # Assert: ((2 + 1) * 40 + 2 * 24) * 1.2 = 201.6 -> 202, plus the CUDA context
    assert got == int(-(-((3 * 40 + 2 * 24) * WORKSPACE_FACTOR) // 1)) + CUDA_CONTEXT_BYTES
    assert got == 202 + CUDA_CONTEXT_BYTES


def test_training_memory_counts_optimizer_states():
    model = nn.Linear(4, 2)
    sgd = training_memory_bytes(model, (4,), 1, optimizer="sgd")
    adam = training_memory_bytes(model, (4,), 1, optimizer="adam")
    # Adam keeps 2 more states of 40 B each than plain SGD: 80 B * 1.2 = 96 B
    assert adam - sgd == 96


def test_training_memory_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    training_memory_bytes(model, (4,), 2)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"optimizer": "lion"}, "optimizer must be one of .* got 'lion'"),
    ],
)
def test_training_memory_rejects_bad_arguments(kwargs, message):
    args = {"batch_size": 1, "optimizer": "sgd"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        training_memory_bytes(nn.Linear(4, 2), (4,), **args)

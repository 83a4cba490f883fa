"""Tests of feddistill.data.client_data: the server's client-data.npz and its readers."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from feddistill.data import DataSpec, prepare_federated_data
from feddistill.data.client_data import (
    ClientData,
    encode_client_data,
    load_client_data,
    read_client_data,
    read_federated_data,
    write_client_data,
)

SPEC = DataSpec(dataset="digits", partitioner="iid", num_partitions=4, min_partition_size=1)
SPACE = (np.array([0.5, 0.5]), np.array([[1.0, 0.0]]))  # mean (F=2,), components (d=1, F=2)


def test_read_client_data_returns_what_was_written(tmp_path: Path) -> None:
    # Prepare: partitions of sizes 2, 0 and 1 -> offsets 0, 2, 2, 3
    partitions = [np.array([4, 7]), np.array([], dtype=np.int64), np.array([1])]
    write_client_data(tmp_path / "c.npz", SPEC, partitions, SPACE)

    # Execute
    stored = read_client_data(tmp_path / "c.npz", SPEC)

    # Assert
    assert stored is not None
    got, (mean, components) = stored
    assert [p.tolist() for p in got] == [[4, 7], [], [1]]
    np.testing.assert_array_equal(mean, SPACE[0])
    np.testing.assert_array_equal(components, SPACE[1])


def test_read_client_data_ignores_a_file_of_another_data_spec(tmp_path: Path) -> None:
    # Prepare: written for seed 0, read for seed 1 (a stale file must not be used)
    write_client_data(tmp_path / "c.npz", SPEC, [np.array([0])], SPACE)

    # Execute
    stored = read_client_data(tmp_path / "c.npz", dataclasses.replace(SPEC, seed=1))

    # Assert
    assert stored is None


def test_read_client_data_without_file_is_none(tmp_path: Path) -> None:
    assert read_client_data(tmp_path / "missing.npz", SPEC) is None


def test_load_client_data_from_file_equals_computed_data(tmp_path: Path) -> None:
    # Prepare: the server's data written as the ServerApp does
    data = prepare_federated_data(SPEC)
    write_client_data(tmp_path / "c.npz", SPEC, data.partitions, SPACE)

    # Execute
    client = load_client_data(SPEC, str(tmp_path / "c.npz"))

    # Assert: the same partitions and splits, and the server's feature space
    assert [p.tolist() for p in client.partitions] == [p.tolist() for p in data.partitions]
    torch.testing.assert_close(client.splits.train_x, data.splits.train_x)
    torch.testing.assert_close(client.splits.proxy_x, data.splits.proxy_x)
    assert client.feature_space is not None
    np.testing.assert_array_equal(client.feature_space[1], SPACE[1])


def test_client_data_of_federated_data_keeps_splits_and_partitions() -> None:
    # Prepare
    data = prepare_federated_data(SPEC)

    # Execute
    client = ClientData.of(data)

    # Assert: no feature space (the client fits it)
    assert client.splits is data.splits
    assert client.partitions is data.partitions
    assert client.feature_space is None


def test_client_round_with_server_file_imports_no_partitioner_libraries(tmp_path: Path) -> None:
    # Prepare: what a Ray client actor runs: the ClientApp module, then its data
    # (mnist5k: digits itself loads through scikit-learn)
    spec = dataclasses.replace(SPEC, dataset="mnist5k")
    write_client_data(tmp_path / "c.npz", spec, prepare_federated_data(spec).partitions, SPACE)
    code = (
        "import sys\n"
        "import feddistill.clients.app\n"
        "from feddistill.data import DataSpec, load_client_data\n"
        f"spec = DataSpec(**{dataclasses.asdict(spec)!r})\n"
        f"assert load_client_data(spec, {str(tmp_path / 'c.npz')!r}).feature_space is not None\n"
        "heavy = ('sklearn', 'scipy', 'datasets', 'flwr_datasets', 'pandas', 'pyarrow')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )

    # Execute
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )

    # Assert
    assert out.stdout.strip() == "[]"


def _assert_same_federated_data(got, want) -> None:
    assert [p.tolist() for p in got.partitions] == [p.tolist() for p in want.partitions]
    np.testing.assert_array_equal(got.test_domains, want.test_domains)
    assert got.partition_domains == want.partition_domains
    assert got.num_domains == want.num_domains
    for name in ("mean", "components", "centroids", "fit_sizes"):
        np.testing.assert_array_equal(
            getattr(got.domain_model, name), getattr(want.domain_model, name)
        )
    torch.testing.assert_close(got.splits.test_x, want.splits.test_x)
    assert got.target_domains == want.target_domains == ()


def test_read_federated_data_equals_the_computed_data(tmp_path: Path) -> None:
    # Prepare: a file written with the domains, as `feddistill run`'s check child does
    data = prepare_federated_data(SPEC)
    write_client_data(tmp_path / "c.npz", SPEC, data.partitions, SPACE, domains=data)

    # Execute
    got = read_federated_data(tmp_path / "c.npz", SPEC)

    # Assert: the same data, and the domain model predicts as the fitted one
    assert got is not None
    _assert_same_federated_data(got, data)
    np.testing.assert_array_equal(
        got.domain_model.predict(got.splits.proxy_x), data.domain_model.predict(data.splits.proxy_x)
    )


def test_read_federated_data_needs_the_domains_and_the_same_spec(tmp_path: Path) -> None:
    # Prepare: a clients-only file, and a whole one read for another seed
    data = prepare_federated_data(SPEC)
    write_client_data(tmp_path / "clients.npz", SPEC, data.partitions, SPACE)
    write_client_data(tmp_path / "whole.npz", SPEC, data.partitions, SPACE, domains=data)

    # Execute / Assert: both are refused (the server then computes its data)
    assert read_federated_data(tmp_path / "clients.npz", SPEC) is None
    assert read_federated_data(tmp_path / "whole.npz", dataclasses.replace(SPEC, seed=1)) is None
    assert read_federated_data(tmp_path / "missing.npz", SPEC) is None


def test_read_federated_data_refuses_indices_outside_the_training_split(tmp_path: Path) -> None:
    # Prepare: a whole file whose partition points past the training split
    data = prepare_federated_data(SPEC)
    bad = [*data.partitions[:-1], np.array([len(data.splits.train_y)])]
    write_client_data(
        tmp_path / "c.npz", SPEC, bad, SPACE, domains=dataclasses.replace(data, partitions=bad)
    )

    # Execute / Assert
    assert read_federated_data(tmp_path / "c.npz", SPEC) is None


def test_encode_client_data_refuses_domains_of_other_partitions() -> None:
    data = prepare_federated_data(SPEC)
    with pytest.raises(ValueError, match="partitions differ"):
        encode_client_data(SPEC, data.partitions[::-1], SPACE, domains=data)


def test_read_federated_data_refuses_domain_ids_outside_the_domains(tmp_path: Path) -> None:
    # Prepare: a partition said to be in domain K (there are K domains: 0..K-1)
    data = prepare_federated_data(SPEC)
    bad = dataclasses.replace(
        data, partition_domains=[*data.partition_domains[:-1], data.num_domains]
    )
    write_client_data(tmp_path / "c.npz", SPEC, data.partitions, SPACE, domains=bad)

    # Execute / Assert
    assert read_federated_data(tmp_path / "c.npz", SPEC) is None


def test_encode_client_data_refuses_domains_without_a_domain_model() -> None:
    # named domains have no fitted domain model: nothing to store for the server
    data = dataclasses.replace(prepare_federated_data(SPEC), domain_model=None)
    with pytest.raises(ValueError, match="domains must have a domain_model"):
        encode_client_data(SPEC, data.partitions, SPACE, domains=data)


def test_read_federated_data_refuses_mis_shaped_domain_arrays(tmp_path: Path) -> None:
    # Prepare: centroids whose width is not the feature space's P
    data = prepare_federated_data(SPEC)
    model = data.domain_model
    bad_model = type(model)(model.mean, model.components, model.centroids[:, :1], model.fit_sizes)
    bad = dataclasses.replace(data, domain_model=bad_model)
    write_client_data(tmp_path / "c.npz", SPEC, data.partitions, SPACE, domains=bad)

    # Execute / Assert
    assert read_federated_data(tmp_path / "c.npz", SPEC) is None


def _damaged(path: Path, how: str) -> None:
    """`path` cut in half, emptied, or with bytes flipped inside its last array."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # one member's bytes changed: the zip's CRC check fails when it is read
        name = b"feature_components.npy"
        at = data.index(name) + len(name) + 200  # inside that member's data
        path.write_bytes(data[:at] + bytes(b ^ 0xFF for b in data[at : at + 16]) + data[at + 16 :])


@pytest.mark.parametrize("how", ["truncated", "empty", "crc"])
def test_damaged_file_is_not_used_by_either_reader(tmp_path: Path, how: str) -> None:
    # Prepare: a whole file (as `feddistill run` writes it), then damaged; the readers'
    # rule is "unreadable gives None, the caller computes" (a user's resume after a
    # disk-full or a copy cut short: issue 13's fresh-user pass)
    data = prepare_federated_data(SPEC)
    space = (np.zeros(64), np.ones((40, 64)))  # big enough that the damage lands inside
    write_client_data(tmp_path / "c.npz", SPEC, data.partitions, space, domains=data)
    assert read_client_data(tmp_path / "c.npz", SPEC) is not None
    _damaged(tmp_path / "c.npz", how)

    # Execute / Assert
    assert read_client_data(tmp_path / "c.npz", SPEC) is None
    if how != "crc":  # the server reads no feature-space array
        assert read_federated_data(tmp_path / "c.npz", SPEC) is None


def test_partitions_that_do_not_fit_the_offsets_are_refused(tmp_path: Path) -> None:
    # Prepare: offsets going backwards (partition 1 would be empty, 2 overlap 0)
    path = tmp_path / "c.npz"
    write_client_data(path, SPEC, [np.array([4, 7]), np.array([1])], SPACE)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["offsets"] = np.array([0, 2, 1, 3])
    np.savez(path, **arrays)

    # Execute / Assert
    assert read_client_data(path, SPEC) is None


def test_client_data_of_another_partition_count_is_computed_instead(tmp_path: Path) -> None:
    # Prepare: a readable file for this spec holding 3 partitions where the spec has 4
    data = prepare_federated_data(SPEC)
    write_client_data(tmp_path / "c.npz", SPEC, data.partitions[:3], SPACE)
    load_client_data.cache_clear()

    # Execute
    got = load_client_data(SPEC, str(tmp_path / "c.npz"))

    # Assert: the computed partitions and feature space, not the file's
    assert [p.tolist() for p in got.partitions] == [p.tolist() for p in data.partitions]
    assert got.feature_space is None  # the client fits it, as without a file


def test_client_data_pointing_outside_the_training_split_is_computed_instead(
    tmp_path: Path,
) -> None:
    # Prepare: this spec's 4 partitions, the last one pointing one past the training split
    data = prepare_federated_data(SPEC)
    bad = [*data.partitions[:-1], np.array([len(data.splits.train_y)])]
    write_client_data(tmp_path / "c.npz", SPEC, bad, SPACE)
    load_client_data.cache_clear()

    # Execute
    got = load_client_data(SPEC, str(tmp_path / "c.npz"))

    # Assert: the computed partitions, not the file's
    assert [p.tolist() for p in got.partitions] == [p.tolist() for p in data.partitions]
    assert got.feature_space is None

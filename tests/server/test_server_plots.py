"""Run descriptions and which plots a run gets."""

from __future__ import annotations

from feddistill.config import RunConfig
from feddistill.server.plots import describe_run, plot_run


def test_description_of_the_default_run():
    # Execute
    text = describe_run(RunConfig().to_kebab())
    # Assert
    assert text == (
        "mnist5k, 4 clients (kmeans), teachers cnn -> student cnn-small, "
        "update top-5% 4-bit, logits 4-bit, seed 0"
    )


def test_description_of_a_dirichlet_fedavg_run_names_alpha_and_no_compression():
    # Prepare
    config = RunConfig(strategy="fedavg", partitioner="dirichlet", num_partitions=20).to_kebab()
    # Execute / Assert
    assert describe_run(config) == (
        "mnist5k, 20 clients (dirichlet, alpha=0.5), model cnn-small, seed 0"
    )


def test_a_run_that_sends_nothing_gets_the_accuracy_plot_only(tmp_path):
    # Prepare: the centralized baseline's rows (no bytes)
    rows = [
        {"round": 1, "accuracy": 0.5, "worst_domain_accuracy": 0.4, "domain_0_accuracy": 0.4},
        {"round": 2, "accuracy": 0.6, "worst_domain_accuracy": 0.5, "domain_0_accuracy": 0.5},
    ]
    summary = {"strategy": "centralized", "config": RunConfig(strategy="centralized").to_kebab()}
    # Execute
    paths = plot_run(tmp_path, rows, summary)
    # Assert
    assert [p.name for p in paths] == ["accuracy_vs_round.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy_vs_round.png"]

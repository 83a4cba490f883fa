"""Tests of feddistill.learn's training loop and evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from feddistill.learn import SGDSpec, evaluate, train_supervised

CPU = torch.device("cpu")


class Fixed(nn.Module):
    """Predicts the class stored in the first pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), 2).float() * 10


def test_training_on_nothing_is_an_error() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="need a non-empty dataset with matching labels, got x 0"):
        train_supervised(
            nn.Linear(4, 2), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), SGDSpec(0.1), CPU
        )


def test_training_with_fewer_labels_than_inputs_is_an_error() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="got x 3, y 2"):
        train_supervised(
            nn.Linear(4, 2), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), SGDSpec(0.1), CPU
        )


def test_evaluating_on_nothing_is_an_error() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="cannot evaluate on an empty set"):
        evaluate(nn.Linear(4, 2), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), CPU)


def test_evaluating_with_domains_of_another_length_is_an_error() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="x has 2 samples, y 2, domains 3"):
        evaluate(Fixed(), torch.zeros(2, 1, 1, 1), torch.zeros(2).long(), CPU, np.zeros(3))


def test_zero_epochs_trains_nothing_and_reports_zero_losses() -> None:
    # Prepare
    model = nn.Linear(2, 2)
    before = [p.detach().clone() for p in model.parameters()]

    # Execute
    stats = train_supervised(
        model, torch.ones(4, 2), torch.zeros(4, dtype=torch.long), SGDSpec(0.1, epochs=0), CPU
    )

    # Assert
    assert stats == {"loss": 0.0, "ce": 0.0, "kd": 0.0, "accuracy": 0.0}
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_train_accuracy_counts_the_last_epochs_samples_as_they_were_trained_on() -> None:
    # Prepare: a model (learning rate 1e-9: its weights hardly move) that predicts the first pixel's
    # class; 7 samples in batches of 3 (3 + 3 + 1), 5 of them labeled as predicted
    x = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0]).view(7, 1, 1, 1)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    model = nn.Sequential(Fixed(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
        model[1].bias.zero_()

    # Execute
    stats = train_supervised(model, x, y, SGDSpec(1e-9, 0.0, 3, epochs=2), CPU)

    # Assert: 5 of 7, the share `evaluate` gives for the unchanged model
    assert stats["accuracy"] == pytest.approx(5 / 7)
    assert evaluate(model, x, y, CPU)["accuracy"] == pytest.approx(5 / 7)


def test_evaluate_without_domains_gives_accuracy_and_loss_only() -> None:
    # Prepare: predictions right, wrong (first pixel 1 -> class 1, label 0)
    x = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    y = torch.tensor([0, 0])

    # Execute
    out = evaluate(Fixed(), x, y, CPU)

    # Assert: accuracy 1/2; only these two keys
    assert set(out) == {"accuracy", "loss"} and out["accuracy"] == 0.5

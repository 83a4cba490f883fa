"""feddistill.learn: local training and evaluation, shared by clients and server.

Plain PyTorch (no Flower, no Ray): one training loop (:func:`fit`) with its two uses
(:func:`train_supervised`, :func:`distill_on_proxy`), one evaluator
(:func:`evaluate` on top of :func:`predict_logits`), and the settings they take
(:class:`SGDSpec`, :class:`KDSpec`, :class:`KDTarget`).
"""

from feddistill.learn.evaluate import evaluate, predict_logits
from feddistill.learn.fit import (
    MIN_STEPS_PER_ROUND,
    distill_on_proxy,
    few_steps_warning,
    fit,
    train_supervised,
)
from feddistill.learn.specs import OPTIMIZERS, KDSpec, KDTarget, SGDSpec, resolve_device

__all__ = [
    "MIN_STEPS_PER_ROUND",
    "OPTIMIZERS",
    "KDSpec",
    "KDTarget",
    "SGDSpec",
    "distill_on_proxy",
    "evaluate",
    "few_steps_warning",
    "fit",
    "predict_logits",
    "resolve_device",
    "train_supervised",
]

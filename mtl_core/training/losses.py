"""Losses of the main task and the auxiliary reconstructions, and their weighting."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

IGNORE_INDEX = -1


def classification_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy ignoring unlabelled pixels.

    Args:
        logits: (B, C, H, W) or (B, C).
        target: (B, H, W) or (B,) class indices, :data:`IGNORE_INDEX` where unlabelled.
        weight: (C,) class weights, or None (every class weighs 1).

    Returns:
        Mean loss over labelled pixels; zero (still attached to the graph) when none is labelled.
    """
    if not (target != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)


def masked_regression_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: Literal["l1", "mse"] = "l1"
) -> torch.Tensor:
    """L1 or MSE over valid pixels only (nodata targets contribute nothing).

    Args:
        pred: (B, K, H, W) predictions on normalised values.
        target: (B, K, H, W) normalised targets; values under an invalid mask are ignored.
        valid: (B, H, W) or (B, K, H, W) boolean mask of pixels that carry a target.
        kind: ``"l1"`` or ``"mse"``.
    """
    if kind not in ("l1", "mse"):
        raise ConfigError(f"unknown reconstruction loss {kind!r}; choose 'l1' or 'mse'")
    if valid.dim() == pred.dim() - 1:
        valid = valid.unsqueeze(1)
    valid = valid.expand_as(pred)
    if not valid.any():
        return pred.sum() * 0.0
    diff = pred[valid] - target[valid]
    return diff.abs().mean() if kind == "l1" else (diff * diff).mean()


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None, task: str, temperature: float = 2.0
) -> torch.Tensor:
    """How far the student's main output is from a teacher's (Hinton, Vinyals and Dean, 2015).

    Classes: KL divergence of the temperature-softened class distributions, times ``temperature**2``;
    regression: MSE. Scored on every valid pixel, labelled or not: the teacher supervises where no label does.

    Args:
        student, teacher: (B, C, H, W) or (B, C) main-task outputs (logits, or normalised values).
        valid: (B, H, W) pixels to score (per-pixel outputs only); None for every one.
    """
    if task == "regression":
        return masked_regression_loss(student, teacher, valid if valid is not None else torch.ones_like(
            student[:, 0], dtype=torch.bool), "mse")
    log_p = F.log_softmax(student / temperature, dim=1)
    log_q = F.log_softmax(teacher / temperature, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1)
    if valid is not None and kl.dim() > 1:
        if not valid.any():
            return student.sum() * 0.0
        kl = kl[valid]
    return kl.mean() * temperature**2


class UncertaintyWeighting(nn.Module):
    """Learned task weighting by homoscedastic uncertainty (Kendall, Gal and Cipolla, CVPR 2018).

    Each task ``i`` has a learned log-variance ``s_i``; the total is ``sum(exp(-s_i) * L_i + s_i)``,
    so a noisy task is down-weighted but cannot be switched off for free.
    """

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = self.log_vars.sum() * 0.0
        for i, name in enumerate(self.tasks):
            total = total + torch.exp(-self.log_vars[i]) * losses[name] + self.log_vars[i]
        return total

    def weights(self) -> dict[str, float]:
        return {name: float(torch.exp(-self.log_vars[i].detach())) for i, name in enumerate(self.tasks)}


def class_weights(counts: np.ndarray, kind: str) -> torch.Tensor | None:
    """Per-class weights of the main loss from the labelled pixels per class of the training blocks: (1 / share)
    ** 0.5 (``sqrt``) or 1 / share (``inverse``), scaled so that the average labelled pixel weighs 1 and capped at
    50 times that; classes without pixels weigh 0. None for ``none``."""
    if kind == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    share = counts / max(counts.sum(), 1.0)
    power = 0.5 if kind == "sqrt" else 1.0
    w = np.where(share > 0, np.power(np.maximum(share, 1e-12), -power), 0.0)
    w /= max((w * share).sum(), 1e-12)
    return torch.tensor(np.minimum(w, 50.0), dtype=torch.float32)

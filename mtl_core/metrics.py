"""Accumulated evaluation metrics: confusion-matrix scores, regression errors, reconstruction RMSE."""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Confusion matrix over class indices; rows are the reference, columns the prediction."""

    def __init__(self, n_classes: int) -> None:
        self.n = n_classes
        self.matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, reference: np.ndarray, predicted: np.ndarray) -> None:
        """Add pairs of class indices; negative reference values (unlabelled) are skipped."""
        keep = reference >= 0
        r, p = reference[keep].astype(np.int64), predicted[keep].astype(np.int64)
        self.matrix += np.bincount(r * self.n + p, minlength=self.n * self.n).reshape(self.n, self.n)

    def scores(self, class_names: list[str]) -> dict:
        """Overall accuracy, mIoU and macro F1, with per-class IoU and F1.

        Classes absent from both reference and prediction get NaN and are left out of the means.
        """
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        ref, pred = m.sum(axis=1), m.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = tp / (ref + pred - tp)
            f1 = 2 * tp / (ref + pred)
        total = m.sum()
        return {
            "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan"),
            "per_class": {
                name: {"iou": float(iou[i]), "f1": float(f1[i]), "pixels": int(ref[i])}
                for i, name in enumerate(class_names)
            },
            "confusion_matrix": self.matrix.tolist(),
        }


class RegressionErrors:
    """Running RMSE, MAE and R² per channel, in the values' own units."""

    def __init__(self, channels: int = 1) -> None:
        self.n = np.zeros(channels)
        self.abs = np.zeros(channels)
        self.sq = np.zeros(channels)
        self.y = np.zeros(channels)
        self.yy = np.zeros(channels)

    def update(self, reference: np.ndarray, predicted: np.ndarray, valid: np.ndarray) -> None:
        """Add (C, H, W) arrays; ``valid`` is (H, W) or (C, H, W)."""
        valid = np.broadcast_to(valid, reference.shape)
        for c in range(reference.shape[0]):
            r = reference[c][valid[c]].astype(np.float64)
            d = predicted[c][valid[c]].astype(np.float64) - r
            self.n[c] += r.size
            self.abs[c] += np.abs(d).sum()
            self.sq[c] += (d * d).sum()
            self.y[c] += r.sum()
            self.yy[c] += (r * r).sum()

    def merge(self, other: RegressionErrors) -> None:
        """Add the sums of other pixels."""
        for name in ("n", "abs", "sq", "y", "yy"):
            getattr(self, name)[...] += getattr(other, name)

    def rmse(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.sq / self.n)

    def scores(self) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            var = self.yy / self.n - (self.y / self.n) ** 2
            r2 = 1 - (self.sq / self.n) / var
        return {"rmse": float(self.rmse()[0]), "mae": float(self.abs[0] / self.n[0]), "r2": float(r2[0])}


#: Below these, a held-out score says little: labelled pixels, and blocks (neighbouring pixels are alike, so a few
#: blocks are a few samples however many pixels they hold).
FEW_PIXELS = 2000
FEW_BLOCKS = 4


def held_out_caveats(training: dict) -> list[str]:
    """What a reader of a model's held-out scores must know: a test or validation split of few labelled pixels or
    few blocks (from a model spec's ``training`` record), one sentence each; empty when the splits are ample."""
    data = training.get("data", {}) if isinstance(training, dict) else {}
    blocks, pixels = data.get("blocks", {}), data.get("labelled_pixels", {})
    lines = []
    for split, role in (("test", "the test score"), ("val", "the choice of the best step")):
        n, px = blocks.get(split), pixels.get(split)
        if n is None or px is None:
            continue
        if px < FEW_PIXELS or n < FEW_BLOCKS:
            name = "test" if split == "test" else "validation"
            lines.append(f"the {name} split holds only {px:,} labelled pixel(s) in {n} block(s): {role} rests on "
                         f"little and may swing widely; label more, or larger areas spread over the scene")
    return lines

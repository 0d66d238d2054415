"""The report's statistics, fed block by block by the engine while it writes the layers (nothing is read back).

Every finished block arrives with the layers as written (nodata set) and the engine's block (the
reference labels it read once, the predicted class indices). Each task is scored as itself: segmentation per
pixel; patch classification per cell, against the majority label of the cell's pixels (as training builds its
targets), with entropy and confidence as the detectors (reconstruction errors are per pixel); regression with
RMSE, MAE and R² in the target's units, and the Spearman correlation of each score with the absolute error.
The confusion matrix, agreement counts and sensitivity totals use every pixel (cell); rank statistics (AUROC,
Spearman) a uniform random sample of at most ``sample_pixels`` labelled ones, drawn by a hash of each pixel's
place, so the statistics of parts of a raster (the shards of a distributed run) merge into those of the whole.
Entropy and confidence are scored as detectors only when they were written (products the user may leave out).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import ConfusionMatrix, RegressionErrors
from ..spec import ERROR_NODATA, FLOAT_NODATA, ModelSpec
from .scores import AGREEMENT_CLASSES
from .stats import PixelSample, confident_errors, detector_stats, per_group, spearman


def _values(arr: np.ndarray) -> np.ndarray:
    """A written float layer block as float64, its nodata as NaN."""
    out = arr.astype(np.float64)
    out[out == FLOAT_NODATA] = np.nan
    return out


class ExplainStats:
    """Accumulates the statistics of ``mtl explain`` (see :meth:`add` and :meth:`result`).

    Args:
        spec: the model's spec.
        labelled: whether the run has reference labels.
        region: (blocks down, blocks across) bool grid of the blocks to score (None: every pixel), in input
            raster pixels of ``block_size``.
        sample_pixels: most pixels kept for rank statistics.
        seed: seed of the pixel sample.
    """

    def __init__(self, spec: ModelSpec, labelled: bool, sample_pixels: int = 1_000_000, seed: int = 0,
                 region: np.ndarray | None = None, block_size: int = 0) -> None:
        self.spec, self.labelled, self.sample_pixels, self.seed = spec, labelled, sample_pixels, seed
        self.region, self.block_size = region, block_size
        self.start([])

    def start(self, keys: list[str]) -> None:
        """Prepare for a run writing the layers ``keys``."""
        spec, self.keys = self.spec, set(keys)
        self.classes = spec.task != "regression"
        self.cells = spec.task == "classification"  # scored per cell: reconstruction errors are per pixel
        self.error_model = spec.training.get("error_model") or {}
        self.recon_keys = [f"recon_error_{m.name}" for m in spec.aux
                           if f"recon_error_{m.name}" in self.keys and not self.cells]
        cols = ["wrong", "reference"]
        if self.classes and "entropy" in self.keys:
            cols.append("entropy")
        if self.classes and "confidence" in self.keys:
            cols.append("one_minus_confidence")
        if self.recon_keys:
            cols += ["recon_error_mean"] + [f"{k}/{b.name}" for k in self.recon_keys
                                            for b in spec.aux_modality(k[len("recon_error_"):]).bands]
        if "error_score" in self.keys and not self.cells:
            cols.append("error_score")
        if "error_probability" in self.keys:  # the stored detector's probability of being wrong
            cols.append("combined")
        self.cols = cols
        self.sample = PixelSample(cols, self.sample_pixels, self.seed)
        self.confusion = ConfusionMatrix(len(spec.classes)) if self.classes else None
        self.regression = None if self.classes else RegressionErrors()
        self.agree_counts = np.zeros(len(AGREEMENT_CLASSES) + 1, dtype=np.int64)
        self.sens = {k: (np.zeros(spec.in_channels), np.zeros(spec.in_channels))
                     for k in sorted(self.keys) if k.startswith("sensitivity")}

    def add(self, layers: dict[str, np.ndarray], block) -> None:
        """One finished block: ``layers`` maps layer keys to the arrays written; ``block`` is the engine's
        :class:`~mtl_core.engine.product.Block` (its ``labels`` and ``pred_idx``)."""
        for key, (total, count) in self.sens.items():
            arr = layers[key]
            valid = (arr != FLOAT_NODATA).all(axis=0)
            total += np.where(valid, arr, 0.0).sum(axis=(1, 2))
            count += valid.sum()
        if "agreement" in layers:
            agree = layers["agreement"][0]
            if self.region is not None:
                agree = agree[self._in_region(block, agree.shape)]
            self.agree_counts += np.bincount(agree.ravel(), minlength=self.agree_counts.size)
        if "main_error" not in layers or not self.labelled:
            return
        err = layers["main_error"][0].astype(np.float64)
        keep = err != (ERROR_NODATA if self.classes else FLOAT_NODATA)
        ref, labelled = block.cell_labels if self.cells else block.labels
        cols: dict[str, np.ndarray] = {"wrong": err, "reference": ref.astype(np.float64)}
        if self.region is not None:
            keep &= self._in_region(block, keep.shape)
        if self.regression is not None:
            self.regression.update(ref[None], block.value[None], labelled & keep)
        if self.classes:
            keep &= ref >= 0
            pred = block.on_cells(block.pred_idx) if self.cells else block.pred_idx
            self.confusion.update(np.where(keep, ref, -1).astype(np.int64), pred)
            if "entropy" in self.cols:
                cols["entropy"] = layers["entropy"][0].astype(np.float64)
            if "one_minus_confidence" in self.cols:
                cols["one_minus_confidence"] = 1.0 - layers["confidence"][0].astype(np.float64)
        if self.recon_keys:
            bands = []
            for key in self.recon_keys:
                arr = _values(layers[key])
                name = key[len("recon_error_"):]
                for b, band in zip(self.spec.aux_modality(name).bands, arr[1:]):
                    cols[f"{key}/{b.name}"] = band
                bands.append(arr[1:])
            cols["recon_error_mean"] = np.concatenate(bands).mean(axis=0)  # over every band, as the detector's
        if "error_score" in self.cols:
            cols["error_score"] = _values(layers["error_score"][0])
        if "combined" in self.cols:
            cols["combined"] = _values(layers["error_probability"][0])
        self.sample.add(cols, keep, self._pixel_ids(block, keep.shape))

    def _places(self, block, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The raster row of each row and the raster column of each column of a block's pixels (or cells)."""
        x, y = block.window[:2]
        step = block.cell if self.cells else 1
        return y + np.arange(shape[0], dtype=np.int64) * step, x + np.arange(shape[1], dtype=np.int64) * step

    def _pixel_ids(self, block, shape: tuple[int, int]) -> np.ndarray:
        """A unique id per pixel (or cell) of a block, from its place in the raster (row x 2^32 + column)."""
        rows, cols = self._places(block, shape)
        return (rows << 32)[:, None] + cols[None, :]

    def merge(self, other: ExplainStats) -> None:
        """Add the statistics of another part of the same run (another shard's blocks, see ``--workers``): the
        result is that of one run over both parts."""
        self.sample.merge(other.sample)
        self.agree_counts += other.agree_counts
        for key, (total, count) in self.sens.items():
            total += other.sens[key][0]
            count += other.sens[key][1]
        if self.confusion is not None:
            self.confusion.matrix += other.confusion.matrix
        if self.regression is not None:
            self.regression.merge(other.regression)

    def _in_region(self, block, shape: tuple[int, int]) -> np.ndarray:
        """Which pixels (or cells) of a block lie in the scored blocks."""
        rows, cols = (p // self.block_size for p in self._places(block, shape))
        rows, cols = rows.clip(0, self.region.shape[0] - 1), cols.clip(0, self.region.shape[1] - 1)
        return self.region[np.ix_(rows, cols)]

    def result(self) -> dict[str, Any]:
        """The statistics: metrics, agreement fractions, sensitivity means and the detectors' scores."""
        spec, sample = self.spec, self.sample
        stats: dict[str, Any] = {"model": spec.name, "variant": spec.variant, "task": spec.task,
                                 "unit": "cells" if self.cells else "pixels",
                                 "pixels_sampled": len(sample), "pixels_labelled": sample.seen}
        if self.labelled and "main_error" in self.keys:  # without labels there is nothing to score
            if self.confusion is not None:
                stats["metrics"] = self.confusion.scores([c.name for c in spec.classes])
            elif self.regression.n[0]:
                stats["metrics"] = {**self.regression.scores(), "pixels": int(self.regression.n[0]),
                                    "units": spec.target.units}
        if self.error_model:
            stats["threshold"] = self.error_model.get("threshold")
            stats["threshold_quantile"] = self.error_model.get("threshold_quantile")
        if "agreement" in self.keys:
            total = self.agree_counts[1:].sum()
            stats["agreement"] = {label: {"pixels": int(self.agree_counts[v]),
                                          "fraction": float(self.agree_counts[v] / total) if total else float("nan")}
                                  for v, label, _ in AGREEMENT_CLASSES}
        names = [f"{m.name}/{b.name}" for m in spec.inputs for b in m.bands]
        stats["sensitivity"] = {key: {n: float(t / c) if c else float("nan") for n, t, c in zip(names, total, count)}
                                for key, (total, count) in self.sens.items()}
        if len(sample) and self.classes:
            wrong = sample["wrong"]
            classes = {i: c.name for i, c in enumerate(spec.classes)}
            detectors = {}
            for col in self.cols[2:]:
                d = detector_stats(sample[col], wrong)
                d["auroc_per_class"] = per_group(lambda s, w: detector_stats(s, w)["auroc"], sample["reference"],
                                                 classes, sample[col], wrong)
                d["spearman_per_class"] = per_group(spearman, sample["reference"], classes, sample[col], wrong)
                detectors[col] = d
            stats["detectors"] = detectors
            if "one_minus_confidence" in self.cols:
                scores = {c: sample[c] for c in self.cols[2:]}
                conf = 1.0 - sample["one_minus_confidence"]
                stats["confident"] = confident = confident_errors(scores, conf, wrong)
                confident["per_class"] = {}  # by reference class, at the overall confidence level
                for i, name in classes.items():
                    mine = sample["reference"] == i
                    if mine.any():
                        confident["per_class"][name] = confident_errors(
                            {c: v[mine] for c, v in scores.items()}, conf[mine], wrong[mine],
                            level=confident["confidence_at_least"])
        elif len(sample):  # regression: how reconstruction errors follow the absolute error
            stats["correlations"] = {col: {"spearman": spearman(sample[col], sample["wrong"])}
                                     for col in self.cols[2:]}
        return stats

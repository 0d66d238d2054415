"""The per-pixel random forest baseline (scikit-learn): trained on the labelled pixels of the networks' training
blocks and scored on the same test pixels; a baseline to compare with, never saved as a model.

A GIS user's first comparison is the random forest of dzetsaka or the Semi-Automatic Classification Plugin: each
pixel's bands in, a class out. ``forest`` reads the input bands (as ``unimodal``), ``forest-multimodal`` the input
and auxiliary bands (as ``multimodal``). Trees see the bands normalised as the networks see them (a forest does
not care: a split on a normalised band is a split on the raw one). Labelled pixels of the training and validation
blocks are drawn (at most ``TrainOptions.forest_pixels``, each block thinned alike) and the forest is fitted on
them; the test blocks are scored by :func:`mtl_core.training.train.evaluate`, as the networks are.

Why it is not saved: a forest grown to purity on every labelled pixel is large (measured on the Berlin sample's
256,000 pixels: 9 million nodes, 714 MB as ONNX; 146 MB even with 10 pixels a leaf, which lost 0.01 mIoU), and a
user who wants to map with a forest has dzetsaka or SCP. scikit-learn is imported here only, in the worker: never
inside QGIS.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .data import labelled_pixels

log = logging.getLogger(__name__)


def _sklearn():
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError as exc:
        raise ConfigError("the forest baseline needs scikit-learn in the worker's Python: pip install "
                          "scikit-learn") from exc
    return RandomForestClassifier


class ForestNet(torch.nn.Module):
    """A fitted forest behind the network's interface: (B, C, H, W) normalised bands -> ``{"main": (B, K, H, W)
    log-probabilities, "aux": {}}`` (so :func:`~mtl_core.training.train.evaluate` scores it as a network)."""

    divisor = 1

    def __init__(self, forest: Any, classes: int) -> None:
        super().__init__()
        self.forest, self.classes = forest, classes

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        b, c, h, w = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(-1, c).cpu().numpy()
        probs = np.zeros((flat.shape[0], self.classes), dtype=np.float32)
        probs[:, self.forest.classes_] = self.forest.predict_proba(flat)
        logp = torch.from_numpy(np.log(np.maximum(probs, 1e-6)))
        return {"main": logp.reshape(b, h, w, self.classes).permute(0, 3, 1, 2), "aux": {}}


def sample_pixels(trainer, blocks: list, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Labelled, valid pixels of ``blocks`` as (n, C) normalised bands and (n,) class indices, thinned at random
    (seeded, each block alike) to about ``limit``; also returns how many there were."""
    census = labelled_pixels(trainer.per_block, blocks, trainer.cfg.split.block_size)
    keep = min(1.0, limit / max(census, 1))
    rng = np.random.default_rng(seed)
    xs, ys, total = [], [], 0
    for w in blocks:
        s = trainer.reader.read(w)
        mask = s["mask"].numpy()
        labelled = mask >= 0
        total += int(labelled.sum())
        chosen = labelled & (rng.random(mask.shape) < keep)
        xs.append(s["image"].numpy()[:, chosen].T)
        ys.append(mask[chosen])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) > limit:  # the thinning overshot: trim to the limit
        pick = rng.choice(len(y), limit, replace=False)
        x, y = x[pick], y[pick]
    return x.astype(np.float32), y.astype(np.int64), total


def fit_forest(trainer) -> tuple[Any, dict[str, Any]]:
    """Fit the forest of a :class:`~mtl_core.training.train.Trainer` whose data is configured; returns it and what
    the spec records of it."""
    opts = trainer.opts
    if trainer.spec.task != "segmentation":
        raise ConfigError(f"the forest baseline classifies pixels: it needs a segmentation task, not "
                          f"{trainer.spec.task!r}; train unimodal or multimodal as the baseline instead")
    forest_class = _sklearn()
    trainer.say("phase", phase="reading pixels")
    blocks = trainer.blocks["train"] + trainer.blocks["val"]
    x, y, total = sample_pixels(trainer, blocks, opts.forest_pixels, opts.seed)
    if len(y) == 0:
        raise ConfigError("the training and validation blocks hold no labelled pixel for the forest")
    if total > len(y):
        log.info("forest: %s of the %s labelled, valid pixels of the training and validation blocks drawn at random",
                 f"{len(y):,}", f"{total:,}")
    trainer.say("phase", phase="training")
    threads = max(1, torch.get_num_threads())
    begun = time.perf_counter()
    forest = forest_class(n_estimators=opts.trees, n_jobs=threads, random_state=opts.seed).fit(x, y)
    info = {"pixels": int(len(y)), "labelled_pixels": int(total), "trees": opts.trees,
            "nodes": int(sum(t.tree_.node_count for t in forest.estimators_)),
            "fit_seconds": round(time.perf_counter() - begun, 2)}
    log.info("forest: %d trees on %s pixels in %.1f s", opts.trees, f"{len(y):,}", info["fit_seconds"])
    return forest, info

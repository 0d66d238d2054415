"""The error model of a trained ``mtl`` model: reconstruction-error tables from the training blocks, the detector
from the validation blocks (stored as ``spec.training["error_model"]``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import MtlError
from ..explain.scores import DETECTOR_FEATURES, detector_features, error_score, fit_error_model
from ..explain.stats import LogisticDetector
from ..io.raster import Window
from ..model import MultiTaskModel, padded_size
from ..spec import ModelSpec
from .data import SampleReader, eval_windows


def block_pixels(
    model: MultiTaskModel, spec: ModelSpec, reader: SampleReader, blocks: list[Window], device: torch.device
) -> dict[str, Any]:
    """Run a model over dataset blocks and keep every labelled, valid pixel's explanation inputs.

    Args:
        model: the network, in eval mode.
        spec: its spec (needs auxiliary modalities).
        reader: sample reader of the dataset the blocks belong to.
        blocks: windows to run (whole blocks; segmentation or regression).
        device: where the model runs.

    Returns:
        ``{"probs": (C, n) or None, "recon_error": {name: (K, n)}, "wrong": (n,) bool (segmentation) or
        abs error (regression), "reference": (n,) class index or value}``, float32.
    """
    if spec.task == "classification":
        raise MtlError("explanation layers are per pixel; patch-classification models are not supported yet")
    model.eval()
    probs, wrong, ref = [], [], []
    recon: dict[str, list[np.ndarray]] = {m.name: [] for m in spec.aux}
    with torch.no_grad():
        for w in eval_windows(blocks, spec.task, spec.patch_size):
            h, wd = w[3], w[2]
            s = reader.read(w, (padded_size(h, model.divisor), padded_size(wd, model.divisor)))
            out = model(s["image"][None].to(device))
            keep = s["valid"].numpy()[:h, :wd].copy()
            for m in spec.aux:
                keep &= s["aux_valid"][m.name].numpy()[:h, :wd]
            if spec.task == "segmentation":
                mask = s["mask"].numpy()[:h, :wd]
                keep &= mask >= 0
                p = torch.softmax(out["main"][0], 0).cpu().numpy()[:, :h, :wd]
                probs.append(p[:, keep])
                wrong.append(p.argmax(0)[keep] != mask[keep])
                ref.append(mask[keep])
            else:
                keep &= s["target_valid"].numpy()[:h, :wd]
                t = spec.target
                pred = out["main"][0, 0].cpu().numpy()[:h, :wd] * t.std + t.mean
                truth = s["target"].numpy()[0, :h, :wd] * t.std + t.mean
                wrong.append(np.abs(pred - truth)[keep])
                ref.append(truth[keep])
            for m in spec.aux:
                err = np.abs(out["aux"][m.name][0].cpu().numpy()[:, :h, :wd] - s["aux"][m.name].numpy()[:, :h, :wd])
                recon[m.name].append(err[:, keep])
    cat = lambda parts, axis=0: np.concatenate(parts, axis=axis).astype(np.float32)  # noqa: E731
    return {
        "probs": cat(probs, 1) if probs else None,
        "recon_error": {k: cat(v, 1) for k, v in recon.items()},
        "wrong": np.concatenate(wrong) if wrong else np.zeros(0),
        "reference": np.concatenate(ref) if ref else np.zeros(0),
    }


def fit_on_blocks(
    model: MultiTaskModel,
    spec: ModelSpec,
    reader: SampleReader,
    train_blocks: list[Window],
    val_blocks: list[Window],
    device: torch.device,
    quantile: float = 0.9,
) -> dict[str, Any]:
    """The error model of a trained ``mtl`` model: tables from training blocks, detector from validation blocks.

    The combined detector (logistic regression on :data:`DETECTOR_FEATURES`) is fitted on the
    validation blocks only and stored under ``"detector"``; it is left out (``None``) when those
    blocks hold no error or no correct pixel.
    """
    train = block_pixels(model, spec, reader, train_blocks, device)
    error_model = fit_error_model(
        train["recon_error"], train["probs"],
        band_names={m.name: m.band_names for m in spec.aux},
        class_names=[c.name for c in spec.classes], quantile=quantile,
    )
    error_model["detector"] = None
    if spec.task == "segmentation":  # "confident": at least the median confidence of the training pixels
        error_model["confident_at"] = float(np.median(train["probs"].max(axis=0)))
        val = block_pixels(model, spec, reader, val_blocks, device)
        if val["wrong"].size and val["wrong"].min() != val["wrong"].max():
            score = error_score(val["recon_error"], val["probs"], error_model)
            x = detector_features(val["probs"], val["recon_error"], score)
            error_model["detector"] = LogisticDetector(DETECTOR_FEATURES).fit(x, val["wrong"]).to_dict()
    return error_model

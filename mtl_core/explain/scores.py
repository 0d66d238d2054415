"""Pure per-pixel explanation scores: how unusual a reconstruction error is, the agreement classes, the fit.

The engine's products call these numpy functions on blocks of finished output rows:

* :func:`error_score` turns per-band reconstruction errors (normalised units) into a score in
  [0, 1]: for each auxiliary band, the fraction of *training* pixels predicted as the same class
  whose error was smaller (the class-conditional empirical CDF), averaged over the class
  probabilities, then the worst (largest) over bands. 0.5 is a typical error for that class, 0.95 an error larger
  than 95 % of the training area's. Raw errors are not comparable across classes (some land covers
  are much harder to reconstruct than others); this score is. A regression model has one table over all
  pixels.
* :func:`agreement` crosses "main task wrong" with "score above the threshold" into the four
  :data:`AGREEMENT_CLASSES`; :func:`confident_flagged` crosses "confident" with it, without labels.
* :func:`fit_error_model` computes, at the end of training, the quantile tables those two need and
  the threshold (a quantile of the training score), stored as ``spec.training["error_model"]``
  (:mod:`mtl_core.training.errormodel` feeds it the training pixels).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import MtlError

#: Classes of the agreement layer: (value, legend label, colour); 0 is nodata. The single source of its palette: the
#: GeoTIFF colour table and category names, the QML style (tools/make_styles.py) and the report's legend.
#: Unexplained errors (the model is wrong and nothing flags it) get the alarm colour.
AGREEMENT_CLASSES: list[tuple[int, str, str]] = [
    (1, "correct, reconstruction good", "#1a9641"),
    (2, "wrong, reconstruction bad (explained)", "#fdae61"),
    (3, "wrong, reconstruction good (unexplained)", "#d7191c"),
    (4, "correct, reconstruction bad", "#abd9e9"),
]
#: Classes of the main-task error layer of a classifier, the same way (its nodata value is 255).
MAIN_ERROR_CLASSES: list[tuple[int, str, str]] = [(0, "correct", "#d9d9d9"), (1, "wrong", "#e31a1c")]
#: Classes of the "confident and flagged" layer (0 nodata), the same way: where the model is sure of its class but
#: the reconstruction says the pixel is unlike its training pixels (needs no labels, only the real modality).
CONFIDENT_FLAGGED_CLASSES: list[tuple[int, str, str]] = [
    (1, "not confident", "#d9d9d9"),
    (2, "confident, reconstruction usual", "#a6d96a"),
    (3, "confident and flagged: reconstruction unusual", "#7b3294"),
]
ERROR_MODEL_VERSION = 1
#: Classes with fewer training pixels than this use the distribution of all classes together.
MIN_CLASS_PIXELS = 50


def _levels(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def fit_error_model(
    recon_error: dict[str, np.ndarray],
    probs: np.ndarray | None,
    band_names: dict[str, list[str]] | None = None,
    class_names: list[str] | None = None,
    quantile: float = 0.9,
    n_levels: int = 101,
    reduce: str = "max",
) -> dict[str, Any]:
    """Fit the distribution of reconstruction errors on training pixels.

    For every auxiliary band, a table of error quantiles per *predicted* class (pixels the model
    assigns to that class, whatever their reference), and over all pixels; classes with fewer than
    :data:`MIN_CLASS_PIXELS` training pixels fall back to the all-pixels table.

    Args:
        recon_error: modality name -> (K, n) |reconstruction - truth| in normalised units, training
            pixels only (invalid pixels removed).
        probs: (C, n) class probabilities of the same pixels, or None for regression (one table).
        band_names: modality name -> band names (for people reading the model file).
        class_names: the C class names (likewise).
        quantile: the training-score quantile used as the "reconstruction bad" threshold.
        n_levels: number of quantile levels stored per table.
        reduce: how per-band scores become one, ``"max"`` (default: chosen on validation blocks, see
            docs/results.md) or ``"mean"`` over bands.

    Returns:
        A JSON-serialisable dict with ``"threshold"`` (float), ``"threshold_quantile"``,
        ``"levels"``, ``"modalities"`` (name -> ``{"bands": [...], "tables": (C + 1, K, L) nested lists}``,
        the last table over all pixels) and the pixel counts.

    Raises:
        MtlError: no training pixel, or arrays of different lengths.
    """
    if not 0.0 < quantile < 1.0:
        raise MtlError(f"threshold quantile {quantile!r} must lie strictly between 0 and 1, e.g. 0.9")
    if reduce not in ("mean", "max"):
        raise MtlError(f"band reduction {reduce!r} is unknown; use 'mean' or 'max'")
    if not recon_error:
        raise MtlError("no reconstruction error given; an error model needs at least one auxiliary modality")
    n = {v.shape[-1] for v in recon_error.values()}
    if probs is not None:
        n.add(probs.shape[-1])
    if len(n) != 1 or 0 in n:
        raise MtlError(f"the error model needs training pixels, and as many for every array; got sizes {sorted(n)}")
    levels = _levels(n_levels)
    n_classes = 0 if probs is None else probs.shape[0]
    pred = None if probs is None else probs.argmax(0)
    counts = [int((pred == c).sum()) for c in range(n_classes)] if pred is not None else []
    model: dict[str, Any] = {
        "version": ERROR_MODEL_VERSION,
        "method": "class-conditional empirical CDF of |reconstruction - truth| (normalised units), "
                  f"expected under the class probabilities, {reduce} over bands",
        "reduce": reduce,
        "levels": levels.tolist(),
        "classes": list(class_names) if class_names else [f"class {c}" for c in range(n_classes)],
        "class_pixels": counts,
        "modalities": {},
    }
    for name, err in recon_error.items():
        err = np.asarray(err, dtype=np.float64)
        overall = np.quantile(err, levels, axis=1).T  # (K, L)
        tables = []
        for c in range(n_classes):
            sel = pred == c
            tables.append(np.quantile(err[:, sel], levels, axis=1).T if counts[c] >= MIN_CLASS_PIXELS else overall)
        tables.append(overall)
        bands = (band_names or {}).get(name) or [f"b{k + 1}" for k in range(err.shape[0])]
        model["modalities"][name] = {"bands": list(bands), "tables": np.round(np.stack(tables), 6).tolist()}
    train_score = error_score(recon_error, probs, model)
    model["threshold_quantile"] = float(quantile)
    model["threshold"] = float(np.quantile(train_score, quantile))
    model["train_pixels"] = int(next(iter(n)))
    return model


def error_score(recon_error: dict[str, np.ndarray], probs: np.ndarray | None, error_model: dict) -> np.ndarray:
    """How unusual each pixel's reconstruction error is, against the training area.

    For band k and class c, u_ck is the fraction of training pixels predicted as c whose error in
    band k was smaller than this pixel's. The score is the maximum (or, if the error model says so,
    the mean) over bands of sum_c p_c u_ck; with ``probs`` None, the all-pixels table is used. 0.5 is a
    typical error; near 1, larger than almost every training error.

    Args:
        recon_error: modality name -> (K, h, w) float32 |reconstruction - truth| in normalised
            units; modalities the error model does not know are refused, missing ones skipped.
        probs: (C, h, w) class probabilities, or None for regression.
        error_model: the dict :func:`fit_error_model` returned (``spec.training["error_model"]``).

    Returns:
        (h, w) float32 score in [0, 1], higher = reconstruction worse than expected. NaN only where
        an input error is NaN in every band.

    Raises:
        MtlError: a modality or band count the error model does not know, or probabilities for
            another number of classes.
    """
    levels = np.asarray(error_model["levels"], dtype=np.float64)
    reduce = error_model.get("reduce", "max")
    shape, per_band = None, []
    for name, err in recon_error.items():
        fitted = error_model["modalities"].get(name)
        if fitted is None:
            raise MtlError(f"the error model knows no modality {name!r}; it has {sorted(error_model['modalities'])}")
        tables = np.asarray(fitted["tables"], dtype=np.float64)  # (C + 1, K, L)
        err = np.asarray(err, dtype=np.float64)
        if err.shape[0] != tables.shape[1]:
            raise MtlError(
                f"modality {name!r} has {err.shape[0]} error band(s) but the error model was fitted on "
                f"{tables.shape[1]} ({', '.join(fitted['bands'])})"
            )
        shape = err.shape[1:]
        err = err.reshape(err.shape[0], -1)
        p = None
        if probs is not None and tables.shape[0] > 1:
            if probs.shape[0] != tables.shape[0] - 1 or probs.shape[1:] != shape:
                raise MtlError(
                    f"probabilities of shape {probs.shape} do not match the error model's {tables.shape[0] - 1} "
                    f"classes and errors of shape {shape}"
                )
            p = np.asarray(probs, dtype=np.float64).reshape(probs.shape[0], -1)
        for k in range(err.shape[0]):
            e = err[k]
            if p is None:
                u = np.interp(e, tables[-1, k], levels)
            else:  # np.interp runs several times faster on sorted values: sort the band once for every class
                order = np.argsort(e)
                sorted_e, sorted_p = e[order], p[:, order]
                summed = np.zeros(e.shape)
                for c in range(p.shape[0]):
                    summed += sorted_p[c] * np.interp(sorted_e, tables[c, k], levels)
                u = np.empty(e.shape)
                u[order] = summed  # the same values, each back in its place
            u[~np.isfinite(e)] = np.nan
            per_band.append(u)
    if not per_band:
        raise MtlError("no reconstruction error given; pass at least one auxiliary modality's error")
    stacked = np.stack(per_band)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        score = np.nanmax(stacked, axis=0) if reduce == "max" else np.nanmean(stacked, axis=0)
    return score.reshape(shape).astype(np.float32)


def agreement(main_wrong: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    """The four error-agreement classes of :data:`AGREEMENT_CLASSES`.

    Args:
        main_wrong: (h, w) bool, True where the main task is wrong.
        score: (h, w) reconstruction error score (see :func:`error_score`).
        threshold: "reconstruction bad" means ``score > threshold``.

    Returns:
        (h, w) uint8: 1 correct & good, 2 wrong & bad (explained), 3 wrong & good (unexplained),
        4 correct & bad.
    """
    wrong = np.asarray(main_wrong, dtype=bool)
    bad = np.asarray(score) > threshold
    if wrong.shape != bad.shape:
        raise ValueError(f"main_wrong {wrong.shape} and score {bad.shape} must have the same shape")
    out = np.where(wrong, np.where(bad, 2, 3), np.where(bad, 4, 1))
    return out.astype(np.uint8)


def confident_flagged(confidence: np.ndarray, score: np.ndarray, confident_at: float, threshold: float) -> np.ndarray:
    """The classes of :data:`CONFIDENT_FLAGGED_CLASSES`: 1 where ``confidence < confident_at``, else 3 where the error
    score is above ``threshold`` ("reconstruction bad", as in :func:`agreement`) and 2 where it is not; uint8."""
    sure = np.asarray(confidence) >= confident_at
    return np.where(sure, np.where(np.asarray(score) > threshold, 3, 2), 1).astype(np.uint8)


#: Features of the combined detector, in column order (see :func:`detector_features`).
DETECTOR_FEATURES = ["entropy", "one_minus_confidence", "error_score", "recon_error_mean"]


def entropy(probs: np.ndarray) -> np.ndarray:
    """(C, ...) class probabilities -> (...) entropy in nats, float32; class by class, so no temporary is as
    large as all the probabilities."""
    ent = np.zeros(probs.shape[1:], dtype=np.float32)
    term = np.empty_like(ent)
    for p in probs:
        np.log(np.maximum(p, 1e-12, out=term), out=term)
        term *= p
        ent -= term
    return ent


def detector_features(probs: np.ndarray, recon_error: dict[str, np.ndarray], score: np.ndarray,
                      ent: np.ndarray | None = None, confidence: np.ndarray | None = None) -> np.ndarray:
    """Stack the :data:`DETECTOR_FEATURES` of pixels.

    Args:
        probs: (C, ...) class probabilities.
        recon_error: modality name -> (K, ...) normalised absolute errors.
        score: (...) :func:`error_score`.
        ent, confidence: (...) :func:`entropy` and highest probability of ``probs``, when already computed.

    Returns:
        (n, 4) float64, one row per pixel (flattened).
    """
    ent = entropy(probs) if ent is None else ent
    confidence = probs.max(0) if confidence is None else confidence
    mean_err = np.mean(np.concatenate([e.reshape(e.shape[0], -1) for e in recon_error.values()]), axis=0)
    return np.stack([ent.ravel(), 1.0 - confidence.ravel(), score.ravel(), mean_err], axis=1)

"""Explanation layers: how unusual a reconstruction error is, the error-agreement classes, and ``mtl explain``.

The streaming engine (:mod:`mtl_core.inference`) calls the pure numpy functions of this module on
blocks of finished output rows:

* :func:`error_score` turns per-band reconstruction errors (normalised units) into a score in
  [0, 1]: for each auxiliary band, the fraction of *training* pixels predicted as the same class
  whose error was smaller (the class-conditional empirical CDF), averaged over the class
  probabilities, then the worst (largest) over bands. 0.5 is a typical error for that class, 0.95 an error larger
  than 95 % of the training area's. Raw errors are not comparable across classes (some land covers
  are much harder to reconstruct than others); this score is.
* :func:`agreement` crosses "main task wrong" with "score above the threshold" into the four
  :data:`AGREEMENT_CLASSES`.
* :func:`fit_error_model` computes, at the end of training, the quantile tables those two need and
  the threshold (a quantile of the training score), stored as ``spec.training["error_model"]``.

:func:`explain` runs the engine with the real auxiliary rasters and labels, streams its outputs
window by window to compute statistics (:mod:`mtl_core.stats`) and writes the report
(:mod:`mtl_core.report`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from osgeo import gdal

from .errors import MtlError, OutputError

if TYPE_CHECKING:
    import torch

    from .data import SampleReader
    from .inference import PredictOptions
    from .model import MultiTaskModel
    from .raster import Window
    from .spec import ModelSpec

log = logging.getLogger("mtl_core")

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
AGREEMENT_NODATA = 0
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
            else:
                u = np.zeros(e.shape)
                for c in range(p.shape[0]):
                    u += p[c] * np.interp(e, tables[c, k], levels)
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


# --- per-pixel features shared by the detector, the training hook and the report ----------------------------------

#: Features of the combined detector, in column order (see :func:`detector_features`).
DETECTOR_FEATURES = ["entropy", "one_minus_confidence", "error_score", "recon_error_mean"]


def entropy(probs: np.ndarray) -> np.ndarray:
    """(C, ...) class probabilities -> (...) entropy in nats."""
    return -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(0)


def detector_features(probs: np.ndarray, recon_error: dict[str, np.ndarray], score: np.ndarray) -> np.ndarray:
    """Stack the :data:`DETECTOR_FEATURES` of pixels.

    Args:
        probs: (C, ...) class probabilities.
        recon_error: modality name -> (K, ...) normalised absolute errors.
        score: (...) :func:`error_score`.

    Returns:
        (n, 4) float64, one row per pixel (flattened).
    """
    mean_err = np.mean(np.concatenate([e.reshape(e.shape[0], -1) for e in recon_error.values()]), axis=0)
    return np.stack([entropy(probs).ravel(), 1.0 - probs.max(0).ravel(), score.ravel(), mean_err], axis=1)


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
    import torch

    from .data import eval_windows
    from .model import padded_size

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
    from .stats import LogisticDetector

    train = block_pixels(model, spec, reader, train_blocks, device)
    error_model = fit_error_model(
        train["recon_error"], train["probs"],
        band_names={m.name: m.band_names for m in spec.aux},
        class_names=[c.name for c in spec.classes], quantile=quantile,
    )
    error_model["detector"] = None
    if spec.task == "segmentation":
        val = block_pixels(model, spec, reader, val_blocks, device)
        if val["wrong"].size and val["wrong"].min() != val["wrong"].max():
            score = error_score(val["recon_error"], val["probs"], error_model)
            x = detector_features(val["probs"], val["recon_error"], score)
            error_model["detector"] = LogisticDetector(DETECTOR_FEATURES).fit(x, val["wrong"]).to_dict()
    return error_model


# --- mtl explain: run the engine with ground truth, stream its outputs into statistics, write the report ---------

@dataclass
class ExplainResult:
    """What ``mtl explain`` wrote: the layers (engine output keys -> paths), the report files and the numbers."""

    outputs: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    spec: ModelSpec | None = None


def _offset(inner: gdal.Dataset, outer: gdal.Dataset) -> tuple[int, int]:
    """Pixel offset of ``inner``'s top-left corner in ``outer`` (same pixel grid)."""
    a, b = inner.GetGeoTransform(), outer.GetGeoTransform()
    return int(round((a[0] - b[0]) / b[1])), int(round((a[3] - b[3]) / b[5]))


def _stream_stats(spec: ModelSpec, outputs: dict[str, Path], labels: str | None, sample_pixels: int = 1_000_000,
                  seed: int = 0, window_rows: int = 256, labels_band: int = 1) -> dict:
    """Read the engine's output rasters window by window and accumulate every statistic of the report.

    Entropy and confidence are scored as detectors only when they were written (they are products the
    user may leave out).
    """
    from .inference import ERROR_NODATA
    from .metrics import ConfusionMatrix
    from .raster import read_window
    from .spec import FLOAT_NODATA
    from .stats import LogisticDetector, PixelSample, detector_stats, per_group, spearman

    ds = {k: gdal.Open(str(p)) for k, p in outputs.items()}
    ref_ds = gdal.Open(str(labels)) if labels else None
    width, height = ds["main"].RasterXSize, ds["main"].RasterYSize
    seg = spec.task == "segmentation"
    error_model = spec.training.get("error_model") or {}
    detector = LogisticDetector.from_dict(error_model["detector"]) if error_model.get("detector") else None
    recon_keys = [k for k in outputs if k.startswith("recon_error_")]
    band_cols = [f"recon_error_{m.name}/{b.name}" for m in spec.aux for b in m.bands
                 if f"recon_error_{m.name}" in outputs]
    cols = ["wrong", "reference"]
    if seg and "entropy" in outputs:
        cols.append("entropy")
    if seg and "confidence" in outputs:
        cols.append("one_minus_confidence")
    if recon_keys:
        cols += ["recon_error_mean"] + band_cols
    if "error_score" in outputs:
        cols.append("error_score")
    if detector is not None and {"error_score", "entropy", "one_minus_confidence", "recon_error_mean"} <= set(cols):
        cols.append("combined")
    sample = PixelSample(cols, sample_pixels, seed)
    confusion = ConfusionMatrix(len(spec.classes)) if seg else None
    agree_counts = np.zeros(len(AGREEMENT_CLASSES) + 1, dtype=np.int64)
    sens = {k: (np.zeros(ds[k].RasterCount), np.zeros(ds[k].RasterCount))
            for k in outputs if k.startswith("sensitivity")}
    values = np.array([c.value for c in spec.classes], dtype=np.int64)
    lut = np.full(int(values.max(initial=0)) + 2, -1, dtype=np.int64)  # class value -> class index
    lut[values] = np.arange(values.size)
    ox, oy = _offset(ds["main"], ref_ds) if ref_ds is not None else (0, 0)

    def one(key: str, w: tuple[int, int, int, int]) -> np.ndarray:
        return ds[key].GetRasterBand(1).ReadAsArray(*w).astype(np.float64)

    for y in range(0, height, window_rows):
        w = (0, y, width, min(window_rows, height - y))
        for key, (total, count) in sens.items():
            arr, valid = read_window(ds[key], list(range(1, ds[key].RasterCount + 1)), w)
            total += np.where(valid, arr, 0.0).sum(axis=(1, 2))
            count += valid.sum()
        if "agreement" in ds:
            agree_counts += np.bincount(one("agreement", w).astype(np.int64).ravel(), minlength=agree_counts.size)
        if "main_error" not in ds or ref_ds is None:
            continue
        err = one("main_error", w)
        keep = err != (ERROR_NODATA if seg else FLOAT_NODATA)
        ref_raw = ref_ds.GetRasterBand(labels_band).ReadAsArray(ox, oy + y, width, w[3])
        cols_now: dict[str, np.ndarray] = {"wrong": err}
        if seg:
            raw = ref_raw.astype(np.int64)
            ref = np.where((raw >= 0) & (raw < lut.size), lut[raw.clip(0, lut.size - 1)], -1)
            pred = lut[one("main", w).astype(np.int64).clip(0, lut.size - 1)].clip(0)
            keep &= ref >= 0
            confusion.update(np.where(keep, ref, -1).astype(np.int64), pred)
            cols_now["reference"] = ref
            if "entropy" in cols:
                cols_now["entropy"] = one("entropy", w)
            if "one_minus_confidence" in cols:
                cols_now["one_minus_confidence"] = 1.0 - one("confidence", w)
        else:
            cols_now["reference"] = ref_raw.astype(np.float64)
        if recon_keys:
            means = []
            for key in recon_keys:
                arr = ds[key].ReadAsArray(*w).astype(np.float64)
                arr[arr == FLOAT_NODATA] = np.nan
                means.append(arr[0])
                name = key[len("recon_error_"):]
                for b, band in zip(spec.aux_modality(name).bands, arr[1:]):
                    cols_now[f"{key}/{b.name}"] = band
            cols_now["recon_error_mean"] = np.mean(means, axis=0)
        if "error_score" in cols:
            s = one("error_score", w)
            s[s == FLOAT_NODATA] = np.nan
            cols_now["error_score"] = s
        if "combined" in cols:
            x = np.stack([cols_now["entropy"].ravel(), cols_now["one_minus_confidence"].ravel(),
                          cols_now["error_score"].ravel(), cols_now["recon_error_mean"].ravel()], axis=1)
            cols_now["combined"] = detector.score(x).reshape(err.shape)
        sample.add(cols_now, keep)

    stats: dict[str, Any] = {"model": spec.name, "variant": spec.variant, "task": spec.task,
                             "pixels_sampled": len(sample), "pixels_labelled": sample.seen}
    if confusion is not None and ref_ds is not None:  # without labels there is nothing to score
        stats["metrics"] = confusion.scores([c.name for c in spec.classes])
    if error_model:
        stats["threshold"] = error_model.get("threshold")
        stats["threshold_quantile"] = error_model.get("threshold_quantile")
    if "agreement" in ds:
        total = agree_counts[1:].sum()
        stats["agreement"] = {label: {"pixels": int(agree_counts[v]),
                                      "fraction": float(agree_counts[v] / total) if total else float("nan")}
                              for v, label, _ in AGREEMENT_CLASSES}
    stats["sensitivity"] = {
        key: {f"{m.name}/{b.name}": float(t / c) if c else float("nan")
              for (m, b), t, c in zip([(m, b) for m in spec.inputs for b in m.bands], total, count)}
        for key, (total, count) in sens.items()
    }
    if len(sample) and seg:
        wrong = sample["wrong"]
        names = {i: c.name for i, c in enumerate(spec.classes)}
        detectors = {}
        for col in cols[2:]:
            d = detector_stats(sample[col], wrong)
            d["auroc_per_class"] = per_group(lambda s, w_: detector_stats(s, w_)["auroc"], sample["reference"],
                                             names, sample[col], wrong)
            d["spearman_per_class"] = per_group(spearman, sample["reference"], names, sample[col], wrong)
            detectors[col] = d
        stats["detectors"] = detectors
    elif len(sample):  # regression: how reconstruction errors follow the absolute error
        stats["correlations"] = {col: {"spearman": spearman(sample[col], sample["wrong"])} for col in cols[2:]}
    return stats


def explain(
    model_path: str | os.PathLike,
    raster_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    opts: PredictOptions,
    progress: bool | Callable[[float], None] = False,
    cancelled: Callable[[], bool] | None = None,
    sample_pixels: int = 1_000_000,
    seed: int = 0,
) -> ExplainResult:
    """Write every explanation layer of a model on a raster, the statistics and a self-contained HTML report.

    Args:
        model_path: model file (``mtl`` variant for reconstruction layers; baselines give entropy only).
        raster_path: raster with the model's input bands.
        out_dir: existing, writable folder for the layers and the report.
        opts: the engine's options, ground truth included (``aux_truth``: modality name -> raster of
            the real auxiliary bands; ``labels``: reference raster), both on the input raster's grid.
            Every option is honoured (extent, mask, products, COG …); ``main`` is always written,
            since the statistics score it.
        progress: True for a progress bar, or a callback receiving the fraction of prediction done.
        cancelled: polled between batches of tiles; when it returns True the run stops, writing nothing.
        sample_pixels: most pixels kept (uniform random sample) for rank statistics; the confusion
            matrix, agreement counts and sensitivity totals use every pixel.
        seed: seed of the pixel sample.

    Returns:
        The layers, the report files (``html``, ``json``, ``detectors_csv``, ``per_class_csv``) and the statistics.

    Raises:
        RasterError: unknown modality, wrong band count, raster on another grid, or output folder problems.
        CancelledError: the run was cancelled (no output file is left behind).
    """
    from .backends import read_spec
    from .fileio import check_outputs
    from .inference import labels_band_of, predict, run_inputs
    from .report import report_paths, write_report

    spec = read_spec(model_path)
    aux_truth = {k: str(v) for k, v in (opts.aux_truth or {}).items()}
    labels = str(opts.labels) if opts.labels else None
    if not Path(out_dir).is_dir():
        raise OutputError(f"output folder {str(out_dir)!r} does not exist; create it or choose another")
    check_outputs(report_paths(Path(out_dir), Path(raster_path).stem).values(), run_inputs(raster_path, opts),
                  opts.overwrite)
    products = tuple(dict.fromkeys(("main",) + tuple(opts.products)))
    popts = dataclasses.replace(opts, products=products, aux_truth=aux_truth or None, labels=labels)
    # Honest progress: the prediction is 90 % of the run, statistics and report the rest.
    phase = (lambda f: progress(0.9 * f)) if callable(progress) else progress
    result = predict(model_path, raster_path, out_dir, popts, progress=phase, cancelled=cancelled)
    if aux_truth and "error_score" not in result.outputs and spec.task == "segmentation":
        log.warning("the model file holds no error model (trained before explanation layers existed?): "
                    "no error score or agreement layer; retrain it with 'mtl train' to get them")
    band = labels_band_of(spec, opts.labels_band)
    stats = _stream_stats(spec, result.outputs, labels, sample_pixels, seed, labels_band=band)
    stats["inputs"] = {"model": str(model_path), "raster": str(raster_path), "aux_truth": aux_truth,
                       "labels": labels, "labels_band": band if labels else None, "device": result.device}
    report = write_report(spec, stats, result.outputs, Path(out_dir), Path(raster_path).stem)
    log.info("explanation report written to %s", report["html"])
    if callable(progress):
        progress(1.0)
    return ExplainResult(outputs=result.outputs, report=report, stats=stats, device=result.device, spec=spec)


def save_json(stats: dict, path: str | os.PathLike) -> None:
    """Write statistics as JSON (NaN written as null)."""
    from .jobs import json_safe

    Path(path).write_text(json.dumps(json_safe(stats), indent=2))

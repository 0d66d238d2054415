"""The explanation report: one self-contained HTML page (images inlined), plus the same numbers as JSON and CSV.

The page shows the main-task metrics and confusion matrix, the per-class table, the detector table
(each reconstruction-error formulation side by side with the baselines entropy and 1 - confidence
and with their combination), the error-agreement counts, sensitivity bar charts and small map
thumbnails with legends. Thumbnails are read from the output rasters at reduced resolution (GDAL
decimated reads), so the report never loads a whole raster.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

from ..io.fileio import atomic_path
from ..io.raster import band_values
from ..spec import ModelSpec

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 360

#: Colour map of the thumbnails of each style (the QGIS styles' ramps, as near as matplotlib has them).
STYLE_COLORMAPS = {"entropy": "magma", "confidence": "viridis", "error_score": "inferno", "reconstruction": "gray",
                   "sensitivity": "magma", "hillshade": "gray", "regression": "Spectral_r"}

DETECTOR_LABELS = {
    "entropy": "softmax entropy (baseline)",
    "one_minus_confidence": "1 - confidence (baseline)",
    "recon_error_mean": "reconstruction error, mean over bands",
    "error_score": "error score (class-conditional, from the training area)",
    "combined": "combination (logistic, fitted on validation blocks)",
}


def _label(col: str) -> str:
    if col in DETECTOR_LABELS:
        return DETECTOR_LABELS[col]
    if col.startswith("recon_error_"):
        return f"reconstruction error, band {col[len('recon_error_'):]}"
    return col


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def read_thumbnail(path: str | Path, band: int = 1, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """A band's values (scale and offset applied) at reduced resolution (longest side at most ``size``), nodata as
    NaN.

    Returns:
        (h, w) float64.
    """
    ds = gdal.Open(str(path))
    b = ds.GetRasterBand(band)
    scale = max(ds.RasterXSize, ds.RasterYSize) / size
    w, h = ds.RasterXSize, ds.RasterYSize
    if scale > 1:
        w, h = max(1, int(w / scale)), max(1, int(h / scale))
    return band_values(b, b.ReadAsArray(buf_xsize=w, buf_ysize=h, resample_alg=gdal.GRIORA_NearestNeighbour))


def _map_figure(arr: np.ndarray, title: str, categories: list[tuple[int, str, str]] | None = None,
                cmap: str = "viridis", units: str = "") -> str:
    """A thumbnail with a colour bar, or with a legend for categorical layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if categories:
        vmax = max(v for v, _, _ in categories)
        colors = ["#ffffff"] * (vmax + 1)
        for v, _, c in categories:
            colors[v] = c
        masked = np.ma.masked_invalid(arr)
        ax.imshow(masked, cmap=ListedColormap(colors), vmin=-0.5, vmax=vmax + 0.5, interpolation="nearest")
        present = set(np.unique(arr[np.isfinite(arr)]).astype(int))
        handles = [Patch(color=c, label=n) for v, n, c in categories if v in present]
        if handles:
            ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        finite = arr[np.isfinite(arr)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-6,
                       interpolation="nearest")
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.ax.tick_params(labelsize=7)
        if units:
            cb.set_label(units, fontsize=7)
    return _png(fig)


def _bar_figure(values: dict[str, float], title: str, ylabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names], color="#4a78a8")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def _confusion_figure(matrix: list[list[int]], names: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(rows > 0, m / rows, np.nan)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.imshow(np.ma.masked_invalid(frac), cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)))
    ax.set_yticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("reference", fontsize=8)
    ax.set_title("Confusion matrix (pixels; colour = row fraction)", fontsize=9)
    return _png(fig)


def report_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """The files :func:`write_report` writes: ``html``, ``json``, ``detectors_csv``, ``per_class_csv``."""
    return {"html": out_dir / f"{stem}_report.html", "json": out_dir / f"{stem}_report.json",
            "detectors_csv": out_dir / f"{stem}_detectors.csv", "per_class_csv": out_dir / f"{stem}_per_class.csv"}


class _SafeWriter:
    """A CSV writer whose text cells cannot start a spreadsheet formula (names come from the model file)."""

    def __init__(self, f) -> None:
        self.writer = csv.writer(f)

    def writerow(self, row: list[Any]) -> None:
        self.writer.writerow([f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
                              for v in row])


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _band_mean(band: gdal.Band) -> float:
    """A band's approximate mean, -inf when it holds no valid pixel (a run with no valid input)."""
    try:
        return band.ComputeStatistics(True)[2]
    except RuntimeError:  # "no valid pixels found"
        return -np.inf


def _thumbnails(spec: ModelSpec, outputs: dict[str, Path], layers: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(layer key, title, base64 png) for every layer written, drawn as its declaration says."""
    figs = []
    for key, path in outputs.items():
        layer = layers[key]
        title = f"{key} — {Path(path).name}"
        if layer.categories:
            figs.append((key, title, _map_figure(read_thumbnail(path), title, list(layer.categories))))
        elif layer.style == "sensitivity":
            ds = gdal.Open(str(path))
            means = [_band_mean(ds.GetRasterBand(i)) for i in range(1, ds.RasterCount + 1)]
            band = int(np.argmax(means)) + 1
            names = [f"{b.name}" for b in spec.input_bands]
            figs.append((key, f"{title}, band {names[band - 1]}",
                         _map_figure(read_thumbnail(path, band), f"{key}: {names[band - 1]} replaced", cmap="magma")))
        else:
            label = f"{key} band 1" if layer.bands > 1 else title
            figs.append((key, title, _map_figure(read_thumbnail(path), label,
                                                 cmap=STYLE_COLORMAPS.get(layer.style, "inferno"), units=layer.units)))
    return figs


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right} th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px} .card{width:340px;font-size:.8em} .card img{max-width:100%}
.note{color:#555;font-size:.85em}
"""


def detector_rows(stats: dict[str, Any]) -> list[list[Any]]:
    """Rows of the detector table: name, AUROC, Spearman, point-biserial, pixels, wrong pixels."""
    return [[_label(col), d["auroc"], d["spearman"], d["point_biserial"], d["n"], d["n_wrong"]]
            for col, d in stats.get("detectors", {}).items()]


def write_report(spec: ModelSpec, stats: dict[str, Any], outputs: dict[str, Path], layers: Mapping[str, Any],
                 out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>_report.html`` (self-contained), ``<stem>_report.json`` and two CSV tables.

    Args:
        spec: the model's spec (class names and colours, bands).
        stats: the statistics of the run (:class:`mtl_core.explain.sink.ExplainStats`).
        outputs: engine output keys -> raster paths (thumbnails are read from them).
        layers: output keys -> the engine's layer declarations (``help``, ``categories``, ``style``, ``units``,
            ``bands``), for captions and thumbnails.
        out_dir: existing output folder.
        stem: file name prefix.

    Returns:
        ``{"html", "json", "detectors_csv", "per_class_csv"}`` -> path.
    """
    paths = report_paths(out_dir, stem)
    try:
        _write_report(spec, stats, outputs, layers, paths)
    except BaseException:  # a report is its four files: keep none of them when one fails (a full disk…)
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise
    return paths


def _write_report(spec: ModelSpec, stats: dict[str, Any], outputs: dict[str, Path], layers: Mapping[str, Any],
                  paths: dict[str, Path]) -> None:
    """The report's JSON, CSV and HTML files (each written atomically)."""
    _write_tables(spec, stats, paths)
    parts = (_intro(spec, stats) + _main_task(spec, stats) + _detectors(spec, stats) + _extras(spec, stats)
             + _layers(spec, outputs, layers))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>MTL Explain report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(page, encoding="utf-8")


def _write_tables(spec: ModelSpec, stats: dict[str, Any], paths: dict[str, Path]) -> None:
    """The statistics as JSON, the detectors and the per-class scores as CSV."""
    from ..io.fileio import save_json

    with atomic_path(paths["json"]) as tmp:
        save_json(stats, tmp)
    class_names = [c.name for c in spec.classes]
    det = stats.get("detectors", {})
    with atomic_path(paths["detectors_csv"]) as tmp, open(tmp, "w", newline="") as f:
        w = _SafeWriter(f)
        w.writerow(["detector", "auroc", "spearman", "point_biserial", "pixels", "wrong_pixels"]
                   + [f"auroc_{n}" for n in class_names])
        for col, d in det.items():
            w.writerow([col, d["auroc"], d["spearman"], d["point_biserial"], d["n"], d["n_wrong"]]
                       + [d["auroc_per_class"].get(n) for n in class_names])
    metrics = stats.get("metrics", {})
    per_class = metrics.get("per_class", {})
    with atomic_path(paths["per_class_csv"]) as tmp, open(tmp, "w", newline="") as f:
        w = _SafeWriter(f)
        cols = [c for c in ("error_score", "recon_error_mean", "entropy") if c in det]
        w.writerow(["class", "pixels", "iou", "f1"] + [f"{k}_{c}" for c in cols for k in ("auroc", "spearman")])
        for n in class_names:
            pc = per_class.get(n, {})
            w.writerow([n, pc.get("pixels"), pc.get("iou"), pc.get("f1")]
                       + [det[c][k].get(n) for c in cols for k in ("auroc_per_class", "spearman_per_class")])


def _intro(spec: ModelSpec, stats: dict[str, Any]) -> list[str]:
    """The title and the notes on what was scored and how."""
    unit = stats.get("unit", "pixels")
    parts = [f"<h1>MTL Explain report — {html.escape(spec.name)}</h1>",
             f"<p class='note'>Model {html.escape(str(stats.get('inputs', {}).get('model', '')))} "
             f"({spec.variant}, {spec.task}) on {html.escape(str(stats.get('inputs', {}).get('raster', '')))}. "
             f"Labelled {unit}: {stats.get('pixels_labelled', 0)}; rank statistics on a uniform sample of "
             f"{stats.get('pixels_sampled', 0)}.</p>"]
    scored = stats.get("scored") or {}
    if scored.get("blocks") is not None:
        parts.append(f"<p class='note'>Scored: the {html.escape(str(scored['split']))} blocks of the model's own "
                     f"split, {scored['blocks']} of {scored['of']} blocks of {scored['block_size']} px; the layers "
                     "cover the whole extent.</p>")
    warped = stats.get("inputs", {}).get("warped")
    if warped:
        parts.append(f"<p class='note'>Warped onto the input grid as training aligns its rasters: "
                     f"{html.escape('; '.join(warped))}.</p>")
    if scored.get("warning"):
        parts.append(f"<p class='note'><b>Note:</b> {html.escape(scored['warning'])}.</p>")
    for warning in stats.get("warnings", []):  # the prediction's own (e.g. an input unlike the training data)
        parts.append(f"<p><b>Warning:</b> {html.escape(warning)}.</p>")
    if spec.task == "classification":
        parts.append("<p class='note'>Patch classification is scored per cell: a cell is right when its class is "
                     "the majority label of its labelled pixels (as training builds its targets). Reconstruction "
                     "errors are per pixel, so only entropy and confidence are scored as detectors of wrong "
                     "cells.</p>")
    if spec.task == "regression":
        parts.append("<p class='note'>A regression has no right or wrong pixel: scores are compared with the "
                     "absolute error (Spearman correlation), and there is no agreement map.</p>")
    if not stats.get("inputs", {}).get("labels"):
        parts.append("<p class='note'>No reference labels were given, so nothing here scores the main task: no "
                     "accuracy and no error detection. The layers show the reconstruction, its error against the "
                     "real modality and the sensitivity; give labels (--labels) for the rest.</p>")
    return parts


def _main_task(spec: ModelSpec, stats: dict[str, Any]) -> list[str]:
    """The main task's scores."""
    class_names = [c.name for c in spec.classes]
    metrics = stats.get("metrics", {})
    parts: list[str] = []
    if metrics and "rmse" in metrics:
        parts.append("<h2>Main task</h2>")
        units = html.escape(str(metrics.get("units") or ""))
        parts.append(_table([f"RMSE ({units})", f"MAE ({units})", "R²", "pixels"],
                            [[metrics["rmse"], metrics["mae"], metrics["r2"], metrics["pixels"]]]))
    elif metrics:
        parts.append("<h2>Main task</h2>")
        parts.append(_table(["overall accuracy", "mIoU", "macro F1"],
                            [[metrics["overall_accuracy"], metrics["miou"], metrics["macro_f1"]]]))
        parts.append(f"<img alt='confusion matrix' src='data:image/png;base64,"
                     f"{_confusion_figure(metrics['confusion_matrix'], class_names)}'>")
    return parts


def _detectors(spec: ModelSpec, stats: dict[str, Any]) -> list[str]:
    """How well each score detects the main task's errors, overall, among confident pixels and per class."""
    class_names = [c.name for c in spec.classes]
    unit = stats.get("unit", "pixels")
    det = stats.get("detectors", {})
    metrics = stats.get("metrics", {})
    per_class = metrics.get("per_class", {})
    parts: list[str] = []
    if det:
        parts.append("<h2>Do reconstruction errors explain main-task errors?</h2>")
        parts.append(f"<p class='note'>Each row scores {unit}; AUROC is the probability that a wrongly classified "
                     f"{unit[:-1]} scores higher than a correct one (0.5 = chance, 1 = perfect). Spearman and "
                     "point-biserial: correlation of the score with the 0/1 error. Baselines first.</p>")
        order = sorted(det, key=lambda c: (c not in ("entropy", "one_minus_confidence"), c == "combined"))
        parts.append(_table(["detector", "AUROC", "Spearman", "point-biserial", "pixels", "wrong"],
                            detector_rows({"detectors": {c: det[c] for c in order}})))
        confident = stats.get("confident")
        if confident and confident["wrong"]:
            parts.append(f"<h3>Errors the model is confident about</h3><p class='note'>Among the most confident half "
                         f"of the {unit} (confidence at least {_fmt(confident['confidence_at_least'])}: "
                         f"{confident['pixels']} {unit}, {confident['wrong']} of them wrong): each score's AUROC "
                         f"there, and the share of those confident errors it flags when its threshold lets "
                         f"{_fmt(100 * confident['false_alarm'], 0)} % of the confident correct {unit} through. "
                         "This is what a score adds to the model's own confidence.</p>")
            parts.append(_table(["detector", "AUROC (confident)", "confident errors caught"],
                                [[_label(c), d["auroc"], d["caught"]] for c, d in confident["detectors"].items()]))
            per = {n: d for n, d in confident.get("per_class", {}).items() if d["wrong"]}
            if per:
                cols = list(confident["detectors"])
                parts.append(f"<p class='note'>The same per reference class (confident {unit} of that class, at "
                             "the same confidence level): the share of its confident errors each score catches "
                             "(– where the class has no confident correct one).</p>")
                parts.append(_table(["class", f"confident {unit}", "wrong"] + [f"caught: {_label(c)}" for c in cols],
                                    [[n, d["pixels"], d["wrong"]] + [d["detectors"][c]["caught"] for c in cols]
                                     for n, d in per.items()]))
        parts.append("<h3>Per reference class</h3><p class='note'>AUROC within the pixels of each reference "
                     "class (– where the class has no error or no correct pixel), and the class's IoU.</p>")
        rows = []
        for n in class_names:
            pc = per_class.get(n, {})
            rows.append([n, pc.get("pixels"), pc.get("iou")] + [det[c]["auroc_per_class"].get(n) for c in order])
        parts.append(_table(["class", "pixels", "IoU"] + [f"AUROC {c}" for c in order], rows))
    elif per_class:
        parts.append(_table(["class", "pixels", "IoU", "F1"],
                            [[n, d["pixels"], d["iou"], d["f1"]] for n, d in per_class.items()]))
    return parts


def _extras(spec: ModelSpec, stats: dict[str, Any]) -> list[str]:
    """The error agreement, the correlations of a regression and the sensitivity."""
    parts: list[str] = []
    if "agreement" in stats:
        parts.append("<h2>Error agreement</h2>")
        parts.append(f"<p class='note'>'Reconstruction bad' = error score above {_fmt(stats.get('threshold'))}, "
                     f"the {_fmt(stats.get('threshold_quantile'), 2)} quantile of the score on the training "
                     "area.</p>")
        parts.append(_table(["class", "pixels", "fraction"],
                            [[k, v["pixels"], v["fraction"]] for k, v in stats["agreement"].items()]))
    if stats.get("correlations"):
        parts.append("<h2>Reconstruction error vs absolute main-task error</h2>")
        parts.append(_table(["score", "Spearman"], [[_label(k), v["spearman"]]
                                                    for k, v in stats["correlations"].items()]))
    if stats.get("sensitivity"):
        parts.append("<h2>Sensitivity to each input band</h2><p class='note'>Mean change of each output when one "
                     "input band is replaced by its training mean.</p><div class='grid'>")
        for key, values in stats["sensitivity"].items():
            if key != "sensitivity":
                what = f"reconstruction of {key[len('sensitivity_'):]} (normalised units)"
            elif spec.task == "regression":
                what = f"predicted {spec.target.name} (training standard deviations)"
            else:
                what = "class probabilities (total variation)"
            parts.append(f"<div class='card'><img alt='{html.escape(key)}' src='data:image/png;base64,"
                         f"{_bar_figure(values, key, what)}'></div>")
        parts.append("</div>")
    return parts


def _layers(spec: ModelSpec, outputs: dict[str, Path], layers: Mapping[str, Any]) -> list[str]:
    """A thumbnail card per layer."""
    parts: list[str] = []
    parts.append("<h2>Layers</h2><div class='grid'>")
    for key, title, png in _thumbnails(spec, outputs, layers):
        parts.append(f"<div class='card'><b>{html.escape(key)}</b> — {html.escape(layers[key].title)}<br>"
                     f"<img alt='{html.escape(key)}' "
                     f"src='data:image/png;base64,{png}'><br>{html.escape(layers[key].help)}<br>"
                     f"<code>{html.escape(Path(outputs[key]).name)}</code></div>")
    parts.append("</div>")
    return parts

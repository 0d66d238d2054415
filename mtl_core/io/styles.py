"""QML styles fitted to a raster file: a template from ``resources/styles`` with the data's classes, ranges and bands.

No QGIS is needed: a style is XML. Which template and range a layer gets is the engine's declaration of its
product (:mod:`mtl_core.engine.styles`); what depends on the file is fitted here: the model's classes (paletted
renderer), value ranges (2–98 % cut of the values QGIS shows, estimated from at most 250,000 pixels read through
the overviews), and the band combination of reconstructions.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from osgeo import gdal

from .fileio import atomic_path

log = logging.getLogger(__name__)

#: The folder of QML templates: ``resources/styles`` beside ``mtl_core`` (a checkout and the plugin's zip).
STYLES_DIR = Path(__file__).resolve().parents[2] / "resources" / "styles"
#: Pixels read to estimate a band's 2–98 % range (QGIS's own estimate reads as many).
SAMPLE_PIXELS = 250_000


def rgb_bands(names: list[str]) -> tuple[int, int, int]:
    """A band combination (1-based) for an RGB view: true colour by name when possible, else 1-2-3.

    Two bands are shown as (2, 1, 1)-style false colour so both bands stay visible.
    """
    lower = [n.lower() for n in names]
    by_name = [next((i + 1 for i, n in enumerate(lower) if colour in n), 0) for colour in ("red", "green", "blue")]
    if all(by_name):
        return tuple(by_name)  # type: ignore[return-value]
    if len(names) >= 3:
        return 1, 2, 3
    if len(names) == 2:
        return 2, 1, 1
    return 1, 1, 1


def cut(ds: gdal.Dataset, band: int) -> tuple[float, float] | None:
    """The 2–98 % range of a band in the values QGIS shows (the stored integers through the band's scale and
    offset, as GDAL and QGIS apply them), from a decimated read (overviews where the file has them), or None when
    the band holds no valid pixel."""
    b = ds.GetRasterBand(band)
    scale = max(1.0, math.sqrt(ds.RasterXSize * ds.RasterYSize / SAMPLE_PIXELS))
    data = b.ReadAsArray(buf_xsize=max(1, int(ds.RasterXSize / scale)), buf_ysize=max(1, int(ds.RasterYSize / scale)))
    values = data[np.isfinite(data)] if data.dtype.kind == "f" else data.ravel()
    nodata = b.GetNoDataValue()
    if nodata is not None:
        values = values[values != nodata]
    if values.size == 0:
        return None
    gain, offset = b.GetScale() or 1.0, b.GetOffset() or 0.0
    lo, hi = sorted(float(v) * gain + offset for v in np.percentile(values, [2, 98]))
    return lo, max(hi, lo + 1e-6)


def _number(value: float) -> str:
    return f"{value:.6g}"


def _fit_classes(renderer: ElementTree.Element, ds: gdal.Dataset, spec: dict | None) -> None:
    """The model's classes (else the raster's own colour table) as the palette."""
    classes = [(int(c["value"]), c.get("color", "#808080"), str(c["name"])) for c in (spec or {}).get("classes") or []]
    if not classes:
        band = ds.GetRasterBand(1)
        table, names = band.GetRasterColorTable(), band.GetCategoryNames() or []
        for value in range(table.GetCount() if table is not None else 0):
            name = names[value] if value < len(names) else ""
            if name and value != band.GetNoDataValue():
                classes.append((value, "#{:02x}{:02x}{:02x}".format(*table.GetColorEntry(value)[:3]), name))
    palette = renderer.find("colorPalette")
    if palette is None:
        palette = ElementTree.SubElement(renderer, "colorPalette")
    for entry in list(palette):
        palette.remove(entry)
    for value, colour, name in classes:
        ElementTree.SubElement(palette, "paletteEntry", value=str(value), color=colour, label=name, alpha="255")


def _stretch(enhancement: ElementTree.Element | None, rng: tuple[float, float]) -> None:
    if enhancement is not None:
        enhancement.find("minValue").text = _number(rng[0])
        enhancement.find("maxValue").text = _number(rng[1])


def _fit_range(renderer: ElementTree.Element, ds: gdal.Dataset) -> None:
    """Stretch the template's colour ramp (or grey) over the data's 2–98 % range; the legend's labels follow."""
    rng = cut(ds, 1)
    if rng is None:
        return
    lo, hi = rng
    shader = renderer.find("rastershader/colorrampshader")
    if shader is not None:
        old_lo, old_hi = float(shader.get("minimumValue")), float(shader.get("maximumValue"))
        span = (old_hi - old_lo) or 1.0
        for item in shader.findall("item"):
            value = lo + (float(item.get("value")) - old_lo) / span * (hi - lo)
            item.set("value", _number(value))
            item.set("label", f"{value:.4g}")
        shader.set("minimumValue", _number(lo))
        shader.set("maximumValue", _number(hi))
        renderer.set("classificationMin", _number(lo))
        renderer.set("classificationMax", _number(hi))
    _stretch(renderer.find("contrastEnhancement"), rng)


def _fit_bands(renderer: ElementTree.Element, ds: gdal.Dataset, spec: dict | None, key: str) -> None:
    """RGB stretch of a reconstruction, each band over its 2–98 % range."""
    names = [ds.GetRasterBand(i).GetDescription() or f"Band {i}" for i in range(1, ds.RasterCount + 1)]
    for m in (spec or {}).get("aux", []):
        if key == f"aux_{m['name']}" and len(m["bands"]) == ds.RasterCount:
            names = [b["name"] for b in m["bands"]]
    for colour, band in zip(("red", "green", "blue"), rgb_bands(names)):
        renderer.set(f"{colour}Band", str(band))
        rng = cut(ds, band)
        if rng is not None:
            _stretch(renderer.find(f"{colour}ContrastEnhancement"), rng)


def fit_template(raster: str | os.PathLike, name: str, mode: str, spec: dict | None = None,
                 key: str = "") -> str | None:
    """The QML template ``name`` fitted to the raster at ``raster``: the model's classes (``mode`` "classes"), the
    data's range ("data"), or each band of an RGB view; None when the template is missing (a copy of ``mtl_core``
    without ``resources/``).

    Args:
        raster: a GeoTIFF (or VRT) output of a run.
        name, mode: the template and how its range is set (the product's declaration).
        spec: the model spec as a dict (``ModelSpec.to_dict()``), for class names, colours and band names.
        key: the product key (an RGB view of a reconstruction names its bands from the spec).
    """
    ds = gdal.Open(str(raster))
    template = STYLES_DIR / f"{name}.qml"
    if not template.is_file():
        log.warning("style template %s is missing; %s gets no style", template, Path(raster).name)
        return None
    text = template.read_text(encoding="utf-8")
    doctype = text.split("\n", 1)[0] if text.startswith("<!DOCTYPE") else ""
    root = ElementTree.fromstring(text)  # nosec B314: our own template from resources/styles, not outside input
    renderer = root.find("pipe/rasterrenderer")
    if mode == "classes":
        _fit_classes(renderer, ds, spec)
    elif renderer.get("type") == "multibandcolor":
        _fit_bands(renderer, ds, spec, key)
    elif mode == "data":
        _fit_range(renderer, ds)
    return (doctype + "\n" if doctype else "") + ElementTree.tostring(root, encoding="unicode") + "\n"


def write_qml(raster: str | os.PathLike, qml: str) -> Path | None:
    """Write ``<raster>.qml`` (replacing an earlier one, which belongs to the same output); None when the folder
    cannot be written (said in the log)."""
    path = Path(raster).with_suffix(".qml")
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(qml, encoding="utf-8")
    except OSError as exc:
        log.warning("style %s not written (%s)", path, exc)
        return None
    return path

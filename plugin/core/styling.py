"""Styling of output layers: a QML template per product from ``resources/styles``, fitted to the data.

Which template and range a layer gets is the engine's declaration of it (``mtl_core.engine.products``).
The template gives the renderer type and colour ramp; what depends on the run is fitted here: the
class list of the model (paletted renderer with the model's names and colours), value ranges
(2–98 % cumulative cut, or fixed for probabilities), and the band combination of reconstructions.
Unknown product keys get a sensible default: pseudo-colour for one band, an RGB stretch for several.
Runs on the main thread (it touches layers).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsSingleBandGrayRenderer,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtGui import QColor

from .logger import get_logger
from .paths import styles_dir

log = get_logger()


def layer_info(key: str, spec: dict | None):
    """The engine's declaration of an output layer (``mtl_core.engine.product.Layer``: title, style, range …)
    for a product key and a model spec as a dict, or None for a key the model cannot produce."""
    if not spec:
        return None
    from mtl_core.engine.products import layer_for_key
    from mtl_core.spec import ModelSpec

    try:
        return layer_for_key(ModelSpec.from_dict(spec), key)
    except Exception:  # noqa: BLE001 — a spec this version cannot read: style by band count instead
        log.warning("the model's spec cannot be read; layer %s gets a default style", key)
        return None


def title(key: str, spec: dict | None = None) -> str:
    """Layer name of a product key, e.g. ``aux_swir`` -> ``swir (reconstructed)``, from the engine's registry,
    through Qt's translation (context ``MtlExplainProducts``: the registry's English title is the source text)."""
    from qgis.PyQt.QtCore import QCoreApplication

    info = layer_info(key, spec)
    text = info.title if info is not None else key.replace("_", " ").capitalize()
    return QCoreApplication.translate("MtlExplainProducts", text)


def template_for(key: str, layer: QgsRasterLayer, spec: dict | None) -> tuple[str, str]:
    """The (QML name, range mode) for a product key; unknown keys get a default by band count."""
    info = layer_info(key, spec)
    if info is not None:
        return info.style, info.range
    return ("reconstruction", "data") if layer.bandCount() > 1 else ("continuous", "data")


def apply_style(layer: QgsRasterLayer, key: str, spec: dict | None = None) -> str:
    """Style an output layer for its product key; returns the renderer type set.

    Args:
        layer: a valid raster layer of one product.
        key: the product key (``main``, ``confidence``, ``aux_swir`` …).
        spec: the model spec as a dict (``ModelSpec.to_dict()``), for class names and colours.
    """
    name, mode = template_for(key, layer, spec)
    qml = styles_dir() / f"{name}.qml"
    if name == "reconstruction" and layer.bandCount() == 1:
        qml = styles_dir() / "reconstruction_gray.qml"
    if qml.exists():
        message, ok = layer.loadNamedStyle(str(qml))
        if not ok:
            log.warning("style %s could not be loaded (%s); using QGIS's default", qml.name, message)
    else:
        log.warning("style %s is missing from the plugin; using QGIS's default", qml)
    if mode == "classes":
        _fit_classes(layer, spec)
    elif name == "reconstruction":
        _fit_bands(layer, spec, key)
    elif mode == "data":
        _fit_range(layer)
    layer.triggerRepaint()
    return layer.renderer().type() if layer.renderer() else ""


def save_sidecar(layer: QgsRasterLayer) -> Path | None:
    """Write the layer's style next to its file (``<name>.qml``), which QGIS loads whenever the raster is
    added by hand or exported; returns the file, or None when the folder is not writable."""
    path = Path(layer.source()).with_suffix(".qml")
    message, ok = layer.saveNamedStyle(str(path))
    if not ok:
        log.warning("style sidecar %s not written (%s)", path, message)
        return None
    return path


def _fit_classes(layer: QgsRasterLayer, spec: dict | None) -> None:
    """Paletted renderer with the model's classes; falls back to the raster's own colour table."""
    classes = (spec or {}).get("classes") or []
    if classes:
        items = [QgsPalettedRasterRenderer.Class(int(c["value"]), QColor(c.get("color", "#808080")), str(c["name"]))
                 for c in classes]
    else:
        items = QgsPalettedRasterRenderer.colorTableToClassData(layer.dataProvider().colorTable(1))
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, items)
    old = layer.renderer()
    if old is not None:
        renderer.setOpacity(old.opacity())
    layer.setRenderer(renderer)


def _cut(layer: QgsRasterLayer, band: int) -> tuple[float, float] | None:
    """2–98 % cumulative cut of a band (estimated from a sample), or None when the band is empty."""
    provider = layer.dataProvider()
    try:
        lo, hi = provider.cumulativeCut(band, 0.02, 0.98, layer.extent(), 250000)
    except Exception:  # noqa: BLE001 — statistics are a nicety; never fail the run for them
        return None
    if lo != lo or hi != hi:  # NaN: every pixel is nodata
        return None
    if hi <= lo:
        hi = lo + 1e-6
    return float(lo), float(hi)


def _fit_range(layer: QgsRasterLayer) -> None:
    """Stretch the template's colour ramp (or grey) over the data's 2–98 % range."""
    renderer = layer.renderer()
    rng = _cut(layer, 1)
    if rng is None:
        return
    lo, hi = rng
    if isinstance(renderer, QgsSingleBandPseudoColorRenderer):
        fn = renderer.shader().rasterShaderFunction()
        old_lo, old_hi = fn.minimumValue(), fn.maximumValue()
        span = (old_hi - old_lo) or 1.0
        items = fn.colorRampItemList()
        for item in items:
            item.value = lo + (item.value - old_lo) / span * (hi - lo)
        fn.setColorRampItemList(items)
        fn.setMinimumValue(lo)
        fn.setMaximumValue(hi)
        renderer.setClassificationMin(lo)
        renderer.setClassificationMax(hi)
    elif isinstance(renderer, QgsSingleBandGrayRenderer):
        ce = QgsContrastEnhancement(layer.dataProvider().dataType(1))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        ce.setMinimumValue(lo)
        ce.setMaximumValue(hi)
        renderer.setContrastEnhancement(ce)


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


def _fit_bands(layer: QgsRasterLayer, spec: dict | None, key: str) -> None:
    """RGB (or grey) stretch of a reconstruction, each band over its 2–98 % range."""
    provider = layer.dataProvider()
    n = layer.bandCount()
    names = [provider.generateBandName(i) for i in range(1, n + 1)]
    for m in (spec or {}).get("aux", []):
        if key == f"aux_{m['name']}":
            names = [b["name"] for b in m["bands"]]
    if n == 1:
        _fit_range(layer)
        return
    r, g, b = rgb_bands(names)
    renderer = QgsMultiBandColorRenderer(provider, r, g, b)
    for band, setter in ((r, renderer.setRedContrastEnhancement), (g, renderer.setGreenContrastEnhancement),
                         (b, renderer.setBlueContrastEnhancement)):
        ce = QgsContrastEnhancement(provider.dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        rng = _cut(layer, band)
        if rng:
            ce.setMinimumValue(rng[0])
            ce.setMaximumValue(rng[1])
        setter(ce)
    layer.setRenderer(renderer)


def style_path(name: str) -> Path:
    """Path of a QML template by name (e.g. ``agreement``)."""
    return styles_dir() / f"{name}.qml"

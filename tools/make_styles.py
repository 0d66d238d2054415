"""Write the plugin's QML styles (``resources/styles/*.qml``) from PyQGIS renderers, reproducibly.

Run by ``make styles``. Each style is a template: the plugin loads it onto an output layer, then fits
what depends on the data (class list, value range, band combination) in ``plugin/core/styling.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsPalLayerSettings,
    QgsRendererCategory,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsMapLayer,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandGrayRenderer,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
)
from qgis.PyQt.QtGui import QColor

from mtl_core.explain.scores import AGREEMENT_CLASSES, CONFIDENT_FLAGGED_CLASSES, MAIN_ERROR_CLASSES
from mtl_core.explain.sites import KINDS

MIN_MAX = QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum

OUT = Path(__file__).resolve().parent.parent / "resources" / "styles"

#: name -> (colour ramp in QGIS's default style, inverted, min, max)
PSEUDO = {
    "regression": ("Spectral", True, 0.0, 1.0),
    "confidence": ("RdYlGn", False, 0.0, 1.0),
    "entropy": ("Inferno", False, 0.0, 1.0),
    "probabilities": ("Viridis", False, 0.0, 1.0),
    "error": ("YlOrRd", False, 0.0, 1.0),
    "error_score": ("Magma", False, 0.0, 1.0),
    "sensitivity": ("Viridis", False, 0.0, 1.0),
    "continuous": ("Viridis", False, 0.0, 1.0),
}
#: name -> [(value, colour, label)]
PALETTED = {
    "classes": [(1, "#d7191c", "class 1"), (2, "#2b83ba", "class 2")],
    # The explanation layers' palettes come from mtl_core, which also writes them into the GeoTIFFs.
    "main_error": [(v, color, label) for v, label, color in MAIN_ERROR_CLASSES],
    "agreement": [(v, color, label) for v, label, color in AGREEMENT_CLASSES],
    "confident_flagged": [(v, color, label) for v, label, color in CONFIDENT_FLAGGED_CLASSES],
}


def _layer(folder: Path, bands: int) -> QgsRasterLayer:
    path = folder / f"template_{bands}.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 4, 4, bands, gdal.GDT_Float32)
    ds.SetGeoTransform((0, 1, 0, 4, 0, -1))
    ds = None
    return QgsRasterLayer(str(path), path.stem)


def _pseudo(layer: QgsRasterLayer, ramp_name: str, invert: bool, lo: float, hi: float) -> None:
    ramp = QgsStyle.defaultStyle().colorRamp(ramp_name)
    if invert:
        ramp.invert()
    fn = QgsColorRampShader(lo, hi, ramp, QgsColorRampShader.Type.Interpolated,
                            QgsColorRampShader.ClassificationMode.Continuous)
    fn.classifyColorRamp(5, -1)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(fn)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(lo)
    renderer.setClassificationMax(hi)
    layer.setRenderer(renderer)


#: Outline colour of each kind of proposed site (mtl_core.explain.sites.KINDS).
SITE_COLORS = {"uncertain": "#ff7f00", "flagged": "#7b3294", "likely_wrong": "#e31a1c", "random": "#636363"}


def _sites() -> QgsVectorLayer:
    """Proposed sites: squares outlined by kind, labelled with their rank."""
    layer = QgsVectorLayer("Polygon?field=rank:integer&field=kind:string", "sites", "memory")
    cats = []
    for kind, label in KINDS.items():
        symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": SITE_COLORS[kind],
                                             "outline_width": "0.8", "outline_width_unit": "MM"})
        cats.append(QgsRendererCategory(kind, symbol, label))
    layer.setRenderer(QgsCategorizedSymbolRenderer("kind", cats))
    text = QgsTextFormat()
    text.setSize(10)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    text.setBuffer(buffer)
    settings = QgsPalLayerSettings()
    settings.fieldName = "rank"
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
    return layer


def _save(layer: QgsMapLayer, name: str) -> None:
    categories = QgsMapLayer.StyleCategory.Symbology | QgsMapLayer.StyleCategory.Rendering
    if isinstance(layer, QgsVectorLayer):
        categories |= QgsMapLayer.StyleCategory.Labeling
    message, ok = layer.saveNamedStyle(str(OUT / f"{name}.qml"), categories)
    if not ok:
        raise RuntimeError(f"cannot write style {name}: {message}")


def main() -> int:
    """Write every style; returns the process exit status."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QgsApplication([], False)
    app.initQgis()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (ramp, invert, lo, hi) in PSEUDO.items():
            layer = _layer(folder, 1)
            _pseudo(layer, ramp, invert, lo, hi)
            _save(layer, name)
        for name, classes in PALETTED.items():
            layer = _layer(folder, 1)
            items = [QgsPalettedRasterRenderer.Class(v, QColor(c), label) for v, c, label in classes]
            layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, items))
            _save(layer, name)
        layer = _layer(folder, 3)
        renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 1, 2, 3)
        for band, setter in ((1, renderer.setRedContrastEnhancement), (2, renderer.setGreenContrastEnhancement),
                             (3, renderer.setBlueContrastEnhancement)):
            ce = QgsContrastEnhancement(layer.dataProvider().dataType(band))
            ce.setContrastEnhancementAlgorithm(MIN_MAX)
            setter(ce)
        layer.setRenderer(renderer)
        _save(layer, "reconstruction")
        layer = _layer(folder, 1)
        gray = QgsSingleBandGrayRenderer(layer.dataProvider(), 1)
        ce = QgsContrastEnhancement(layer.dataProvider().dataType(1))
        ce.setContrastEnhancementAlgorithm(MIN_MAX)
        gray.setContrastEnhancement(ce)
        layer.setRenderer(gray)
        _save(layer, "reconstruction_gray")
        layer = _layer(folder, 1)  # hillshade: grey over its fixed 1..255 range (0 is nodata)
        gray = QgsSingleBandGrayRenderer(layer.dataProvider(), 1)
        ce = QgsContrastEnhancement(layer.dataProvider().dataType(1))
        ce.setContrastEnhancementAlgorithm(MIN_MAX)
        ce.setMinimumValue(1)
        ce.setMaximumValue(255)
        gray.setContrastEnhancement(ce)
        layer.setRenderer(gray)
        _save(layer, "hillshade")
        _save(_sites(), "sites")
        del layer
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())

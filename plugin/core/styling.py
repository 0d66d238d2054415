"""Styling of output layers: the fitted QML of ``mtl_core.engine.styles``, written beside the file and loaded.

The style a layer gets is the one ``mtl predict``/``mtl explain`` write beside their outputs (one source for
every front end): a template from ``resources/styles`` per product, fitted to the run's classes, value
ranges and band names. Writing it beside the raster (``<name>.qml``) means QGIS styles the file the same way
whenever it is added again, by hand or exported. Runs on the main thread (it touches layers).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qgis.core import QgsRasterLayer

from mtl_core.engine.styles import fitted_qml, layer_info, write_sidecar

from .logger import get_logger

log = get_logger()


def title(key: str, spec: dict | None = None) -> str:
    """Layer name of a product key, e.g. ``aux_swir`` -> ``swir (reconstructed)``, from the engine's registry,
    through Qt's translation (context ``MtlExplainProducts``: the registry's English title is the source text)."""
    from qgis.PyQt.QtCore import QCoreApplication

    info = layer_info(key, spec)
    text = info.title if info is not None else key.replace("_", " ").capitalize()
    return QCoreApplication.translate("MtlExplainProducts", text)


def apply_style(layer: QgsRasterLayer, key: str, spec: dict | None = None) -> str:
    """Style an output layer for its product key (and write the style beside its file); returns the renderer
    type set.

    Args:
        layer: a valid raster layer of one product, read from a file.
        key: the product key (``main``, ``confidence``, ``aux_swir`` …).
        spec: the model spec as a dict (``ModelSpec.to_dict()``), for class names, colours and band names.
    """
    source = Path(layer.source())
    qml = write_sidecar(source, key, spec)
    if qml is not None:
        _load(layer, qml)
    elif (text := fitted_qml(source, key, spec)) is not None:  # a folder we cannot write: style the layer only
        fd, tmp = tempfile.mkstemp(suffix=".qml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            _load(layer, Path(tmp))
        finally:
            os.unlink(tmp)
    layer.triggerRepaint()
    return layer.renderer().type() if layer.renderer() else ""


def _load(layer: QgsRasterLayer, qml: Path) -> None:
    message, ok = layer.loadNamedStyle(str(qml))
    if not ok:
        log.warning("style %s could not be loaded (%s); using QGIS's default", qml.name, message)

"""Each product's QGIS style: the engine's declaration of a layer (template, range) fitted to its file.

One source for every front end: ``mtl predict``/``mtl explain`` write ``<output>.qml`` beside each GeoTIFF (QGIS
loads it whenever the raster is added, by hand or otherwise) and the plugin loads the same fitted file onto the
layers it adds. Unknown product keys get a default: pseudo-colour for one band, an RGB stretch for several.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from osgeo import gdal

from ..io.styles import fit_template, write_qml
from .products import layer_for_key

log = logging.getLogger(__name__)


def layer_info(key: str, spec: dict | None):
    """The engine's declaration of output ``key`` (title, style, range …) for a model spec as a dict, or None
    for a key the model cannot produce or a spec this version cannot read."""
    if not spec:
        return None
    from ..spec import ModelSpec

    try:
        return layer_for_key(ModelSpec.from_dict(spec), key)
    except Exception:  # noqa: BLE001 — a spec this version cannot read: style by band count instead
        log.warning("the model's spec cannot be read; layer %s gets a default style", key)
        return None


def template_for(key: str, bands: int, spec: dict | None) -> tuple[str, str]:
    """The (QML template name, range mode) of a product key for a raster of ``bands`` bands."""
    info = layer_info(key, spec)
    name, mode = (info.style, info.range) if info is not None else \
        (("reconstruction", "data") if bands > 1 else ("continuous", "data"))
    if name == "reconstruction" and bands == 1:
        name = "reconstruction_gray"
    return name, mode


def fitted_qml(raster: str | os.PathLike, key: str, spec: dict | None = None) -> str | None:
    """The QML style of output ``key`` written at ``raster``, fitted to its data; None when the template is
    missing (a copy of ``mtl_core`` without ``resources/``).

    Args:
        raster: a GeoTIFF (or VRT) output of a run.
        key: its product key (``main``, ``confidence``, ``aux_swir`` …).
        spec: the model spec as a dict (``ModelSpec.to_dict()``), for class names, colours and band names.
    """
    name, mode = template_for(key, gdal.Open(str(raster)).RasterCount, spec)
    return fit_template(raster, name, mode, spec, key)


def write_sidecar(raster: str | os.PathLike, key: str, spec: dict | None = None) -> Path | None:
    """Write ``<raster>.qml`` (replacing an earlier one, which belongs to the same output); returns it, or
    None when there is no template or the folder cannot be written (said in the log, the run still counts)."""
    qml = fitted_qml(raster, key, spec)
    return None if qml is None else write_qml(raster, qml)


def write_sidecars(outputs: dict[str, Path], spec: dict | None) -> list[Path]:
    """A fitted style beside every output of a run (``{product key: path}``)."""
    return [p for key, path in outputs.items() if (p := write_sidecar(path, key, spec)) is not None]

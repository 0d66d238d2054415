"""Map layers as a training dataset: the inline configuration a train job carries (``Job.dataset``).

Shared by the panel's Train page and Processing › Train, so both turn the same layers into the same
configuration: paths and bands of the input and auxiliary rasters, raster or polygon labels with their
classes (names and colours from the layer's style), and an optional extent. Runs on the main thread (it
reads layers); every problem is a ``ValueError`` whose message names the layer and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path

from qgis.core import QgsCategorizedSymbolRenderer, QgsProviderRegistry, QgsRasterLayer


def raster_path(layer, what: str) -> str:
    """The file of a raster layer GDAL can open."""
    if layer is None:
        raise ValueError(f"{what}: no raster layer given; choose one")
    if layer.providerType() != "gdal" or not Path(layer.source()).exists():
        raise ValueError(f"{what}: layer {layer.name()!r} is not a raster file GDAL can open; save it as GeoTIFF first")
    return layer.source()


def modality_name(text: str) -> str:
    """A layer name as a modality name (letters, digits and _ . + -)."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", text.strip()).strip("_.+-")[:64]
    return name if name and name[0].isalnum() else f"aux_{name}".strip("_") or "aux"


def vector_source(layer) -> tuple[str, str | None]:
    """(file, layer name) of a vector layer GDAL can read; refuses memory, database and filtered layers."""
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    path = parts.get("path") or ""
    if layer.providerType() != "ogr" or not Path(path).is_file():
        raise ValueError(f"labels layer {layer.name()!r} is not a file GDAL can read ({layer.providerType()}); save "
                         "it as a GeoPackage first (right-click > Export > Save Features As…)")
    if layer.subsetString():
        raise ValueError(f"labels layer {layer.name()!r} has a filter ({layer.subsetString()!r}), which training "
                         "would not see; save the filtered features as a GeoPackage and train from that")
    return path, parts.get("layerName") or None


def layer_classes(layer, field: str) -> dict[str, dict]:
    """The classes of a polygon layer's field: the categories of its categorised style (their order, labels and
    colours), then any other value found in the layer."""
    values = [v for v in layer.uniqueValues(layer.fields().indexOf(field)) if v is not None and str(v).strip()]
    found = {(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)).strip() for v in values}
    classes: dict[str, dict] = {}
    renderer = layer.renderer()
    if isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == field:
        for cat in renderer.categories():
            key = str(cat.value()).strip() if cat.value() is not None else ""
            if key in found and key not in classes:
                classes[key] = {"name": cat.label().strip() or key, "color": cat.symbol().color().name()}
    for key in sorted(found - set(classes)):
        classes[key] = {"name": key}
    return classes


def raster_classes(layer, band: int) -> dict[int, dict]:
    """Class values of a raster labels layer with their names and colours: its paletted style, else the file's
    colour table and category names, else every value found in the band's histogram of whole numbers."""
    from osgeo import gdal

    from mtl_core.io.labels import PALETTE

    renderer = layer.renderer()
    if renderer is not None and renderer.type() == "paletted" and renderer.band() == band:
        return {int(c.value): {"name": c.label or str(int(c.value)), "color": c.color.name()}
                for c in renderer.classes() if int(c.value) > 0}
    ds = gdal.Open(layer.source())
    b = ds.GetRasterBand(band)
    table, names = b.GetColorTable(), b.GetCategoryNames() or []
    nodata = b.GetNoDataValue()
    lo, hi = b.ComputeRasterMinMax(False)
    if hi - lo > 1024 or lo < 0:
        raise ValueError(f"labels raster {layer.name()!r} band {band} holds values {lo:g}..{hi:g}, not class codes; "
                         "choose the task regression, or a class raster")
    counts = b.GetHistogram(lo - 0.5, hi + 0.5, int(hi - lo) + 1, False, False)
    out = {}
    for i, n in enumerate(counts):
        value = int(lo) + i
        if n and value > 0 and value != nodata:
            color = table.GetColorEntry(value) if table is not None and value < table.GetCount() else None
            out[value] = {"name": names[value] if value < len(names) and names[value] else str(value),
                          "color": "#{:02x}{:02x}{:02x}".format(*color[:3]) if color else
                          PALETTE[len(out) % len(PALETTE)]}
    return out


def dataset_from_layers(input_layer, input_bands: list[int] | None, aux: list[tuple[str, object, list[int] | None]],
                        labels_layer, task: str, labels_band: int = 1, labels_field: str = "",
                        extent: tuple[float, float, float, float] | None = None) -> dict:
    """The dataset configuration (as ``mtl train`` reads it) of map layers.

    Args:
        input_layer: the input raster layer; ``input_bands`` its bands (None: every band).
        aux: ``(name, raster layer, bands or None)`` per auxiliary modality.
        labels_layer: a raster layer (``labels_band``) or a polygon layer (``labels_field``).
        task: one of :data:`mtl_core.spec.TASKS`.
        extent: the training extent in the input layer's CRS (None: wherever there are labels).
    """
    inputs = {"input": {"path": raster_path(input_layer, "Input raster")}}
    if input_bands:
        inputs["input"]["bands"] = list(input_bands)
    names = [name for name, _, _ in aux]
    if len(set(names + ["input"])) != len(names) + 1 or not all(names):
        raise ValueError(f"auxiliary names {names} must be given and differ from each other and from 'input'")
    modalities = {}
    for name, layer, bands in aux:
        modalities[name] = {"path": raster_path(layer, name)}
        if bands:
            modalities[name]["bands"] = list(bands)
    if labels_layer is None:
        raise ValueError("choose the labels: a raster layer, or a polygon layer and its class field")
    if isinstance(labels_layer, QgsRasterLayer):
        labels = {"path": raster_path(labels_layer, "Labels"), "task": task, "band": labels_band}
        if task != "regression":
            labels["classes"] = raster_classes(labels_layer, labels_band)
    else:
        if not labels_field:
            raise ValueError(f"choose the class field of the polygon layer {labels_layer.name()!r}")
        path, layer_name = vector_source(labels_layer)
        labels = {"path": path, "field": labels_field, "task": task}
        if layer_name:
            labels["layer"] = layer_name
        if task != "regression":
            labels["classes"] = layer_classes(labels_layer, labels_field)
    dataset = {"name": input_layer.name(), "inputs": inputs, "aux": modalities, "labels": labels}
    if extent is not None:
        dataset["extent"] = list(extent)
    return dataset


def area_extent(mode: str, canvas, polygons, layer: QgsRasterLayer, missing: str, outside: str):
    """An area as the Run and Train pages offer it, in ``layer``'s CRS and clipped to it: ``"layer"`` (None: the whole
    layer), ``"canvas"`` (the map canvas's extent) or the polygons of a layer (its selected ones if any).

    Raises:
        ValueError: ``missing`` when no polygon layer is chosen, ``outside`` when the area misses the layer.
    """
    from qgis.core import QgsCoordinateTransform, QgsProject, QgsRectangle

    if mode == "layer":
        return None
    if mode == "canvas":
        rect, crs = canvas.extent(), canvas.mapSettings().destinationCrs()
    else:
        if polygons is None:
            raise ValueError(missing)
        rect = polygons.boundingBoxOfSelected() if polygons.selectedFeatureCount() else polygons.extent()
        crs = polygons.crs()
    if crs.isValid() and crs != layer.crs():
        rect = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance()).transformBoundingBox(rect)
    clipped = QgsRectangle(rect).intersect(layer.extent())
    if clipped.isEmpty():
        raise ValueError(outside)
    return clipped.xMinimum(), clipped.yMinimum(), clipped.xMaximum(), clipped.yMaximum()

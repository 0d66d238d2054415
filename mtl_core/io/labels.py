"""Reference labels read window by window on a grid: a raster band, or polygons of a vector layer rasterised.

Polygon labels are what users digitise: a vector layer (GeoPackage, Shapefile, GeoJSON…) whose class field
holds a class name (text) or code (integer), or a value (numbers, for regression). The polygons are read
once, checked and reprojected onto the grid's CRS into an in-memory layer; each window is then rasterised on
demand with GDAL (pixel centres inside a polygon; where polygons overlap the later one wins), so nothing is
written to disk and memory does not grow with the raster. Pixels no polygon covers are unlabelled.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from ..errors import ConfigError, RasterError, RasterNotFoundError
from .raster import Grid, Window, read_window, windows

log = logging.getLogger(__name__)
ogr.UseExceptions()

#: Colours of classes a layer does not style itself (ColorBrewer's Paired, then Dark2): distinct on a map.
PALETTE = ["#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3", "#b2df8a", "#fb9a99",
           "#fdbf6f", "#cab2d6", "#ffff99", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
_NUMERIC = (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal)
_INTEGER = (ogr.OFTInteger, ogr.OFTInteger64)
_POLYGONS = (ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface)


def is_vector(path: str | os.PathLike) -> bool:
    """Whether ``path`` opens as a vector dataset (and not as a raster)."""
    try:
        ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    except RuntimeError:
        return False
    return ds is not None and ds.GetLayerCount() > 0


@dataclass
class LabelClass:
    """A class of polygon labels: the field value that marks it, its class value, name and colour."""

    key: str
    value: int
    name: str
    color: str


@dataclass
class PolygonSummary:
    """What was found in a labels layer: used and skipped features, and per class how many polygons."""

    features: int = 0
    used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    reprojected: str = ""
    per_class: dict[str, int] = field(default_factory=dict)

    def notes(self) -> list[str]:
        out = [f"{n} feature(s) skipped: {why}" for why, n in self.skipped.items() if n]
        if self.reprojected:
            out.append(f"polygons reprojected from {self.reprojected} onto the raster's CRS")
        return out


class RasterLabels:
    """One band of a label raster already on the grid: ``read`` gives raw values and where they are valid."""

    def __init__(self, ds: gdal.Dataset, band: int) -> None:
        self.ds, self.band = ds, band

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        raw, valid = read_window(self.ds, [self.band], window)
        return raw[0], valid


def _color(value) -> str:
    text = str(value).strip()
    if len(text) == 7 and text.startswith("#"):
        try:
            int(text[1:], 16)
            return text.lower()
        except ValueError:
            pass
    raise ConfigError(f"colour {value!r} must be written '#rrggbb'")


def _declared(classes: dict | None) -> dict[str, tuple[str | None, str | None]]:
    """A ``labels.classes`` mapping of polygon labels: field value -> (name or None, colour or None)."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for key, c in (classes or {}).items():
        if isinstance(c, str):
            out[str(key)] = (None, _color(c))
        elif isinstance(c, dict):
            out[str(key)] = (str(c["name"]) if c.get("name") is not None else None,
                             _color(c["color"]) if c.get("color") is not None else None)
        else:
            raise ConfigError(f"labels.classes.{key} must be a colour '#rrggbb' or a mapping with 'name' and/or "
                              f"'color', got {c!r}")
    return out


class PolygonLabels:
    """Polygons of a vector layer as labels on ``grid``, rasterised window by window.

    Args:
        path: the vector file.
        field: the attribute holding the class name/code (or the value, for regression).
        grid: the grid to rasterise onto (the input raster's).
        task: ``segmentation``, ``classification`` or ``regression``.
        layer: the layer's name in a multi-layer file (default: the only layer).
        declared: field value -> {name, color} (or a colour): the classes, their order and colours; default
            every value found, sorted, with colours from :data:`PALETTE`.
        ignore: field values to leave unlabelled.
        model_classes: classes to map the polygons onto (a trained model's): integer fields by value, text
            fields through ``label_values`` when given, else by class name.
        label_values: field value -> class value, as recorded in a model file trained on polygons.

    Raises:
        RasterNotFoundError: the file does not exist.
        RasterError: the layer cannot be read, holds no usable polygon, or does not overlap the grid.
        ConfigError: the field is missing or unusable, or values cannot be mapped onto classes.
    """

    def __init__(self, path: str | os.PathLike, field: str | None, grid: Grid, task: str, layer: str | None = None,
                 declared: dict | None = None, ignore: list | tuple = (), model_classes: list | None = None,
                 label_values: dict[str, int] | None = None) -> None:
        self.path, self.grid, self.task = Path(path), grid, task
        if not self.path.exists():
            raise RasterNotFoundError(f"labels layer {str(path)!r} does not exist; check the path")
        try:
            self._source = gdal.OpenEx(str(path), gdal.OF_VECTOR)
        except RuntimeError as exc:
            raise RasterError(f"labels {str(path)!r} cannot be read as a vector layer: {exc}") from exc
        src = self._layer(layer)
        defn = src.GetLayerDefn()
        fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        if not field:
            raise ConfigError(f"labels layer {self.path.name!r} needs a class field: choose one of {fields} "
                              "(labels.field in a configuration, --labels-field on the command line)")
        if field not in fields:
            raise ConfigError(f"labels layer {self.path.name!r} has no field {field!r}; its fields are {fields}")
        self.field = field
        ftype = defn.GetFieldDefn(fields.index(field)).GetType()
        if task == "regression" and ftype not in _NUMERIC:
            raise ConfigError(f"field {field!r} of {self.path.name!r} is text; a regression target needs a numeric "
                              "field (or choose the task segmentation to use its values as classes)")
        self.numeric = ftype in _NUMERIC
        self.summary = PolygonSummary()
        geometries, keys = self._read(src, {str(v) for v in ignore})
        self.classes: list[LabelClass] = [] if task == "regression" else self._classes(
            keys, ftype, _declared(declared), model_classes, label_values)
        burn = {c.key: c.value for c in self.classes}
        self._layer_mem, self._mem_source = self._memory_layer(
            geometries, [float(k) for k in keys] if task == "regression" else [burn.get(k) for k in keys])
        self.summary.per_class = {c.name: sum(k == c.key for k in keys) for c in self.classes}
        for note in self.summary.notes():
            log.warning("labels %s: %s", self.path.name, note)

    # -- reading the layer ----------------------------------------------------------------------------------------

    def _layer(self, name: str | None) -> ogr.Layer:
        count = self._source.GetLayerCount()
        names = [self._source.GetLayerByIndex(i).GetName() for i in range(count)]
        if name:
            if name not in names:
                raise ConfigError(f"labels file {self.path.name!r} has no layer {name!r}; its layers are {names}")
            return self._source.GetLayerByName(name)
        if count > 1:
            raise ConfigError(f"labels file {self.path.name!r} holds {count} layers {names}; choose one "
                              "(labels.layer in a configuration, --labels-layer on the command line)")
        return self._source.GetLayerByIndex(0)

    def _transform(self, src: ogr.Layer) -> osr.CoordinateTransformation | None:
        target = self.grid.srs()
        source = src.GetSpatialRef()
        if source is None:
            log.warning("labels %s have no CRS; taking them to be in the raster's CRS", self.path.name)
            return None
        source = source.Clone()
        source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if source.IsSame(target):
            return None
        self.summary.reprojected = source.GetName() or "another CRS"
        return osr.CoordinateTransformation(source, target)

    def _read(self, src: ogr.Layer, ignore: set[str]) -> tuple[list[ogr.Geometry], list[str]]:
        """Every usable polygon (in the grid's CRS) and its field value as text; counts what is skipped."""
        transform = self._transform(src)
        skipped = {"no geometry": 0, "empty geometry": 0, "invalid geometry": 0, f"no {self.field!r} value": 0,
                   "ignored value": 0}
        geometries, keys, kinds = [], [], set()
        src.ResetReading()
        for feature in src:
            self.summary.features += 1
            geom = feature.GetGeometryRef()
            if geom is None:
                skipped["no geometry"] += 1
                continue
            if geom.IsEmpty():
                skipped["empty geometry"] += 1
                continue
            flat = ogr.GT_Flatten(geom.GetGeometryType())
            if flat not in _POLYGONS:
                kinds.add(ogr.GeometryTypeToName(flat))
                continue
            if not geom.IsValid():
                skipped["invalid geometry"] += 1
                continue
            if not feature.IsFieldSetAndNotNull(self.field):
                skipped[f"no {self.field!r} value"] += 1
                continue
            key = self._key(feature)
            if key in ignore:
                skipped["ignored value"] += 1
                continue
            geom = geom.Clone()
            if transform is not None:
                geom.Transform(transform)
            geometries.append(geom)
            keys.append(key)
        if kinds:
            raise ConfigError(f"labels layer {self.path.name!r} holds {', '.join(sorted(kinds))} geometries; labels "
                              "must be polygons: digitise polygons, or buffer the points or lines first (QGIS: "
                              "Vector > Geoprocessing Tools > Buffer)")
        self.summary.skipped = skipped
        self.summary.used = len(geometries)
        if not geometries:
            raise RasterError(f"labels layer {self.path.name!r} holds no usable polygon ({self.summary.features} "
                              f"feature(s); {'; '.join(self.summary.notes()) or 'none'}); digitise polygons with a "
                              f"{self.field!r} value")
        xmin, ymin, xmax, ymax = self.grid.bounds
        envelopes = np.array([g.GetEnvelope() for g in geometries])  # (minx, maxx, miny, maxy)
        if (envelopes[:, 1].max() <= xmin or envelopes[:, 0].min() >= xmax or envelopes[:, 3].max() <= ymin
                or envelopes[:, 2].min() >= ymax):
            raise RasterError(
                f"labels layer {self.path.name!r} does not overlap the input raster: its polygons cover "
                f"{envelopes[:, 0].min():.6g}, {envelopes[:, 2].min():.6g}, {envelopes[:, 1].max():.6g}, "
                f"{envelopes[:, 3].max():.6g} in the raster's CRS, the raster {xmin:.6g}, {ymin:.6g}, {xmax:.6g}, "
                f"{ymax:.6g}; check that both cover the same area (and that the layer's CRS is right)")
        return geometries, keys

    def _key(self, feature: ogr.Feature) -> str:
        """The field's value as text: integers without a decimal point, text stripped."""
        if self.numeric:
            value = feature.GetFieldAsDouble(self.field)
            return str(int(value)) if float(value).is_integer() and self.task != "regression" else repr(value)
        return feature.GetFieldAsString(self.field).strip()

    # -- classes --------------------------------------------------------------------------------------------------

    def _classes(self, keys: list[str], ftype: int, declared: dict, model_classes: list | None,
                 label_values: dict[str, int] | None) -> list[LabelClass]:
        found = sorted(set(keys), key=lambda k: (float(k), k) if self.numeric else (k.lower(), k))
        if self.numeric and ftype not in _INTEGER and any(not float(k).is_integer() for k in found):
            raise ConfigError(f"field {self.field!r} holds decimal numbers; class codes must be whole numbers "
                              "(or choose the task regression to use them as values)")
        if not self.numeric:
            numbers = [k for k in found if _is_number(k)]
            if numbers and len(numbers) < len(found):
                names = [k for k in found if not _is_number(k)]
                raise ConfigError(
                    f"field {self.field!r} of {self.path.name!r} mixes class codes ({', '.join(numbers[:5])}) and "
                    f"class names ({', '.join(names[:5])}); use one kind of value for every polygon (e.g. recode "
                    "with the field calculator) so each class is one value")
        if model_classes is not None:
            return self._onto(found, model_classes, label_values or {})
        if declared:
            unknown = [k for k in found if k not in declared]
            if unknown:
                raise ConfigError(
                    f"field {self.field!r} holds values that labels.classes does not declare ({', '.join(unknown[:10])}"
                    f"); add them to labels.classes, or list them under labels.ignore to leave those polygons out")
            order = list(declared)
        else:
            order = found
        out = []
        for i, key in enumerate(order):
            name, color = declared.get(key, (None, None))
            if self.numeric:
                value = int(float(key))
                if not 1 <= value <= 65535:
                    raise ConfigError(f"class code {key} of field {self.field!r} is outside 1..65535 (0 means no "
                                      "data); recode the classes, or use a text field of class names")
            else:
                value = i + 1
            out.append(LabelClass(key, value, name or key, color or PALETTE[i % len(PALETTE)]))
        if len(out) < 2:
            raise ConfigError(f"field {self.field!r} of {self.path.name!r} holds one class only "
                              f"({', '.join(c.name for c in out)}); a classifier needs at least two: digitise "
                              "polygons of another class (e.g. the background around it)")
        return out

    def _onto(self, found: list[str], model_classes: list, label_values: dict[str, int]) -> list[LabelClass]:
        """Map the field's values onto a model's classes."""
        by_value = {c.value: c for c in model_classes}
        by_name = {c.name.strip().lower(): c for c in model_classes}
        out, unknown = [], []
        for key in found:
            if self.numeric:
                c = by_value.get(int(float(key)))
            elif key in label_values:
                c = by_value.get(int(label_values[key]))
            else:
                c = by_name.get(key.lower())
            if c is None:
                unknown.append(key)
            else:
                out.append(LabelClass(key, c.value, c.name, c.color))
        if unknown:
            known = ", ".join(str(c.value) if self.numeric else c.name for c in model_classes)
            raise ConfigError(f"field {self.field!r} of {self.path.name!r} holds value(s) the model has no class for "
                              f"({', '.join(unknown[:10])}); the model's classes are {known}: recode those polygons "
                              "or remove them")
        return out

    # -- rasterising ----------------------------------------------------------------------------------------------

    def _memory_layer(self, geometries: list[ogr.Geometry], burn: list) -> tuple[ogr.Layer, ogr.DataSource]:
        driver = ogr.GetDriverByName("MEM") or ogr.GetDriverByName("Memory")
        source = driver.CreateDataSource("labels")
        layer = source.CreateLayer("labels", self.grid.srs(), ogr.wkbMultiPolygon)
        layer.CreateField(ogr.FieldDefn("burn", ogr.OFTReal))
        defn = layer.GetLayerDefn()
        for geom, value in zip(geometries, burn):
            feature = ogr.Feature(defn)
            feature.SetGeometry(geom)
            feature.SetField("burn", float(value))
            layer.CreateFeature(feature)
        return layer, source

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(h, w) float32 class values (or regression values) of a window, and where a polygon covers it."""
        x, y, w, h = window
        x0, dx, _, y0, _, dy = self.grid.transform
        mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Float32)
        mem.SetProjection(self.grid.wkt)
        mem.SetGeoTransform((x0 + x * dx, dx, 0.0, y0 + y * dy, 0.0, dy))
        band = mem.GetRasterBand(1)
        band.Fill(math.nan)
        xs, ys = (x0 + x * dx, x0 + (x + w) * dx), (y0 + y * dy, y0 + (y + h) * dy)
        self._layer_mem.SetSpatialFilterRect(min(xs), min(ys), max(xs), max(ys))
        gdal.RasterizeLayer(mem, [1], self._layer_mem, options=["ATTRIBUTE=burn"])
        self._layer_mem.SetSpatialFilter(None)
        raw = band.ReadAsArray().astype(np.float32)
        valid = np.isfinite(raw)
        raw[~valid] = 0.0
        return raw, valid


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def polygons_from_raster(raster: str | os.PathLike, out: str | os.PathLike, classes: dict[int, str],
                         keep: float = 1.0, seed: int = 0, epsg: int | None = None, field: str = "class",
                         piece: int = 32) -> Path:
    """Polygonise a class raster into a GeoPackage with a text class field, keeping a seeded fraction of each
    class's polygons (at least one): digitised-like polygon labels made from a reference map, for measuring
    sparse labels and for tests. The raster is polygonised in ``piece`` x ``piece`` px squares, so no polygon is
    larger than what a person digitises in one go (a class connected across the scene is not one polygon).

    Args:
        raster: a class raster (band 1; its nodata and values not in ``classes`` are left out).
        out: the GeoPackage to write (must not exist).
        classes: class value -> name written into ``field``.
        keep: the fraction of each class's polygons to keep.
        seed: the seed of that choice.
        epsg: the CRS to write the polygons in (default: the raster's).
        field: the text field's name.
        piece: the largest polygon's size in pixels.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} exists; choose another file")
    ds = gdal.Open(str(raster))
    source_srs = osr.SpatialReference(ds.GetProjection())
    mem = (ogr.GetDriverByName("MEM") or ogr.GetDriverByName("Memory")).CreateDataSource("poly")
    shapes = mem.CreateLayer("shapes", source_srs, ogr.wkbPolygon)
    shapes.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    for x, y, w, h in windows(ds.RasterXSize, ds.RasterYSize, piece):
        square = gdal.Translate("", ds, format="MEM", srcWin=[x, y, w, h], bandList=[1])
        gdal.Polygonize(square.GetRasterBand(1), square.GetRasterBand(1).GetMaskBand(), shapes, 0)
    by_class: dict[int, list[ogr.Geometry]] = {}
    for feature in shapes:
        value = feature.GetField("value")
        if value in classes:
            by_class.setdefault(value, []).append(feature.GetGeometryRef().Clone())
    target_srs = source_srs
    if epsg is not None:
        target_srs = osr.SpatialReference()
        target_srs.ImportFromEPSG(epsg)
    for srs in (source_srs, target_srs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = None if target_srs.IsSame(source_srs) else osr.CoordinateTransformation(source_srs, target_srs)
    rng = np.random.default_rng(seed)
    gpkg = ogr.GetDriverByName("GPKG").CreateDataSource(str(out))
    layer = gpkg.CreateLayer("labels", target_srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    layer.StartTransaction()
    for value in sorted(by_class):
        polys = by_class[value]
        chosen = rng.permutation(len(polys))[:max(1, round(keep * len(polys)))]
        for i in sorted(chosen):
            geom = polys[i]
            if transform is not None:
                geom.Transform(transform)
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetGeometry(geom)
            feature.SetField(field, classes[value])
            layer.CreateFeature(feature)
    layer.CommitTransaction()
    gpkg = None
    return out

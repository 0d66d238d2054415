"""The engine's readers: the input bands, the area-of-interest mask and the ground truth, window by window."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr

from ..errors import ConfigError, RasterError
from ..io.labels import PolygonLabels, is_vector
from ..io.raster import Grid, Window, align_to, check_georeferenced, open_raster, read_window
from ..norm import class_indices
from ..spec import ModelSpec
from .tiling import sub_grid


def bands_by_description(names: list[str], descriptions: list[str]) -> list[int] | None:
    """The raster band (1-based) whose description is each of ``names`` (case and spaces aside), or None when a
    name is not found."""
    lower = [d.strip().lower() for d in descriptions]
    wanted = [n.lower() for n in names]
    return [lower.index(n) + 1 for n in wanted] if all(n in lower for n in wanted) else None


def modality_bands(names: list[str], descriptions: list[str]) -> list[int] | None:
    """The raster bands (1-based) holding a modality's bands, in its order: by band description, else bands 1..K
    when the raster has exactly K; None when neither works."""
    found = bands_by_description(names, descriptions)
    if found is None and len(descriptions) == len(names):
        found = list(range(1, len(names) + 1))
    return found


def band_mapping(spec: ModelSpec, ds: gdal.Dataset, bands: list[int] | None = None) -> list[int]:
    """The raster band (1-based) feeding each model input band.

    Explicit ``bands`` are checked; otherwise bands are matched by description when every model band
    name is found among the raster's band descriptions, else taken in order when the counts agree.

    Raises:
        RasterError: the raster cannot provide the model's bands.
    """
    names = [b.name for b in spec.input_bands]
    expected = ", ".join(f"{m.name}/{b.name}" for m in spec.inputs for b in m.bands)
    if bands is not None:
        if len(bands) != len(names) or not all(1 <= b <= ds.RasterCount for b in bands):
            raise RasterError(
                f"band mapping {bands} must give {len(names)} band numbers between 1 and {ds.RasterCount}, "
                f"one for each model band: {expected}"
            )
        return list(bands)
    by_name = bands_by_description(names, [ds.GetRasterBand(i).GetDescription() for i in range(1, ds.RasterCount + 1)])
    if by_name is not None:
        return by_name
    if ds.RasterCount != len(names):
        raise RasterError(
            f"the input raster has {ds.RasterCount} band(s) but the model expects {len(names)}, in this order: "
            f"{expected}; build a raster with exactly these bands (QGIS: Raster > Miscellaneous > Build Virtual "
            "Raster, 'Place each input file into a separate band') or map the bands explicitly"
        )
    return list(range(1, len(names) + 1))


def check_input(spec: ModelSpec, ds: gdal.Dataset, bands: list[int] | None = None) -> list[int]:
    """Refuse a raster that cannot feed the model; return the band mapping."""
    check_georeferenced(ds, "input raster")
    mapping = band_mapping(spec, ds, bands)
    for i in mapping:
        dt = ds.GetRasterBand(i).DataType
        if gdal.DataTypeIsComplex(dt):
            raise RasterError(f"band {i} of the input raster is complex ({gdal.GetDataTypeName(dt)}); use real values")
    return mapping


def read_input(ds: gdal.Dataset, spec: ModelSpec, mapping: list[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The model's input bands of a window, in the model's order, and where they are valid: not nodata
    (the raster's or the model's input nodata value) and finite."""
    data, valid = read_window(ds, mapping, window)
    if spec.input_nodata is not None:
        valid &= (data != spec.input_nodata).all(axis=0)
    return data, valid


class Mask:
    """Area-of-interest mask read per window: a raster (non-zero inside) or polygons rasterised on the fly."""

    def __init__(self, path: str, grid: Grid) -> None:
        self.grid = grid
        self.vector = ogr.Open(str(path))
        if self.vector is not None:
            self.layer = self.vector.GetLayer(0)
            if self.layer.GetFeatureCount() == 0:
                raise RasterError(f"mask {str(path)!r} holds no polygon; draw the area of interest first")
            xmin, xmax, ymin, ymax = self._extent_in(grid)
            b = grid.bounds
            if xmax <= b[0] or xmin >= b[2] or ymax <= b[1] or ymin >= b[3]:
                raise RasterError(f"mask {str(path)!r} does not overlap the input raster (its polygons cover "
                                  f"{xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g} in the raster's CRS, the raster "
                                  f"{b[0]:.6g}, {b[1]:.6g}, {b[2]:.6g}, {b[3]:.6g}); draw the area of interest over it")
            return
        ds = open_raster(path, "mask")
        check_georeferenced(ds, "mask")
        if not Grid.of(ds).same_as(grid):
            raise RasterError(f"mask raster {str(path)!r} is not on the input raster's grid; "
                              "use a polygon layer or warp the mask onto the input grid (gdalwarp)")
        self.raster = ds

    def _extent_in(self, grid: Grid) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of the polygons, in the raster's CRS."""
        from osgeo import osr

        xmin, xmax, ymin, ymax = self.layer.GetExtent()
        source, target = self.layer.GetSpatialRef(), grid.srs()  # Grid.srs() is in x, y order already
        if source is None or source.IsSame(target):
            return xmin, xmax, ymin, ymax
        source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        transform = osr.CoordinateTransformation(source, target)
        xs, ys = zip(*(transform.TransformPoint(x, y)[:2] for x in (xmin, xmax) for y in (ymin, ymax)))
        return min(xs), max(xs), min(ys), max(ys)

    def read(self, window: Window) -> np.ndarray:
        x, y, w, h = window
        if self.vector is None:
            return self.raster.GetRasterBand(1).ReadAsArray(x, y, w, h) != 0
        mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
        mem.SetProjection(self.grid.wkt)
        mem.SetGeoTransform(sub_grid(self.grid, window).transform)
        gdal.RasterizeLayer(mem, [1], self.layer, burn_values=[1])
        return mem.GetRasterBand(1).ReadAsArray() != 0


def run_inputs(raster_path: str | os.PathLike, aux_truth: dict[str, str] | None, labels: str | None,
               mask: str | None) -> list[str]:
    """Every file a run reads (input raster, ground truth, mask): no output may replace one of them."""
    named = [str(raster_path), *(aux_truth or {}).values(), labels, mask]
    return [str(p) for p in named if p]


def labels_band_of(spec: ModelSpec, band: int | None = None) -> int:
    """The label band to read: ``band`` if given, else the one the model was trained on, else 1."""
    return band or int(spec.training.get("data", {}).get("labels_band") or 1)


def _polygon_truth(spec: ModelSpec, grid: Grid, path: str, field: str | None) -> PolygonLabels:
    """Polygon labels mapped onto the model's classes: the field (and layer) it was trained on unless told."""
    data = spec.training.get("data") or {}
    field = field or data.get("labels_field")
    if not field:
        raise ConfigError(f"labels {Path(path).name!r} is a vector layer: name its class field (mtl explain "
                          "--labels-field NAME; Processing's and the panel's 'Labels field')")
    layer = data.get("labels_layer")
    if layer:
        source = ogr.Open(str(path))
        names = [source.GetLayerByIndex(i).GetName() for i in range(source.GetLayerCount())]
        layer = layer if layer in names else None
    same = data.get("labels_field") == field  # the field it was trained on: its ignored values stay ignored
    return PolygonLabels(path, field, grid, spec.task, layer, ignore=data.get("labels_ignore") or [] if same else [],
                         model_classes=None if spec.task == "regression" else spec.classes,
                         label_values=data.get("label_values") if same else None)


class Truth:
    """Ground-truth rasters (auxiliary modalities and labels) read per window, on the input grid."""

    def __init__(self, spec: ModelSpec, grid: Grid, aux_truth: dict[str, str], labels: str | None,
                 labels_band: int | None = None, aux_bands: dict[str, list[int]] | None = None,
                 labels_field: str | None = None) -> None:
        self.spec, self.aux, self.labels, self.warped, self.aux_bands = spec, {}, None, [], {}
        self.polygons: PolygonLabels | None = None
        self.labels_band = labels_band_of(spec, labels_band)
        known = [m.name for m in spec.aux]
        for name, path in aux_truth.items():
            if name not in known:
                raise RasterError(
                    f"the model reconstructs no modality {name!r}; it reconstructs {known or 'nothing'}: pass "
                    f"--aux {known[0] if known else 'NAME'}=PATH" + ("" if known else " only with an 'mtl' model")
                )
            m = spec.aux_modality(name)
            ds = open_raster(path, f"auxiliary raster {name!r}")
            self.aux_bands[name] = self._aux_bands(m, ds, path, (aux_bands or {}).get(name))
            self.aux[name] = self._aligned(ds, path, grid, f"auxiliary raster {name!r}", categorical=False)
        if labels and is_vector(labels):
            self.polygons = _polygon_truth(spec, grid, labels, labels_field)
            self.values = np.array([c.value for c in spec.classes])
        elif labels:
            self.labels = self._aligned(open_raster(labels, "label raster"), labels, grid, "label raster",
                                        categorical=spec.task != "regression")
            if not 1 <= self.labels_band <= self.labels.RasterCount:
                raise RasterError(f"label raster {str(labels)!r} has {self.labels.RasterCount} band(s); band "
                                  f"{self.labels_band} was asked for (or recorded in the model file): choose a labels "
                                  f"band between 1 and {self.labels.RasterCount} (mtl explain --labels-band N; "
                                  "the panel's and Processing's 'Labels band')")
            self.values = np.array([c.value for c in spec.classes])

    @staticmethod
    def _aux_bands(m, ds: gdal.Dataset, path: str, chosen: list[int] | None) -> list[int]:
        """The raster bands holding a modality's bands, in its order: as chosen, else by band description, else
        bands 1..K when the counts agree."""
        k, n = len(m.bands), ds.RasterCount
        fix = (f"give a raster with exactly these bands, or choose them (mtl explain --aux-bands {m.name}="
               f"{','.join(str(i) for i in range(1, k + 1))}; the panel matches them by band description)")
        if chosen is not None:
            if len(chosen) != k or not all(1 <= b <= n for b in chosen):
                raise RasterError(f"auxiliary bands {chosen} for {m.name!r} must be {k} band number(s) between 1 and "
                                  f"{n} ({str(path)!r} has {n}), one per band: {', '.join(m.band_names)}")
            return list(chosen)
        found = modality_bands(m.band_names, [ds.GetRasterBand(i).GetDescription() for i in range(1, n + 1)])
        if found is None:
            raise RasterError(f"auxiliary raster {m.name!r} ({str(path)!r}) has {n} band(s) but the model's "
                              f"{m.name!r} modality has {k} ({', '.join(m.band_names)}) and no band description "
                              f"names them; {fix}")
        return found

    def _aligned(self, ds: gdal.Dataset, path: str, grid: Grid, what: str, categorical: bool) -> gdal.Dataset:
        """The raster on the input grid: as it is, or warped window by window as training aligns its rasters
        (:func:`mtl_core.io.raster.align_to`: nearest neighbour for labels, bilinear otherwise); each warp is
        logged and listed in :attr:`warped`."""
        aligned = align_to(ds, grid, what, categorical)
        if aligned is not ds:
            self.warped.append(f"{what} {Path(path).name} ({'nearest' if categorical else 'bilinear'})")
        return aligned

    def read_aux(self, name: str, window: Window) -> tuple[np.ndarray, np.ndarray]:
        return read_window(self.aux[name], self.aux_bands[name], window)

    def read_labels(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Class indices (-1 where unlabelled) or raw values for regression, and validity."""
        if self.polygons is not None:
            raw, valid = self.polygons.read(window)
        else:
            raw, valid = read_window(self.labels, [self.labels_band], window)
            raw = raw[0]
        if self.spec.task == "regression":
            return raw, valid
        idx = class_indices(raw, valid, self.values)
        return idx, idx >= 0

"""What a product is: the layers it declares, the block of model outputs it computes from, and its base class.

See :mod:`mtl_core.engine.products` for the products themselves and their registry.
"""

from __future__ import annotations

from collections.abc import Iterable
import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from osgeo import gdal, gdal_array

from ..explain.scores import entropy, error_score
from ..norm import cell_majority, normalise
from ..spec import FLOAT_NODATA, ModelSpec

if TYPE_CHECKING:
    from ..io.raster import Window
    from .inputs import Truth


@dataclass(frozen=True)
class Layer:
    """One output raster of a product.

    Attributes:
        key: its key in the run's outputs (``main``, ``aux_swir`` …); unique in a run.
        suffix: file name ``<input stem>_<suffix>.tif``.
        title: the layer's name in QGIS.
        help: one line on what it shows (report captions, tooltips).
        bands: band count.
        dtype: GDAL data type.
        nodata: nodata value.
        style: QML template in ``resources/styles`` (``<style>.qml``).
        range: how the plugin fits the style: ``data`` (2–98 % cut), ``fixed`` (the template's), ``classes``.
        categories: (value, name, colour) of a categorical layer (colour table and category names).
        band_names: band descriptions (default: ``description`` for band 1).
        description: band 1's description when ``band_names`` is empty.
        units: units of the values (metadata and band unit type).
        cells: on the patch-classification cell grid instead of the pixel grid.
        scale, offset: a continuous layer stored as integers (``dtype`` Byte, UInt16 or Int16): value =
            stored x scale + offset, per band (one value: every band), written into the GeoTIFF, which GDAL and
            QGIS apply when they read it. Products compute float32 with ``FLOAT_NODATA``; :meth:`encode`
            packs, :meth:`decode` unpacks. Empty: stored as computed.
    """

    key: str
    suffix: str
    title: str
    help: str
    bands: int = 1
    dtype: int = gdal.GDT_Float32
    nodata: float = FLOAT_NODATA
    style: str = "continuous"
    range: Literal["data", "fixed", "classes"] = "data"
    categories: tuple[tuple[int, str, str], ...] = ()
    band_names: tuple[str, ...] = ()
    description: str = ""
    units: str = ""
    cells: bool = False
    scale: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()

    @property
    def packed(self) -> bool:
        return bool(self.scale)

    @property
    def fill(self) -> float:
        """The nodata value of the blocks products compute for this layer (before packing)."""
        return FLOAT_NODATA if self.packed else self.nodata

    def _per_band(self, values: tuple[float, ...], default: float) -> np.ndarray:
        v = np.asarray(values or (default,), dtype=np.float64)
        return np.broadcast_to(v if v.size > 1 else v[:1], (self.bands,))[:, None, None]

    def band_scale(self, band: int) -> tuple[float, float]:
        """(scale, offset) of a band (0-based) as written into the GeoTIFF."""
        return float(self._per_band(self.scale, 1.0)[band, 0, 0]), float(self._per_band(self.offset, 0.0)[band, 0, 0])

    def encode(self, data: np.ndarray) -> np.ndarray:
        """A computed (bands, h, w) block as stored: rounded to the integer grid of ``scale``/``offset`` and clipped
        to the type's range, nodata (``FLOAT_NODATA`` or not finite) as the layer's nodata."""
        if not self.packed:
            return data
        kind = np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(self.dtype))
        info = np.iinfo(kind)
        lo, hi = (info.min + 1, info.max) if self.nodata == info.min else (info.min, info.max - 1)
        # In float32 and in place: the integer grids hold at most 65,536 steps, exact in float32, and blocks are large.
        q = data.astype(np.float32)
        q -= self._per_band(self.offset, 0.0).astype(np.float32)
        q /= self._per_band(self.scale, 1.0).astype(np.float32)
        bad = ~np.isfinite(q)
        bad |= data == FLOAT_NODATA
        with np.errstate(invalid="ignore"):
            np.rint(q, out=q)
            np.clip(q, lo, hi, out=q)
        q[bad] = self.nodata
        return q.astype(kind)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """Stored values back as float32 values, nodata as ``FLOAT_NODATA`` (the inverse of :meth:`encode`)."""
        if not self.packed:
            return stored
        out = (stored * self._per_band(self.scale, 1.0) + self._per_band(self.offset, 0.0)).astype(np.float32)
        out[stored == self.nodata] = FLOAT_NODATA
        return out

    def unpacked(self) -> Layer:
        """The same layer stored as float32 (``--float32``)."""
        if not self.packed:
            return self
        return dataclasses.replace(self, dtype=gdal.GDT_Float32, nodata=FLOAT_NODATA, scale=(), offset=())

    @property
    def categorical(self) -> bool:
        """Overviews take a pixel instead of a mean."""
        return bool(self.categories) or self.range == "classes"


@dataclass(frozen=True)
class Available:
    """What a run can feed its products beyond the input bands: real auxiliary rasters and labels, and whether
    the model file holds a fitted error model (and its detector)."""

    truth: frozenset[str] = frozenset()
    labels: bool = False
    error_model: bool = False
    detector: bool = False

    @classmethod
    def of(cls, spec: ModelSpec, truth: Iterable[str] = (), labels: bool = False) -> Available:
        """What a run of ``spec`` with these real auxiliary rasters and labels has."""
        fitted = spec.training.get("error_model") or {}
        return cls(frozenset(truth), labels, bool(fitted), bool(fitted.get("detector")))

    @classmethod
    def everything(cls, spec: ModelSpec) -> Available:
        """As if every auxiliary raster, the labels and the error model were there (every layer a model of this
        kind can produce: for titles and styles of finished runs)."""
        return cls(frozenset(m.name for m in spec.aux), True, True, True)


class Block:
    """Finished rows of one chunk: the blended model outputs and what products derive from them, each
    computed at most once (class map, reconstruction errors, labels, error score …).

    Args:
        spec: the model's spec.
        parts: ``main`` (class probabilities (C, h, w) or normalised value (1, h, w)), ``aux_<name>``
            (normalised reconstructions) and ``sens_<name>`` (sensitivities), float32.
        valid: (h, w) pixels with valid input.
        window: the rows' window in the input raster (ground truth is read there).
        truth: the ground-truth readers.
        cell: pixels per patch-classification cell (1 otherwise).
    """

    def __init__(self, spec: ModelSpec, parts: dict[str, np.ndarray], valid: np.ndarray, window: Window,
                 truth: Truth, cell: int = 1) -> None:
        self.spec, self.parts, self.valid, self.window, self.truth, self.cell = spec, parts, valid, window, truth, cell
        self.error_model = spec.training.get("error_model") or {}

    @property
    def classes(self) -> bool:
        return self.spec.task != "regression"

    @property
    def probs(self) -> np.ndarray:
        return self.parts["main"]

    @cached_property
    def _top(self) -> tuple[np.ndarray, np.ndarray]:
        return argmax(self.probs)

    @property
    def pred_idx(self) -> np.ndarray:
        """(h, w) index of the predicted class."""
        return self._top[0]

    @property
    def confidence(self) -> np.ndarray:
        return self._top[1]

    @cached_property
    def class_values(self) -> np.ndarray:
        return np.array([c.value for c in self.spec.classes], dtype=np.uint16)[self.pred_idx]

    @cached_property
    def entropy(self) -> np.ndarray:
        """(h, w) entropy of the class probabilities."""
        return entropy(self.probs)

    @cached_property
    def value(self) -> np.ndarray:
        """(h, w) regression value in the target's units."""
        t = self.spec.target
        return (self.parts["main"][0] * t.std + t.mean).astype(np.float32)

    @cached_property
    def recon_error(self) -> dict[str, np.ndarray]:
        """Modality -> (K, h, w) |reconstruction - truth| in normalised units, NaN where the truth is invalid."""
        out = {}
        for m in self.spec.aux:
            if m.name in self.truth.aux and f"aux_{m.name}" in self.parts:
                real, real_valid = self.truth.read_aux(m.name, self.window)
                err = np.abs(self.parts[f"aux_{m.name}"] - normalise(real, real_valid, m.bands))
                err[:, ~real_valid] = np.nan
                out[m.name] = err
        return out

    @cached_property
    def no_truth(self) -> np.ndarray:
        """(h, w) pixels where a real auxiliary value is missing."""
        return np.any([np.isnan(v).any(0) for v in self.recon_error.values()], axis=0)

    @cached_property
    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference (class index, or value for regression) and where it is labelled and the input valid."""
        ref, labelled = self.truth.read_labels(self.window)
        return ref, labelled & self.valid

    @cached_property
    def cell_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Per cell (patch classification): the majority label of its labelled valid pixels, as training builds
        its targets, and whether it has one."""
        ref, labelled = self.labels
        return cell_majority(ref, labelled, self.cell, len(self.spec.classes))

    @cached_property
    def main_wrong(self) -> np.ndarray:
        """(h, w) misclassified (False where unlabelled)."""
        ref, labelled = self.labels
        return np.where(labelled, self.pred_idx != ref, False)

    @cached_property
    def score(self) -> np.ndarray:
        """(h, w) error score (see :func:`mtl_core.explain.scores.error_score`)."""
        errors = {k: np.nan_to_num(v) for k, v in self.recon_error.items()}
        return error_score(errors, self.probs if self.classes else None, self.error_model).astype(np.float32)

    def on_cells(self, arr: np.ndarray) -> np.ndarray:
        """One value per patch-classification cell: the cells' top-left pixels."""
        return arr[..., ::self.cell, ::self.cell].copy()

    def for_layer(self, arr: np.ndarray) -> np.ndarray:
        """A new array of a per-prediction layer: one value per cell in patch classification, else a copy."""
        return self.on_cells(arr) if self.cell > 1 else arr.copy()

    @cached_property
    def cell_valid(self) -> np.ndarray:
        """Per cell: does it hold a valid pixel."""
        h, w, c = *self.valid.shape, self.cell
        padded = np.zeros((-(-h // c) * c, -(-w // c) * c), dtype=bool)
        padded[:h, :w] = self.valid
        return padded.reshape(padded.shape[0] // c, c, padded.shape[1] // c, c).any(axis=(1, 3))


class Product:
    """One product of the engine; subclasses set the class attributes and override :meth:`layers` and
    :meth:`compute` (or :meth:`compute_halo`).

    Attributes:
        name: the name users choose it by (``mtl predict --products``, the job's ``products``).
        label: what the panel's checkbox says.
        help: one line on what it is.
        default: written by the engine when no products are named.
        tickable: offered in the panel and Processing (needs no ground truth).
        needs_truth: needs the real auxiliary rasters or the labels (``mtl explain`` adds it).
        reconstructions: needs the reconstruction channels.
        sensitivity: needs the sensitivity passes (one more forward pass per input band).
        halo: pixels of context it needs on each side (0: pixel by pixel, computed in the stream).
        source: for a halo product, the product whose finished layers it reads.
        per_modality: its layers are one per auxiliary modality (keys ``<name>_<modality>``), not one layer
            keyed by its name.
        rank: place of its layers in a run's layer group, top first (explanations above the prediction).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    help: ClassVar[str]
    default: ClassVar[bool] = False
    tickable: ClassVar[bool] = False
    needs_truth: ClassVar[bool] = False
    reconstructions: ClassVar[bool] = False
    sensitivity: ClassVar[bool] = False
    halo: ClassVar[int] = 0
    source: ClassVar[str | None] = None
    per_modality: ClassVar[bool] = False
    rank: ClassVar[int] = 50

    def layers(self, spec: ModelSpec, available: Available) -> list[Layer]:
        """The layers this product writes for a model and what the run has (none: it cannot be made)."""
        raise NotImplementedError

    def compute(self, block: Block) -> dict[str, np.ndarray]:
        """Layer key -> (bands, h, w) block, or (bands, cells_h, cells_w) for cell layers, each a new array.

        The engine sets the pixels (or cells) without valid input to the layer's nodata; a product sets
        any other nodata itself (unlabelled pixels, missing truth).
        """
        raise NotImplementedError

    def source_key(self, layer: Layer) -> str:
        """For a halo product: the key of the ``source`` product's layer that ``layer`` is computed from."""
        raise NotImplementedError

    def compute_halo(self, layer: Layer, source: np.ndarray, source_layer: Layer, halo: tuple[int, int, int, int],
                     pixel_size: tuple[float, float]) -> np.ndarray:
        """A halo product's block from its source layer's block read with context.

        Args:
            layer: the output layer being computed.
            source: (bands, h, w) of the source layer, reaching ``halo`` beyond the block where the raster
                goes on; nodata kept.
            source_layer: the source layer (its nodata, units).
            halo: context pixels included (top, bottom, left, right); fewer at the raster's edges.
            pixel_size: (x, y) pixel size in the raster's units, both positive.

        Returns:
            (bands, h - top - bottom, w - left - right), nodata where it cannot be computed.
        """
        raise NotImplementedError


def argmax(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and value of the largest of ``p`` along axis 0 (the first on ties), class by class:
    several times faster than ``argmax`` along the outer axis of a (C, H, W) array."""
    idx = np.zeros(p.shape[1:], dtype=np.uint8 if len(p) < 256 else np.uint16)
    best = p[0].copy()
    for i in range(1, len(p)):
        higher = p[i] > best
        idx[higher] = i
        np.maximum(best, p[i], out=best)
    return idx, best

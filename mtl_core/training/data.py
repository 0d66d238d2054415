"""Training data: co-registered rasters read as GDAL windows, a spatial block split and patch sampling.

A :class:`Scene` opens every raster of a :class:`~mtl_core.config.DatasetConfig` on the grid of the
first input raster (warping the others onto it when needed). Samples are dicts::

    {"image": (C, P, P) float32 normalised, invalid pixels set to 0,
     "valid": (P, P) bool, input pixels that are not nodata,
     "mask": (P, P) int64 class index or IGNORE_INDEX      (segmentation)
     "label": () int64 majority class of the patch         (classification)
     "target": (1, P, P) float32 normalised, "target_valid": (P, P) bool   (regression)
     "aux": {name: (K, P, P) float32 normalised}, "aux_valid": {name: (P, P) bool}}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from osgeo import gdal

from ..config import DatasetConfig, SourceConfig, SplitConfig
from ..errors import ConfigError, RasterError
from .losses import IGNORE_INDEX
from ..io.labels import PolygonLabels, PolygonSummary, RasterLabels
from ..io.raster import (Grid, Window, align_to, check_bands, check_georeferenced, extent_window, inside, open_raster,
                         read_window, windows)
from ..norm import cell_majority, class_indices, denormalise, normalise  # noqa: F401  (part of this module's interface)
from ..spec import Band, ClassInfo, Modality, Target
from ..split import Census, census_cell, label_census, split_blocks

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


@dataclass
class Source:
    """An opened modality raster on the scene grid."""

    name: str
    ds: gdal.Dataset
    bands: list[int]
    names: list[str]
    units: str
    path: Path


def band_name(description: str, band: int) -> str:
    """A band name the model file accepts, from a GDAL band description ("B4 (red)" -> "B4_red"), else ``b<N>``."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", description.strip()).strip("_.+-")[:64]
    return name or f"b{band}"


def _open_source(cfg: SourceConfig, grid: Grid | None, what: str) -> Source:
    ds = open_raster(cfg.path, what)
    check_georeferenced(ds, what)
    bands = cfg.bands or list(range(1, ds.RasterCount + 1))
    check_bands(ds, bands, what)
    if cfg.names and len(cfg.names) != len(bands):
        raise ConfigError(f"{what} {str(cfg.path)!r}: {len(cfg.names)} name(s) {cfg.names} for {len(bands)} band(s) "
                          f"{bands}{'' if cfg.bands else ' (every band of the raster)'}; list the bands to use "
                          f"(bands: [{', '.join(str(b) for b in range(1, len(cfg.names) + 1))}]) or one name per band")
    names = cfg.names or [band_name(ds.GetRasterBand(b).GetDescription(), b) for b in bands]
    if grid is not None:
        ds = align_to(ds, grid, what, categorical=False)
    return Source(cfg.name, ds, bands, [str(n) for n in names], cfg.units, cfg.path)


def _pad(arr: np.ndarray, h: int, w: int, fill: float | bool) -> np.ndarray:
    ph, pw = h - arr.shape[-2], w - arr.shape[-1]
    if ph == 0 and pw == 0:
        return arr
    widths = [(0, 0)] * (arr.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(arr, widths, constant_values=fill)


class Scene:
    """The rasters of one dataset configuration, aligned on the grid of the first input raster; the labels are a
    raster band or polygons rasterised on that grid (:mod:`mtl_core.io.labels`)."""

    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg
        first = _open_source(cfg.inputs[0], None, f"input raster {cfg.inputs[0].name!r}")
        self.grid = Grid.of(first.ds)
        self.inputs = [first] + [_open_source(s, self.grid, f"input raster {s.name!r}") for s in cfg.inputs[1:]]
        self.aux = [_open_source(s, self.grid, f"auxiliary raster {s.name!r}") for s in cfg.aux]
        lab = cfg.labels
        self.label_values: dict[str, int] = {}  # polygon field value -> class value
        self.polygons: PolygonSummary | None = None
        if lab.is_vector:
            polygons = PolygonLabels(lab.path, lab.field_name, self.grid, lab.task, lab.layer, lab.declared,
                                     lab.ignore)
            self.labels: RasterLabels | PolygonLabels = polygons
            self.classes = [ClassInfo(c.value, c.name, c.color) for c in polygons.classes]
            self.label_values = {c.key: c.value for c in polygons.classes}
            self.polygons = polygons.summary
        else:
            ds = open_raster(lab.path, "label raster")
            check_bands(ds, [lab.band], "label raster")
            self.labels = RasterLabels(align_to(ds, self.grid, "label raster", categorical=lab.task != "regression"),
                                       lab.band)
            self.classes = list(lab.classes)
        self.extent = self._extent_window(cfg.extent)
        self._class_values = np.array([c.value for c in self.classes], dtype=np.float64)
        self._census: Census | None = None
        self.census()  # refuses undeclared label values, and labels that cover nothing, before any training

    def _extent_window(self, extent: list[float] | None) -> Window | None:
        """The configuration's training extent as a pixel window of the grid (None: the whole grid)."""
        if extent is None:
            return None
        window = extent_window(self.grid, extent)
        if window is None:
            gx0, gy0, gx1, gy1 = self.grid.bounds
            raise ConfigError(f"the training extent {extent} does not overlap the input raster ({gx0:.6g}, "
                              f"{gy0:.6g}, {gx1:.6g}, {gy1:.6g} in its CRS); choose an extent over the raster")
        return window

    def census(self) -> Census:
        """Labelled pixels per cell and per class (one pass over the labels, then kept): refuses undeclared label
        values and warns about classes with almost no pixels."""
        if self._census is not None:
            return self._census
        lab = self.cfg.labels
        classification = lab.task != "regression"
        undeclared: dict[float, int] = {}

        def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
            raw, valid = self.labels.read(window)
            if classification and not lab.is_vector:
                unknown = valid & ~np.isin(raw, self._class_values)
                for v in lab.ignore:
                    unknown &= raw != v
                if unknown.any():
                    values, counts = np.unique(raw[unknown], return_counts=True)
                    for v, n in zip(values.tolist(), counts.tolist()):
                        undeclared[v] = undeclared.get(v, 0) + n
            return self._indices(raw, valid, window)

        cell = census_cell(self.cfg.split.block_size, self.cfg.patch_size)
        census = label_census(read, self.grid.width, self.grid.height, cell, len(self.classes))
        if undeclared:
            shown = ", ".join(f"{v:g}: {n} px" for v, n in sorted(undeclared.items())[:10])
            more = f" and {len(undeclared) - 10} more" if len(undeclared) > 10 else ""
            raise ConfigError(
                f"the label raster {str(lab.path)!r} holds values that labels.classes does not declare "
                f"({shown}{more}); add them to labels.classes, or list them under labels.ignore to leave those "
                "pixels out")
        total = int(census.counts.sum())
        if total == 0:
            where = " inside the training extent" if self.extent else ""
            raise RasterError(f"no labelled pixel{where}: the labels {lab.path.name!r} cover no valid pixel of the "
                              "input raster; label the area you train on")
        for c, n in zip(self.classes, census.per_class.tolist()):
            if n < max(50, total // 1000):
                log.warning("class %r has only %d labelled pixel(s) of %d: the model can hardly learn it; label more "
                            "of it, or merge it into another class", c.name, n, total)
        self._census = census
        return census

    def sources(self, variant: str) -> tuple[list[Source], list[Source]]:
        """(network inputs, reconstruction targets) for a variant."""
        if variant == "mtl":
            if not self.aux:
                raise ConfigError("the 'mtl' variant needs at least one modality under 'aux' in the configuration")
            return self.inputs, self.aux
        if variant == "multimodal":
            return self.inputs + self.aux, []
        if variant == "unimodal":
            return self.inputs, []
        raise ConfigError(f"unknown variant {variant!r}; choose mtl, unimodal or multimodal")

    @staticmethod
    def read_stack(sources: list[Source], window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Raw values of several sources stacked along channels, and where all of them are valid."""
        parts, valid = [], None
        for s in sources:
            data, v = read_window(s.ds, s.bands, window)
            parts.append(data)
            valid = v if valid is None else valid & v
        return np.concatenate(parts), valid

    def read_labels(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Label window: class indices (IGNORE_INDEX where unlabelled) or raw values, and validity (False outside
        the training extent)."""
        return self._indices(*self.labels.read(window), window)

    def _indices(self, raw: np.ndarray, valid: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
        if not self.cfg.labels.is_vector:
            for v in self.cfg.labels.ignore:
                valid &= raw != v
        if self.extent is not None:
            valid &= inside(window, self.extent)
        if self.cfg.labels.task == "regression":
            return raw, valid
        idx = class_indices(raw, valid, self._class_values, IGNORE_INDEX)
        return idx, idx != IGNORE_INDEX


def block_split(scene: Scene, split: SplitConfig) -> dict[str, list[Window]]:
    """Assign square blocks of the grid to train/val/test at random (seeded), never single pixels
    (:func:`mtl_core.split.split_blocks`: ``mtl explain --split`` rebuilds the same blocks).

    Blocks without a single labelled pixel are left out (sparse polygon labels keep only the blocks they touch).
    Each split receives at least one block; how many, and their labelled pixels, are logged.
    """
    census = scene.census()
    size = split.block_size
    if size % census.cell:  # a split config changed after the census (mtl evaluate uses the model's)
        census = label_census(scene.read_labels, scene.grid.width, scene.grid.height, census_cell(size))
    per_block = census.blocks(size)
    blocks = split_blocks(scene.grid.width, scene.grid.height, size, split.val_fraction, split.test_fraction,
                          split.seed, per_block)
    log.info("split of %d-px blocks holding labels: %s", size, ", ".join(
        f"{k} {len(v)} ({labelled_pixels(per_block, v, size):,} labelled px)" for k, v in blocks.items()))
    return blocks


def labelled_pixels(per_block: np.ndarray, blocks: list[Window], block_size: int) -> int:
    """Labelled pixels in ``blocks``, from a census's per-block counts."""
    return int(sum(per_block[y // block_size, x // block_size] for x, y, _, _ in blocks))


def _moments(sources: list[Source], scene: Scene, blocks: list[Window]) -> list[tuple[float, float]]:
    n = sum(len(s.bands) for s in sources)
    count, total, total_sq = np.zeros(n), np.zeros(n), np.zeros(n)
    for w in blocks:
        data, valid = Scene.read_stack(sources, w)
        vals = data[:, valid].astype(np.float64)
        count += vals.shape[1]
        total += vals.sum(axis=1)
        total_sq += (vals * vals).sum(axis=1)
    if not count.all():
        raise RasterError("the training blocks hold no valid pixel of some band; check the rasters' nodata values")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return [(float(m), float(s) if s > 1e-6 else 1.0) for m, s in zip(mean, std)]


def modalities(sources: list[Source], scene: Scene, train_blocks: list[Window]) -> list[Modality]:
    """Describe sources as spec modalities with normalisation statistics from the training blocks only."""
    if not sources:
        return []
    stats = iter(_moments(sources, scene, train_blocks))
    return [
        Modality(s.name, [Band(n, *next(stats)) for n in s.names], s.units)
        for s in sources
    ]


def regression_target(scene: Scene, train_blocks: list[Window]) -> Target:
    """The regression target's normalisation from the training blocks only."""
    vals = []
    for w in train_blocks:
        raw, valid = scene.read_labels(w)
        vals.append(raw[valid].astype(np.float64))
    v = np.concatenate(vals)
    if v.size == 0:
        raise RasterError("the training blocks hold no labelled pixel")
    lab = scene.cfg.labels
    return Target(lab.name, lab.units, float(v.mean()), float(v.std()) or 1.0)


class SampleReader:
    """Reads normalised sample dicts for any window of a scene, padded to a fixed size."""

    def __init__(
        self,
        scene: Scene,
        variant: str,
        inputs: list[Modality],
        aux: list[Modality],
        target: Target | None = None,
    ) -> None:
        self.scene = scene
        self.task = scene.cfg.labels.task
        self.in_sources, self.aux_sources = scene.sources(variant)
        self.in_bands = [b for m in inputs for b in m.bands]
        for what, sources, bands in (("inputs", self.in_sources, self.in_bands),
                                     ("auxiliary modalities", self.aux_sources, [b for m in aux for b in m.bands])):
            have = sum(len(s.bands) for s in sources)
            if have != len(bands):
                raise ConfigError(
                    f"the configuration's {what} give {have} band(s) ({', '.join(n for s in sources for n in s.names)})"
                    f" but the model's take {len(bands)} ({', '.join(b.name for b in bands)}); use the configuration "
                    "the model was trained on, or rasters with those bands")
        self.aux_bands = {m.name: m.bands for m in aux}
        self.target = target

    def read(self, window: Window, size: tuple[int, int] | None = None, every_source_valid: bool = False) -> dict:
        """Sample dict for ``window``, padded (as nodata) to ``size`` = (h, w) if given.

        With ``every_source_valid``, labels count only where every modality of the dataset is valid
        (not just this variant's inputs), so that all variants are scored on the same pixels.
        """
        h, w = size or (window[3], window[2])
        data, valid = Scene.read_stack(self.in_sources, window)
        labels, labelled = self.scene.read_labels(window)
        labelled &= valid
        if every_source_valid:
            labelled &= Scene.read_stack(self.scene.inputs + self.scene.aux, window)[1]
        sample = {
            "image": torch.from_numpy(_pad(normalise(data, valid, self.in_bands), h, w, 0.0)),
            "valid": torch.from_numpy(_pad(valid, h, w, False)),
            "aux": {},
            "aux_valid": {},
        }
        if self.task == "segmentation":
            labels = np.where(labelled, labels, IGNORE_INDEX)
            sample["mask"] = torch.from_numpy(_pad(labels, h, w, IGNORE_INDEX))
        elif self.task == "classification":
            label, has = cell_majority(labels, labelled, max(labels.shape), len(self.scene.classes))
            sample["label"] = torch.tensor(int(label[0, 0]) if has[0, 0] else IGNORE_INDEX)
        else:
            t = (labels - self.target.mean) / self.target.std
            sample["target"] = torch.from_numpy(_pad(np.where(labelled, t, 0.0)[None].astype(np.float32), h, w, 0.0))
            sample["target_valid"] = torch.from_numpy(_pad(labelled, h, w, False))
        for s in self.aux_sources:
            a, av = Scene.read_stack([s], window)
            sample["aux"][s.name] = torch.from_numpy(_pad(normalise(a, av, self.aux_bands[s.name]), h, w, 0.0))
            sample["aux_valid"][s.name] = torch.from_numpy(_pad(av & valid, h, w, False))
        return sample


def _augment(sample: dict, rng: np.random.Generator) -> dict:
    """Random flips and quarter turns, applied to every per-pixel array of the sample alike."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))

    def tf(t: torch.Tensor) -> torch.Tensor:
        if t.dim() < 2:
            return t
        t = torch.rot90(t, k, dims=(-2, -1))
        return torch.flip(t, dims=(-1,)) if flip else t

    return {k: ({n: tf(t) for n, t in v.items()} if isinstance(v, dict) else tf(v)) for k, v in sample.items()}


class TrainPatches(torch.utils.data.Dataset):
    """``length`` random training patches (seeded), each lying wholly inside training blocks and holding labels.

    Patch ``i`` is drawn from its own seeded generator, when it is asked for: a run of unknown length (a budget in
    minutes) takes what it needs. Starts are drawn uniformly; a patch that leaves the training blocks, or holds no
    labelled census cell, is drawn again (up to 200 times), so with sparse polygon labels no step is spent on
    unlabelled ground (with labels everywhere nothing is refused). Training blocks too isolated for a random
    patch fall back to the blocks themselves.
    """

    TRIES = 200

    def __init__(self, reader: SampleReader, train_blocks: list[Window], patch: int, length: int, seed: int,
                 augment: bool = True) -> None:
        self.reader, self.patch, self.length, self.seed, self.augment = reader, patch, length, seed, augment
        self.blocks = train_blocks
        grid, block = reader.scene.grid, reader.scene.cfg.split.block_size
        census = reader.scene.census()
        self.grid, self.block, self.cell = grid, block, census.cell
        nby, nbx = -(-grid.height // block), -(-grid.width // block)
        self.is_train = np.zeros((nby, nbx), dtype=bool)
        for x, y, _, _ in train_blocks:
            self.is_train[y // block, x // block] = True
        # labelled cells summed over any rectangle of cells in O(1): an integral image
        self.summed = np.pad((census.counts > 0).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def start(self, i: int) -> tuple[int, int]:
        """The top-left pixel of patch ``i``."""
        rng = np.random.default_rng((self.seed, i))
        grid, block, cell, patch = self.grid, self.block, self.cell, self.patch
        max_x, max_y = max(grid.width - patch, 0), max(grid.height - patch, 0)
        for _ in range(self.TRIES):
            x, y = int(rng.integers(max_x + 1)), int(rng.integers(max_y + 1))
            x1, y1 = min(x + patch, grid.width) - 1, min(y + patch, grid.height) - 1
            if not self.is_train[y // block:y1 // block + 1, x // block:x1 // block + 1].all():
                continue
            cx0, cy0 = -(-x // cell), -(-y // cell)  # the census cells wholly inside the patch
            cx1, cy1 = (x1 + 1) // cell, (y1 + 1) // cell
            s = self.summed
            if cx1 <= cx0 or cy1 <= cy0 or s[cy1, cx1] - s[cy0, cx1] - s[cy1, cx0] + s[cy0, cx0]:
                return x, y
        b = self.blocks[int(rng.integers(len(self.blocks)))]  # training blocks too scattered for whole patches
        return b[0], b[1]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        x, y = self.start(i)
        g = self.grid
        w = (x, y, min(self.patch, g.width - x), min(self.patch, g.height - y))
        sample = self.reader.read(w, (self.patch, self.patch))
        return _augment(sample, np.random.default_rng((self.seed, i, 1))) if self.augment else sample


def class_counts(scene: Scene, blocks: list[Window], classes: int) -> np.ndarray:
    """Labelled pixels per class index in ``blocks``, (classes,) int64."""
    counts = np.zeros(classes, dtype=np.int64)
    for w in blocks:
        idx, labelled = scene.read_labels(w)
        counts += np.bincount(idx[labelled].astype(np.int64), minlength=classes)[:classes]
    return counts


def eval_windows(blocks: list[Window], task: str, patch: int) -> Iterator[Window]:
    """Evaluation windows: whole blocks, or patch-sized cells of them for classification."""
    for bx, by, bw, bh in blocks:
        if task == "classification":
            for x, y, w, h in windows(bw, bh, patch):
                yield bx + x, by + y, w, h
        else:
            yield bx, by, bw, bh

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
from ..io.raster import Grid, Window, align_to, check_bands, check_georeferenced, open_raster, read_window, windows
from ..norm import cell_majority, class_indices, denormalise, normalise  # noqa: F401  (part of this module's interface)
from ..spec import Band, Modality, Target
from ..split import split_blocks

SPLITS = ("train", "val", "test")


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
    """The rasters of one dataset configuration, aligned on the grid of the first input raster."""

    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg
        first = _open_source(cfg.inputs[0], None, f"input raster {cfg.inputs[0].name!r}")
        self.grid = Grid.of(first.ds)
        self.inputs = [first] + [_open_source(s, self.grid, f"input raster {s.name!r}") for s in cfg.inputs[1:]]
        self.aux = [_open_source(s, self.grid, f"auxiliary raster {s.name!r}") for s in cfg.aux]
        lab = open_raster(cfg.labels.path, "label raster")
        check_bands(lab, [cfg.labels.band], "label raster")
        self.labels = align_to(lab, self.grid, "label raster", categorical=cfg.labels.task != "regression")
        self._class_values = np.array([c.value for c in cfg.labels.classes], dtype=np.float64)
        if cfg.labels.task != "regression":
            self._check_label_values()

    def _check_label_values(self) -> None:
        """Refuse label values that are neither declared classes nor listed under ``labels.ignore``: dropping
        them without a word would silently change what the model learns and how the scene is split."""
        lab = self.cfg.labels
        known = set(self._class_values.tolist()) | set(lab.ignore)
        undeclared: dict[float, int] = {}
        for w in windows(self.grid.width, self.grid.height, 512):
            raw, valid = read_window(self.labels, [lab.band], w)
            values, counts = np.unique(raw[0][valid], return_counts=True)
            for v, n in zip(values.tolist(), counts.tolist()):
                if v not in known:
                    undeclared[v] = undeclared.get(v, 0) + n
        if undeclared:
            shown = ", ".join(f"{v:g}: {n} px" for v, n in sorted(undeclared.items())[:10])
            more = f" and {len(undeclared) - 10} more" if len(undeclared) > 10 else ""
            raise ConfigError(
                f"the label raster {str(lab.path)!r} holds values that labels.classes does not declare "
                f"({shown}{more}); add them to labels.classes, or list them under labels.ignore to leave those "
                "pixels out")

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
        """Label window: class indices (IGNORE_INDEX where unlabelled) or raw values, and validity."""
        raw, valid = read_window(self.labels, [self.cfg.labels.band], window)
        raw = raw[0]
        for v in self.cfg.labels.ignore:
            valid &= raw != v
        if self.cfg.labels.task == "regression":
            return raw, valid
        idx = class_indices(raw, valid, self._class_values, IGNORE_INDEX)
        return idx, idx != IGNORE_INDEX


def block_split(scene: Scene, split: SplitConfig) -> dict[str, list[Window]]:
    """Assign square blocks of the grid to train/val/test at random (seeded), never single pixels
    (:func:`mtl_core.split.split_blocks`: ``mtl explain --split`` rebuilds the same blocks).

    Blocks without a single labelled pixel are left out. Each split receives at least one block.
    """
    return split_blocks(scene.grid.width, scene.grid.height, split.block_size, split.val_fraction,
                        split.test_fraction, split.seed, lambda w: bool(scene.read_labels(w)[1].any()))


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
            label, has = cell_majority(labels, labelled, max(labels.shape), len(self.scene.cfg.labels.classes))
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
    """``length`` random training patches (seeded), each lying wholly inside training blocks."""

    def __init__(self, reader: SampleReader, train_blocks: list[Window], patch: int, length: int, seed: int) -> None:
        self.reader, self.patch = reader, patch
        grid, block = reader.scene.grid, reader.scene.cfg.split.block_size
        nby, nbx = -(-grid.height // block), -(-grid.width // block)
        is_train = np.zeros((nby, nbx), dtype=bool)
        for x, y, _, _ in train_blocks:
            is_train[y // block, x // block] = True
        rng = np.random.default_rng(seed)
        self.seed = seed
        max_x, max_y = max(grid.width - patch, 0), max(grid.height - patch, 0)
        starts: list[tuple[int, int]] = []
        for _ in range(length * 200):
            if len(starts) == length:
                break
            x, y = int(rng.integers(max_x + 1)), int(rng.integers(max_y + 1))
            x1, y1 = min(x + patch, grid.width) - 1, min(y + patch, grid.height) - 1
            if is_train[y // block:y1 // block + 1, x // block:x1 // block + 1].all():
                starts.append((x, y))
        if len(starts) < length:
            # Training blocks too scattered for whole patches: fall back to the blocks themselves.
            starts += [(b[0], b[1]) for b in train_blocks] * (length // max(len(train_blocks), 1) + 1)
            starts = starts[:length]
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict:
        x, y = self.starts[i]
        g = self.reader.scene.grid
        w = (x, y, min(self.patch, g.width - x), min(self.patch, g.height - y))
        sample = self.reader.read(w, (self.patch, self.patch))
        return _augment(sample, np.random.default_rng((self.seed, i)))


def eval_windows(blocks: list[Window], task: str, patch: int) -> Iterator[Window]:
    """Evaluation windows: whole blocks, or patch-sized cells of them for classification."""
    for bx, by, bw, bh in blocks:
        if task == "classification":
            for x, y, w, h in windows(bw, bh, patch):
                yield bx + x, by + y, w, h
        else:
            yield bx, by, bw, bh

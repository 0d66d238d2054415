"""The train/val/test split of a scene into square blocks: one function for training and for ``mtl explain --split``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import RasterError
from .io.raster import Window, windows

SPLITS = ("train", "val", "test")


@dataclass
class Census:
    """Where the labels are: labelled pixels per ``cell`` x ``cell`` cell of the grid, and per class.

    One pass over the labels feeds the block split (which blocks hold labels, how many pixels each split gets)
    and the patch sampler (patches drawn where the labels are), so sparse polygon labels cost no wasted steps.
    """

    cell: int
    counts: np.ndarray  # (cells down, cells across) int64
    per_class: np.ndarray  # (classes,) int64; empty for regression

    def blocks(self, block_size: int) -> np.ndarray:
        """(blocks down, blocks across) labelled pixels per block; ``block_size`` a multiple of the cell."""
        k = block_size // self.cell
        ch, cw = self.counts.shape
        padded = np.zeros((-(-ch // k) * k, -(-cw // k) * k), dtype=np.int64)
        padded[:ch, :cw] = self.counts
        return padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k).sum(axis=(1, 3))


def census_cell(block_size: int, patch: int = 16) -> int:
    """The census cell: fine enough to place patches (at most 16 px) and dividing the block size."""
    return math.gcd(block_size, min(patch, 16))


def label_census(read: Callable[[Window], tuple[np.ndarray, np.ndarray]], width: int, height: int, cell: int,
                 classes: int = 0) -> Census:
    """Count labelled pixels per cell (and per class index) reading the labels in windows of about 1024 px.

    Args:
        read: window -> (class indices or values, labelled) as (h, w) arrays.
        width, height: the grid's size.
        cell: the cell size in pixels.
        classes: the number of classes (0: do not count per class).
    """
    counts = np.zeros((-(-height // cell), -(-width // cell)), dtype=np.int64)
    per_class = np.zeros(classes, dtype=np.int64)
    step = cell * max(1, 1024 // cell)
    for x, y, w, h in windows(width, height, step):
        values, labelled = read((x, y, w, h))
        ch, cw = -(-h // cell), -(-w // cell)
        padded = np.zeros((ch * cell, cw * cell), dtype=np.int64)
        padded[:h, :w] = labelled
        counts[y // cell:y // cell + ch, x // cell:x // cell + cw] = padded.reshape(ch, cell, cw, cell).sum(axis=(1, 3))
        if classes:
            per_class += np.bincount(values[labelled].astype(np.int64), minlength=classes)[:classes]
    return Census(cell, counts, per_class)


def split_blocks(width: int, height: int, block_size: int, val_fraction: float, test_fraction: float, seed: int,
                 labelled: np.ndarray) -> dict[str, list[Window]]:
    """Assign the square blocks of a ``width`` x ``height`` grid to train/val/test at random (seeded), never single
    pixels. Blocks without a labelled pixel (``labelled``: (blocks down, across) pixel counts, 0) are left out;
    each split gets at least one.

    Raises:
        RasterError: fewer than 3 blocks hold labelled pixels.
    """
    blocks = [w for w in windows(width, height, block_size) if labelled[w[1] // block_size, w[0] // block_size]]
    if len(blocks) < 3:
        raise RasterError(
            f"only {len(blocks)} block(s) of {block_size} px hold labelled pixels; a train/val/test split needs at "
            f"least 3 (validation and test must not be empty): lower split.block_size (at least patch_size), or "
            "label more places further apart"
        )
    order = np.random.default_rng(seed).permutation(len(blocks))
    n_test = max(1, round(test_fraction * len(blocks)))
    n_val = max(1, round(val_fraction * len(blocks)))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return {name: sorted(blocks[i] for i in idx) for name, idx in (("train", train), ("val", val), ("test", test))}


def block_grid(blocks: list[Window], width: int, height: int, block_size: int) -> np.ndarray:
    """(blocks down, blocks across) bool: which blocks of the regular grid are listed."""
    grid = np.zeros((-(-height // block_size), -(-width // block_size)), dtype=bool)
    for x, y, _, _ in blocks:
        grid[y // block_size, x // block_size] = True
    return grid

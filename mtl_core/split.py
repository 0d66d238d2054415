"""The train/val/test split of a scene into square blocks: one function for training and for ``mtl explain --split``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import RasterError
from .io.raster import Window, windows

SPLITS = ("train", "val", "test")


def split_blocks(width: int, height: int, block_size: int, val_fraction: float, test_fraction: float, seed: int,
                 labelled: Callable[[Window], bool]) -> dict[str, list[Window]]:
    """Assign the square blocks of a ``width`` x ``height`` grid to train/val/test at random (seeded), never single
    pixels. Blocks without a labelled pixel (``labelled(window)`` False) are left out; each split gets at least one.

    Raises:
        RasterError: fewer than 3 blocks hold labelled pixels.
    """
    blocks = [w for w in windows(width, height, block_size) if labelled(w)]
    if len(blocks) < 3:
        raise RasterError(
            f"only {len(blocks)} block(s) of {block_size} px hold labelled pixels; a train/val/test split "
            "needs at least 3: lower split.block_size or label a larger area"
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

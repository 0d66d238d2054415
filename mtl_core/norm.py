"""Band normalisation with the statistics stored in a model spec (numpy only)."""

from __future__ import annotations

import numpy as np

from .spec import Band


def normalise(data: np.ndarray, valid: np.ndarray, bands: list[Band]) -> np.ndarray:
    """(x - mean) / std per band; invalid pixels become 0 (the training mean), never a learned value."""
    mean = np.array([b.mean for b in bands], dtype=np.float32)[:, None, None]
    std = np.array([b.std for b in bands], dtype=np.float32)[:, None, None]
    out = (data - mean) / std
    out[:, ~valid] = 0.0
    return out


def class_indices(raw: np.ndarray, valid: np.ndarray, values: np.ndarray, fill: int = -1) -> np.ndarray:
    """Map class values to class indices (position in ``values``); ``fill`` where invalid or unknown."""
    idx = np.full(raw.shape, fill, dtype=np.int64)
    for i, value in enumerate(values):
        idx[valid & (raw == value)] = i
    return idx


def cell_majority(idx: np.ndarray, labelled: np.ndarray, cell: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The label of each ``cell`` x ``cell`` cell as patch classification trains on it: the most frequent class
    among its labelled pixels (the lowest class index on ties).

    Args:
        idx: (h, w) class indices.
        labelled: (h, w) pixels with a label.
        cell: cell size in pixels (a partial cell at the right or bottom edge counts its pixels only).
        n_classes: number of classes.

    Returns:
        (cells_h, cells_w) class index (-1 where no pixel is labelled) and whether the cell is labelled.
    """
    h, w = idx.shape
    ch, cw = -(-h // cell), -(-w // cell)
    padded = np.full((ch * cell, cw * cell), -1, dtype=np.int64)
    padded[:h, :w] = np.where(labelled, idx, -1)
    blocks = padded.reshape(ch, cell, cw, cell)
    counts = np.stack([(blocks == c).sum(axis=(1, 3)) for c in range(n_classes)])
    has = counts.sum(axis=0) > 0
    return np.where(has, counts.argmax(axis=0), -1), has


def denormalise(data: np.ndarray, bands: list[Band]) -> np.ndarray:
    mean = np.array([b.mean for b in bands], dtype=np.float32)[:, None, None]
    std = np.array([b.std for b in bands], dtype=np.float32)[:, None, None]
    return data * std + mean

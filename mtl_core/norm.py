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


def denormalise(data: np.ndarray, bands: list[Band]) -> np.ndarray:
    mean = np.array([b.mean for b in bands], dtype=np.float32)[:, None, None]
    std = np.array([b.std for b in bands], dtype=np.float32)[:, None, None]
    return data * std + mean

"""Blending: overlapping tiles' outputs summed with ramp weights, finished rows handed on, chunk seams carried.

The accumulators hold one row of tiles of one chunk (every blended channel, the weights and the
validity). Once a row of tiles is complete, the pixel rows no later tile touches are divided by their
weights and handed on; the unfinished rows move to the top. What a chunk's last tiles put into the next
chunk's first ``overlap`` columns is kept for every raster row and added when that chunk gets there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .tiling import Plan, ramp


@dataclass
class Layout:
    """Where each blended quantity sits among the accumulators' channels."""

    main: int
    aux: dict[str, int]
    sensitivity: dict[str, int]  # "main" and modality names -> channels (one per input band)

    @property
    def channels(self) -> int:
        return self.main + sum(self.aux.values()) + sum(self.sensitivity.values())

    def split(self, arr: np.ndarray) -> dict[str, np.ndarray]:
        out, off = {"main": arr[:self.main]}, self.main
        for name, n in self.aux.items():
            out[f"aux_{name}"], off = arr[off:off + n], off + n
        for name, n in self.sensitivity.items():
            out[f"sens_{name}"], off = arr[off:off + n], off + n
        return out


class Blender:
    """The accumulators of a run (used by one thread: the writer).

    Args:
        plan: the tiling plan.
        channels: blended channels per pixel.
        height: the window's height (the seam buffers hold every row).
    """

    def __init__(self, plan: Plan, channels: int, height: int) -> None:
        self.plan, self.height = plan, height
        th, span, seam = plan.tile_height, plan.span, plan.seam_width
        self.acc = np.zeros((channels, th, span), dtype=np.float32)
        self.wsum = np.zeros((th, span), dtype=np.float32)
        self.valid = np.zeros((th, span), dtype=bool)
        self.seam = np.zeros((channels, height, seam), dtype=np.float32)
        self.seam_w = np.zeros((height, seam), dtype=np.float32)
        self.seam_valid = np.zeros((height, seam), dtype=bool)
        self.weights: dict[tuple[int, int], np.ndarray] = {}
        self.base = 0  # first window row held in the accumulators
        self.pixels = 0  # valid input pixels given to the model (overlaps counted twice)
        self.non_finite = 0  # of those, the ones the model answered NaN or infinity for

    def add(self, b: int, valids: list[np.ndarray], keep: list[int], stacked: np.ndarray) -> None:
        """Add batch ``b``'s blended channels ``(B, channels, h, w)`` of the tiles ``keep`` (indices into the
        batch's tiles, whose validity masks are ``valids``); ``stacked`` is changed in place."""
        c, k, tiles = self.plan.batches[b]
        lo = self.plan.bounds[c]
        weight = self.weights.get(stacked.shape[2:])
        if weight is None:
            weight = self.weights[stacked.shape[2:]] = ramp(*stacked.shape[2:], self.plan.overlap)
        bad = ~np.isfinite(stacked)  # a damaged model can answer NaN or infinity
        finite = None
        if bad.any():  # rare: only then are pixels masked tile by tile
            finite = ~bad.any(axis=1)  # (B, H, W)
            stacked[bad] = 0.0
        stacked *= weight
        r = self.plan.rows[k][0] - self.base
        for j, i in enumerate(keep):
            h, w = valids[i].shape
            xi = tiles[i][0] - lo
            valid, wt = valids[i], weight[:h, :w]
            self.pixels += int(valid.sum())
            if finite is not None:
                ok = finite[j, :h, :w]
                self.non_finite += int((valid & ~ok).sum())
                valid, wt = valid & ok, wt * ok
            self.acc[:, r:r + h, xi:xi + w] += stacked[j, :, :h, :w]
            self.wsum[r:r + h, xi:xi + w] += wt
            self.valid[r:r + h, xi:xi + w] |= valid

    def finished(self, b: int) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
        """After batch ``b``: if it completed its row of tiles, the finished rows of its chunk as
        ``(channels, n, width)`` blended values, ``(n, width)`` validity, first row and first column in the
        window. The arrays are views of the accumulators, valid until the next call."""
        plan = self.plan
        c, k, _ = plan.batches[b]
        if b + 1 < len(plan.batches) and plan.batches[b + 1][:2] == (c, k):
            return  # the row of tiles of this chunk goes on
        lo, hi = plan.bounds[c], plan.bounds[c + 1]
        base, seam = self.base, plan.seam_width
        end = plan.rows[k + 1][0] if k + 1 < len(plan.rows) else self.height
        n = end - base
        acc, wsum, valid = self.acc, self.wsum, self.valid
        if c > 0 and seam:  # add what the chunk before put into this one's first columns
            acc[:, :n, :seam] += self.seam[:, base:end]
            wsum[:n, :seam] += self.seam_w[base:end]
            valid[:n, :seam] |= self.seam_valid[base:end]
        if c + 1 < len(plan.spans) and seam:
            cols = slice(hi - lo, hi - lo + seam)
            self.seam[:, base:end], self.seam_w[base:end], self.seam_valid[base:end] = (
                acc[:, :n, cols], wsum[:n, cols], valid[:n, cols])
        rows = acc[:, :n, :hi - lo]  # final: divided in place, handed on, then shifted out
        rows /= np.maximum(wsum[:n, :hi - lo], 1e-12)
        yield rows, valid[:n, :hi - lo], base, lo
        th = plan.tile_height
        if end == self.height:  # chunk done: the next one starts from empty buffers
            for buf in (acc, wsum, valid):
                buf[...] = 0
            self.base = 0
        else:
            for buf in (acc, wsum, valid):  # shift the unfinished rows to the top
                buf[..., :th - n, :] = buf[..., n:, :]
                buf[..., th - n:, :] = 0
            self.base = end

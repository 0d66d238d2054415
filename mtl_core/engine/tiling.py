"""The tiling plan: which windows the model sees, in which batches, and how overlapping tiles are blended.

The raster is processed in column chunks (2048 px wide by default) and, within a chunk, in rows of
overlapping tiles. Overlapping predictions are blended with a linear ramp over the overlap, so no seam
shows. Each chunk is tiled on its own, reaching ``overlap`` pixels into the next one; what its last
tiles put there is kept (``overlap`` columns for every raster row) and blended in when the next chunk
gets there, as between any two tiles, so no tile is computed twice. The last tile of a row or column
is only as large as it needs to be (at least half a tile). Patch classification has one prediction per
patch-sized cell instead: cells on a fixed grid, no overlap, column chunks of whole cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, RasterError
from ..io.raster import Grid, Window, overview_factors, padded_size
from ..spec import ModelSpec


def extent_window(grid: Grid, extent: tuple[float, float, float, float] | None) -> Window:
    """Pixel window of an extent (in the raster's CRS), clipped to the raster; whole raster if None."""
    if extent is None:
        return 0, 0, grid.width, grid.height
    xmin, ymin, xmax, ymax = extent
    if not all(math.isfinite(v) for v in extent):
        raise RasterError(f"extent {tuple(extent)} is not finite; give four numbers in the raster's CRS")
    if not (xmax > xmin and ymax > ymin):
        raise RasterError(f"extent {extent} is empty; give xmin ymin xmax ymax with xmin < xmax and ymin < ymax")
    x0, dx, _, y0, _, dy = grid.transform

    def span(a: float, b: float, origin: float, step: float, n: int) -> tuple[int, int]:
        # Works for either sign of the pixel size: north-up (dy < 0) and south-up (dy > 0) grids alike.
        lo, hi = sorted(((a - origin) / step, (b - origin) / step))
        return max(0, math.floor(lo + 1e-9)), min(n, math.ceil(hi - 1e-9))

    c0, c1 = span(xmin, xmax, x0, dx, grid.width)
    r0, r1 = span(ymin, ymax, y0, dy, grid.height)
    if c1 <= c0 or r1 <= r0:
        b = grid.bounds
        raise RasterError(
            f"extent ({xmin}, {ymin}, {xmax}, {ymax}) does not intersect the raster, which covers "
            f"({b[0]}, {b[1]}, {b[2]}, {b[3]}) in its own CRS; give the extent in the raster's CRS"
        )
    return c0, r0, c1 - c0, r1 - r0


def sub_grid(grid: Grid, window: Window, cell: int = 1) -> Grid:
    """The grid of a window of ``grid``, optionally with pixels ``cell`` times larger."""
    x, y, w, h = window
    x0, dx, rx, y0, ry, dy = grid.transform
    return Grid(grid.wkt, (x0 + x * dx, dx * cell, rx, y0 + y * dy, ry, dy * cell), -(-w // cell), -(-h // cell))


def tile_spans(start: int, end: int, tile: int, overlap: int, divisor: int) -> list[tuple[int, int]]:
    """(offset, size) of the tiles covering ``[start, end)`` along one axis.

    Neighbours share ``overlap`` pixels. Sizes are multiples of ``divisor``; the last tile ends exactly
    at ``end`` and is only as large as it needs to be, but at least half a tile, so it keeps some
    context and little work is repeated. A span shorter than a tile gets one tile, padded.
    """
    if end - start <= tile:
        return [(start, padded_size(end - start, divisor))]
    stride = tile - overlap
    spans = [(o, tile) for o in range(start, end - tile + 1, stride)]
    last = spans[-1][0] + tile
    if last < end:
        size = min(tile, padded_size(max(end - last + overlap, tile // 2), divisor))
        spans.append((end - size, size))
    return spans


def ramp(height: int, width: int, overlap: int) -> np.ndarray:
    """2-D blending weights: 1 in the middle, falling linearly to near 0 across the overlap."""

    def axis(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, dtype=np.float32)
        i = np.arange(n, dtype=np.float32) + 0.5
        return np.clip(np.minimum(i, n - i) / overlap, 1e-3, 1.0)

    return np.outer(axis(height), axis(width))


@dataclass
class Plan:
    """Where the tiles of a window go (offsets relative to the window).

    Attributes:
        rows: (offset, height) of each row of tiles.
        bounds: first column of each chunk, then the window's width.
        spans: per chunk, (offset, width) of its tiles (reaching ``overlap`` px into the next chunk).
        batches: (chunk, row of tiles, tiles of one size), in the order they are run.
        overlap: pixels shared by neighbouring tiles.
        cell: pixels per patch-classification cell (1 otherwise).
    """

    rows: list[tuple[int, int]]
    bounds: list[int]
    spans: list[list[tuple[int, int]]]
    batches: list[tuple[int, int, list[tuple[int, int]]]]
    overlap: int
    cell: int

    @classmethod
    def of(cls, spec: ModelSpec, width: int, height: int, divisor: int, tile: int | None, overlap: int | None,
           chunk: int, batch_size: int) -> Plan:
        """The plan of a ``width`` x ``height`` window for a model whose input sizes are multiples of ``divisor``.

        Raises:
            ConfigError: a chunk width or overlap the engine cannot use.
        """
        if chunk < 256 or chunk % 256:
            raise ConfigError(f"chunk width {chunk} must be a positive multiple of 256")
        if spec.task == "classification":  # one prediction per patch-sized cell, cells on a fixed grid
            cell = spec.patch_size
            rows = [(y, cell) for y in range(0, height, cell)]
            # Chunks of whole cells, starting where the pixel layers' overview blocks (256 px) and the cell
            # layers' (2 ** levels cells) line up; no overlap, so nothing is carried between them.
            levels = len(overview_factors(-(-width // cell), -(-height // cell)))
            step = math.lcm(256, cell << levels)
            step = -(-chunk // step) * step
            bounds = list(range(0, width, step)) + [width]
            spans = [[(x, cell) for x in range(lo, hi, cell)] for lo, hi in zip(bounds, bounds[1:])]
            overlap = 0
        else:
            cell = 1
            tile = padded_size(tile or max(256, spec.patch_size), divisor)
            overlap = overlap if overlap is not None else tile // 8
            if not 0 <= overlap <= tile // 2:
                raise ConfigError(f"overlap {overlap} must be between 0 and half the tile size ({tile // 2})")
            rows = tile_spans(0, height, tile, overlap, divisor)
            # Chunks start at multiples of the chunk width (so overview blocks line up); a remainder
            # narrower than a tile joins the chunk before it.
            chunk = -(-max(chunk, tile) // 256) * 256
            bounds = [b for b in range(0, width, chunk) if b == 0 or width - b >= tile] + [width]
            spans = [tile_spans(lo, min(width, hi + overlap), tile, overlap, divisor)
                     for lo, hi in zip(bounds, bounds[1:])]
        batches = []
        for c, row in enumerate(spans):
            for k in range(len(rows)):
                for size in dict.fromkeys(w for _, w in row):
                    same = [t for t in row if t[1] == size]
                    batches += [(c, k, same[i:i + batch_size]) for i in range(0, len(same), batch_size)]
        return cls(rows, bounds, spans, batches, overlap, cell)

    def shard(self, first: int, end: int) -> Plan:
        """The plan of the chunks ``first`` .. ``end - 1`` alone (a shard of a distributed run), preceded by the
        batches of chunk ``first - 1`` whose tiles reach into chunk ``first``: what they put there is blended in
        as in one run over every chunk, so the shard's columns come out exactly the same. Whole batches are kept,
        so the model sees the same batches too."""
        if not 0 <= first < end <= len(self.spans):
            raise ConfigError(f"chunks {first}..{end - 1} are not among the plan's {len(self.spans)} chunks")
        seam_start = self.bounds[first]
        batches = [b for b in self.batches if first <= b[0] < end
                   or (b[0] == first - 1 and any(x + w > seam_start for x, w in b[2]))]
        return Plan(self.rows, self.bounds, self.spans, batches, self.overlap, self.cell)

    @property
    def tile_height(self) -> int:
        return self.rows[0][1]

    @property
    def span(self) -> int:
        """The widest chunk's tiles, end to end (the accumulators' width)."""
        width = self.bounds[-1]
        return max(min(width, s[-1][0] + s[-1][1]) - s[0][0] for s in self.spans)

    @property
    def seam_width(self) -> int:
        """Columns one chunk's last tiles put into the next chunk (kept for every raster row)."""
        return self.overlap if len(self.spans) > 1 else 0

    @property
    def tiles(self) -> int:
        return sum(len(b[2]) for b in self.batches)


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(channels: int, plan: Plan, batch: int, height: int) -> None:
    """Refuse, before allocating, a run whose buffers cannot fit in memory (a model file with thousands of
    classes, a huge tile or chunk), naming the options that shrink them."""
    th = plan.tile_height
    per_channel = 4 * (th * plan.span + 2 * batch * th * th + height * plan.seam_width)  # float32
    need = channels * per_channel
    available = _available_memory()
    if available is not None and need > 0.8 * available:
        raise RasterError(
            f"this run needs about {need / 2**30:.1f} GiB for its buffers ({channels} output channels) but "
            f"{available / 2**30:.1f} GiB of memory is available; use a smaller --tile, --chunk or --batch, or "
            "fewer products (the class probabilities and sensitivity add channels)")

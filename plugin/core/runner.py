"""One blocking run of the engine (prediction, or explanation with ground truth), shared by the task and Processing.

It opens everything by path: the model file, the input raster (through GDAL inside ``mtl_core``) and
the ground truth rasters. It never touches a QGIS layer, the project or a widget, so it is safe in a
worker thread. Each run writes into its own new folder; a failed or cancelled run removes that
folder, so nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import inspect
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mtl_core.errors import MtlError

from .params import RunParameters, engine_supports, predict_options


class PluginError(MtlError):
    """A problem the plugin detects before or around the engine (message names the fix)."""


@dataclass
class RunOutcome:
    """What a finished run produced: output paths by product key, and how it ran."""

    outputs: dict[str, str] = field(default_factory=dict)
    run_dir: str = ""
    device: str = ""
    seconds: float = 0.0
    report: str | None = None
    spec: dict = field(default_factory=dict)


def _explain_module():
    """``mtl_core.explain`` when it exists, imports and has ``explain``, else None."""
    try:
        module = importlib.import_module("mtl_core.explain")
    except ImportError:
        return None
    return module if callable(getattr(module, "explain", None)) else None


def _reordered_raster(raster: str, band_map: list[int], folder: Path) -> str:
    """A virtual raster holding ``band_map``'s bands in the model's order (same name stem as ``raster``)."""
    from osgeo import gdal

    path = folder / (Path(raster).stem + ".vrt")
    gdal.UseExceptions()
    ds = gdal.Translate(str(path), raster, format="VRT", bandList=list(band_map))
    if ds is None:
        raise PluginError(f"cannot build a virtual raster with bands {band_map} of {raster!r}; check the band mapping")
    ds = None
    return str(path)


def run(
    params: RunParameters,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> RunOutcome:
    """Run the model over the raster and write every requested product into a new run folder.

    Args:
        params: the run's parameters (paths and numbers only).
        progress: receives the fraction done, 0..1.
        cancelled: polled between tile batches; returning True stops the run.

    Returns:
        The outputs by product key (``main``, ``confidence``, ``aux_<name>``, ``agreement`` …).

    Raises:
        mtl_core.errors.MtlError: anything the engine refuses (message says why and how to fix it);
            ``mtl_core.errors.CancelledError`` when cancelled.
        ImportError: torch or another heavy dependency is missing.
    """
    from mtl_core import inference

    from .model_info import read_spec

    start = time.perf_counter()
    spec = read_spec(params.model_path)
    out_parent = Path(params.out_dir)
    try:
        out_parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PluginError(f"cannot create output folder {str(out_parent)!r} ({exc.strerror}); choose another") from exc
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    run_dir = out_parent / params.run_name(spec.name.split(" ")[0], stamp)
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = out_parent / f"{params.run_name(spec.name.split(' ')[0], stamp)}_{suffix}"
    try:
        run_dir.mkdir()
    except OSError as exc:
        raise PluginError(f"cannot write in output folder {str(out_parent)!r} ({exc.strerror}); choose a "
                          "folder you can write to") from exc
    scratch = Path(tempfile.mkdtemp(prefix="mtl_explain_"))
    try:
        raster = params.raster_path
        overrides = {}
        if params.band_map is not None:
            if engine_supports(inference.PredictOptions, "bands"):
                overrides["bands"] = list(params.band_map)
            elif list(params.band_map) != list(range(1, len(params.band_map) + 1)):
                raster = _reordered_raster(raster, params.band_map, scratch)
        products = tuple(p for p in params.products if p in getattr(inference, "PRODUCTS", params.products))
        if params.has_ground_truth:
            optional = ("probabilities", "sensitivity")
            products += tuple(p for p in getattr(inference, "PRODUCTS", ()) if p not in products + optional)
        outcome = RunOutcome(run_dir=str(run_dir), spec=spec.to_dict())
        module = _explain_module() if params.has_ground_truth else None
        if params.has_ground_truth and module is None and not engine_supports(inference.PredictOptions, "aux_truth"):
            raise PluginError("explanation layers need an MTL Explain engine with ground-truth support "
                              "(mtl_core.explain); update the plugin, or run without ground truth")
        if module is not None:
            options_cls = getattr(module, "ExplainOptions", inference.PredictOptions)
            eopts = predict_options(options_cls, params, products=products,
                                    sensitivity="sensitivity" in params.products, **overrides)
            kwargs = {"progress": progress or False}
            if "cancelled" in inspect.signature(module.explain).parameters:
                kwargs["cancelled"] = cancelled
            result = module.explain(params.model_path, raster, run_dir, dict(params.aux_truth), params.labels, eopts,
                                    **kwargs)
        else:
            opts = predict_options(inference.PredictOptions, params, products=products, **overrides)
            result = inference.predict(params.model_path, raster, run_dir, opts, progress=progress or False,
                                       cancelled=cancelled)
        outputs = getattr(result, "outputs", result if isinstance(result, dict) else {})
        outcome.outputs = {k: str(v) for k, v in outputs.items() if v is not None}
        outcome.device = str(getattr(result, "device", getattr(getattr(result, "predict", None), "device", "")))
        report = getattr(result, "report", None)
        if isinstance(report, dict):
            report = report.get("html")
        report = Path(report) if report else run_dir / "report.html"
        outcome.report = str(report) if report.exists() else None
        outcome.seconds = time.perf_counter() - start
        return outcome
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def summary_fields(outcome: RunOutcome) -> dict:
    """The outcome as a plain dict (for Processing results and logs)."""
    return dataclasses.asdict(outcome)

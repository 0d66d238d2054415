"""The parameters of one run, packed by the panel (or a Processing algorithm) and handed to the task.

Only plain values travel here (paths, numbers, tuples): the task runs in a worker thread and must
never see a layer, the project or a widget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Products the user can tick, in display order, with the label the panel shows.
PRODUCT_LABELS: dict[str, str] = {
    "main": "Main prediction",
    "confidence": "Confidence",
    "entropy": "Entropy",
    "aux": "Reconstructed modalities",
    "probabilities": "Class probabilities",
    "sensitivity": "Sensitivity to each input band (slower)",
}


@dataclass
class RunParameters:
    """Everything a prediction or explanation run needs.

    Attributes:
        model_path: model file (``*.mtl.safetensors``).
        raster_path: input raster, opened by path with GDAL.
        out_dir: parent folder; each run writes into its own sub-folder named by :meth:`run_name`.
        input_name: display name of the input (layer name), used for the layer group.
        band_map: 1-based raster band for each model input band, in the model's order; None means the
            raster's bands 1..N as they are.
        extent: (xmin, ymin, xmax, ymax) in the raster's CRS, or None for the whole raster.
        tile: tile size in pixels, None for the model's default.
        overlap: overlap in pixels, None for the model's default.
        batch_size: tiles per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        products: products to write (see :data:`PRODUCT_LABELS`).
        aux_truth: modality name -> path of the true auxiliary raster (enables explanation layers).
        labels: path of a reference label raster (enables main-task error layers).
        cog: write Cloud Optimized GeoTIFFs.
        threads: CPU threads for the model, None for the engine's default.
        mask: polygon layer path (area of interest); pixels outside are nodata.
    """

    model_path: str
    raster_path: str
    out_dir: str
    input_name: str = ""
    band_map: list[int] | None = None
    extent: tuple[float, float, float, float] | None = None
    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    device: str = "auto"
    products: tuple[str, ...] = ("main", "confidence", "entropy", "aux")
    aux_truth: dict[str, str] = field(default_factory=dict)
    labels: str | None = None
    cog: bool = False
    threads: int | None = None
    mask: str | None = None

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.aux_truth) or bool(self.labels)

    def run_name(self, model_name: str, stamp: str) -> str:
        """A file-system-safe folder name for one run: ``<input>_<model>_<stamp>``."""
        text = f"{self.input_name or 'input'}_{model_name}_{stamp}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120]


def predict_options(params: RunParameters):
    """The engine's ``PredictOptions`` for a run without ground truth."""
    from mtl_core.inference import PredictOptions

    return PredictOptions(tile=params.tile, overlap=params.overlap, batch_size=params.batch_size,
                          device=params.device, threads=params.threads, extent=params.extent, mask=params.mask,
                          bands=list(params.band_map) if params.band_map else None,
                          products=tuple(params.products), cog=params.cog)


def explain_options(params: RunParameters):
    """The options of ``mtl_core.explain.explain`` for a run with ground truth."""
    from mtl_core.explain import ExplainOptions

    return ExplainOptions(tile=params.tile, overlap=params.overlap, batch_size=params.batch_size,
                          device=params.device, threads=params.threads, extent=params.extent,
                          bands=list(params.band_map) if params.band_map else None,
                          sensitivity="sensitivity" in params.products)


def ogr_mask_path(source: str, provider: str, subset: str = "", selected: int = 0) -> str | None:
    """The file the engine can use as a polygon mask for a vector layer, or None when it cannot.

    The engine rasterises every feature of the file's first layer, so only a plain file-based OGR layer
    (no filter, no selection, first layer of its file) qualifies; otherwise only its extent is used.
    """
    if provider != "ogr" or subset or selected:
        return None
    path, _, options = source.partition("|")
    if not path:
        return None
    from osgeo import ogr

    ds = ogr.Open(path)
    if ds is None or ds.GetLayerCount() == 0:
        return None
    name = dict(o.split("=", 1) for o in options.split("|") if "=" in o).get("layername")
    if name is not None and name != ds.GetLayer(0).GetName():
        return None
    return path

"""Processing Predict and Explain: a model run on a raster layer through :func:`..core.runner.run` (ONNX Runtime in
QGIS; a .safetensors model is exported by the worker first), the outputs loaded styled."""

from __future__ import annotations

import re
import shutil
import tempfile

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFolder,
    QgsProcessingOutputHtml,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)

from mtl_core.jobs import DEVICES

from ..core.styling import title

from .base import PRODUCTS, SPLITS, StylePostProcessor, _Base, _POST_PROCESSORS, _raster_path


class PredictAlgorithm(_Base):
    """Run a model over a raster: class map (or regression), confidence, entropy, reconstructions."""

    INPUT, MODEL, BANDS, EXTENT = "INPUT", "MODEL", "BANDS", "EXTENT"
    TILE, OVERLAP, BATCH, DEVICE, PRODUCTS = "TILE", "OVERLAP", "BATCH", "DEVICE", "PRODUCTS"
    WORKERS, SCHEDULER, VRT = "WORKERS", "SCHEDULER", "VRT"
    OUTPUT_FOLDER, RUN_FOLDER, MAIN, CONFIDENCE, DEVICE_USED = (
        "OUTPUT_FOLDER", "RUN_FOLDER", "MAIN", "CONFIDENCE", "DEVICE_USED")

    def __init__(self) -> None:
        super().__init__()
        self._job = None

    def name(self) -> str:
        return "predict"

    def displayName(self) -> str:  # noqa: N802 (QGIS name)
        return self.tr("Predict")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS name)
        return self.tr(
            "Runs an MTL Explain model over a raster, tile by tile, and writes the main prediction (class map with "
            "the model's class names and colours, or regression values), confidence, entropy and each "
            "reconstructed auxiliary modality as GeoTIFFs, in a new sub-folder of the output folder.\n\n"
            "Bands: optional comma-separated raster band numbers feeding the model's bands in order "
            "(default: by band description, else 1..N). Tile size 0 and overlap -1 use the model's defaults.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 (QGIS name)
        self._add_input_and_model()
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, self.tr("Band mapping (e.g. 1,2,3,4)"), optional=True))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE, self.tr("Tile size in pixels (0: from the model)"), QgsProcessingParameterNumber.Type.Integer, 0,
            minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.OVERLAP, self.tr("Overlap in pixels (-1: from the model)"), QgsProcessingParameterNumber.Type.Integer,
            -1, minValue=-1))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH, self.tr("Batch size"), QgsProcessingParameterNumber.Type.Integer, 4, minValue=1))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), list(DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            "PRECISION", self.tr("Precision (fast: the model's int8 twin, <name>.int8.mtl.onnx beside it)"),
            [self.tr("exact (float32)"), self.tr("fast (int8)")], defaultValue=0))
        from mtl_core.engine.products import product

        self.addParameter(QgsProcessingParameterEnum(
            self.PRODUCTS, self.tr("Products"), [product(p).label for p in PRODUCTS], allowMultiple=True,
            defaultValue=[0, 1, 2, 3]))
        for param in (  # a sharded run on Dask (advanced): in the worker process, which starts the cluster
                QgsProcessingParameterNumber(
                    self.WORKERS, self.tr("Dask workers on this machine (0: one process, as usual)"),
                    QgsProcessingParameterNumber.Type.Integer, 0, minValue=0),
                QgsProcessingParameterString(
                    self.SCHEDULER, self.tr("Dask scheduler address (e.g. tcp://host:8786; its workers must see "
                                            "the same paths)"), optional=True),
                QgsProcessingParameterBoolean(
                    self.VRT, self.tr("Sharded run: each layer a VRT over its shards (faster, no copy into one "
                                      "file; keep the VRT beside its shards folder)"), False)):
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(param)
        self._extra_parameters()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputFolder(self.RUN_FOLDER, self.tr("Folder of this run")))
        self._declare_outputs(lambda p: p.tickable)
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, self.tr("Device used")))
        self._extra_outputs()

    def _extra_parameters(self) -> None:
        """Hook for subclasses (Explain adds ground truth)."""

    def _extra_outputs(self) -> None:
        """Hook for subclasses (Explain declares its explanation layers and report for the modeller)."""

    def _declare_outputs(self, which) -> None:
        """Declare a raster output per registered product ``which`` accepts whose layer key is its name (the
        per-modality layers, AUX_<NAME> …, depend on the model and are returned without being declared)."""
        from mtl_core.engine.products import REGISTRY

        for p in REGISTRY:
            if which(p) and not p.per_modality:
                self.addOutput(QgsProcessingOutputRasterLayer(p.name.upper(), p.label))

    def _extra_values(self, parameters, context, job) -> None:
        """Hook for subclasses, on the main thread."""

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 (QGIS name)
        """Main thread: turn layers into paths, the extent into the raster's CRS."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        raster = _raster_path(layer, self.tr("Input raster"))
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not model:
            raise QgsProcessingException(self.tr("Choose a model file (*.onnx or *.mtl.safetensors)."))
        if self.parameterAsEnum(parameters, "PRECISION", context) == 1:  # checkParameterValues: the twin exists
            from mtl_core.engine.runtime import int8_twin

            model = str(int8_twin(model))
            feedback.pushInfo(self.tr("Fast precision: running the int8 twin {}").format(model))
        bands_text = self.parameterAsString(parameters, self.BANDS, context).strip()
        band_map = None
        if bands_text:
            try:
                band_map = [int(b) for b in re.split(r"[,\s]+", bands_text) if b]
            except ValueError as exc:
                raise QgsProcessingException(
                    self.tr("Band mapping {!r} must be band numbers separated by commas, e.g. 1,2,3,4")
                    .format(bands_text)) from exc
        extent = None
        if parameters.get(self.EXTENT):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if not rect.isNull() and not rect.isEmpty():
                extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        tile = self.parameterAsInt(parameters, self.TILE, context)
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        chosen = self.parameterAsEnums(parameters, self.PRODUCTS, context)
        out = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context) or tempfile.mkdtemp(prefix="mtl_")
        from mtl_core.jobs import Job

        self._job = Job(
            kind="predict", model=model, raster=raster, out=out, name=layer.name(), bands=band_map,
            extent=list(extent) if extent else None, tile=tile or None, overlap=None if overlap < 0 else overlap,
            batch_size=self.parameterAsInt(parameters, self.BATCH, context),
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            products=[PRODUCTS[i] for i in chosen] or ["main"],
            workers=self.parameterAsInt(parameters, self.WORKERS, context) or None,
            scheduler=self.parameterAsString(parameters, self.SCHEDULER, context).strip() or None,
            vrt=self.parameterAsBool(parameters, self.VRT, context),
        )
        self._extra_values(parameters, context, self._job)
        return True

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback):  # noqa: N802 (QGIS name)
        """Worker thread: run the engine on paths; register the outputs for loading with their styles."""
        self._check_dependencies(self._job.model, sharded=bool(self._job.workers or self._job.scheduler))
        from mtl_core.errors import CancelledError, MtlError

        from ..core.runner import run

        try:
            outcome = run(self._job, progress=lambda f: feedback.setProgress(100.0 * f),
                          cancelled=feedback.isCanceled)
        except CancelledError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except MtlError as exc:
            raise QgsProcessingException(str(exc)) from exc
        if feedback.isCanceled():  # cancelled after the engine's last check: keep nothing
            shutil.rmtree(outcome.run_dir, ignore_errors=True)
            raise QgsProcessingException(self.tr("Cancelled; no output was written."))
        feedback.pushInfo(self.tr("Device used: {}").format(outcome.device))
        for warning in outcome.warnings:
            feedback.reportError(self.tr("Warning: {}").format(warning), False)  # shown in red, not fatal
        results = {self.RUN_FOLDER: outcome.run_dir, self.OUTPUT_FOLDER: self._job.out,
                   self.DEVICE_USED: outcome.device}
        for key, path in outcome.outputs.items():
            results[key.upper()] = path
            details = QgsProcessingContext.LayerDetails(
                f"{self._job.name} — {title(key, outcome.spec)}", context.project(), key.upper())
            if hasattr(details, "layerTypeHint"):  # no "OGR: cannot open" probing of rasters as vectors
                details.layerTypeHint = QgsProcessingUtils.LayerHint.Raster
            post = StylePostProcessor(key, outcome.spec)
            _POST_PROCESSORS.append(post)
            del _POST_PROCESSORS[:-500]
            details.setPostProcessor(post)
            context.addLayerToLoadOnCompletion(path, details)
        if outcome.report:
            results["REPORT"] = outcome.report
        return results


class ExplainAlgorithm(PredictAlgorithm):
    """Prediction plus explanation layers: reconstruction error, main error, error agreement, sensitivity."""

    AUX_TRUTH, LABELS = "AUX_TRUTH", "LABELS"

    def name(self) -> str:
        return "explain"

    def displayName(self) -> str:  # noqa: N802 (QGIS name)
        return self.tr("Explain")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS name)
        return self.tr(
            "Runs the model like Predict and adds the explanation layers. With the true auxiliary rasters "
            "(one per reconstructed modality, in the model's order) and/or a reference label raster it writes "
            "the reconstruction error per modality, the main-task error, the error agreement map (correct / "
            "explained / unexplained errors) and, when the engine provides it, an HTML report. Sensitivity maps "
            "need no ground truth.")

    def _extra_parameters(self) -> None:
        self._add_aux_truth()
        self.addParameter(QgsProcessingParameterRasterLayer(self.LABELS, self.tr("Reference labels"), optional=True))
        self.addParameter(QgsProcessingParameterBand(
            "LABELS_BAND", self.tr("Labels band (empty: the band the model was trained on)"), None, self.LABELS,
            optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            "SPLIT", self.tr("Score (on the model's training raster: only the blocks of its own split)"),
            [self.tr("every labelled pixel"), self.tr("test blocks"), self.tr("validation blocks"),
             self.tr("training blocks (optimistic)")], defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean("SENSITIVITY", self.tr("Sensitivity maps"), True))

    def _extra_outputs(self) -> None:
        self._declare_outputs(lambda p: p.needs_truth)
        self.addOutput(QgsProcessingOutputHtml("REPORT", self.tr("Explanation report")))

    def _extra_values(self, parameters, context, job) -> None:
        job.aux_truth = self._aux_truth(parameters, context, job.model)
        labels = self.parameterAsRasterLayer(parameters, self.LABELS, context)
        job.labels = _raster_path(labels, self.tr("Reference labels")) if labels else None
        band = self.parameterAsInt(parameters, "LABELS_BAND", context)
        job.labels_band = band if labels and band > 0 else None
        job.split = SPLITS[self.parameterAsEnum(parameters, "SPLIT", context)] if labels else "all"
        if job.has_ground_truth:
            job.kind = "explain"
        if self.parameterAsBool(parameters, "SENSITIVITY", context) and "sensitivity" not in job.products:
            job.products = job.products + ["sensitivity"]

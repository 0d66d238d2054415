"""Processing algorithms Predict, Explain, Train and Propose sites to label: thin wrappers over the same core code
as the panel.

Layers are read on the main thread in ``prepareAlgorithm`` (their file path, CRS and extent become
plain values in a :class:`mtl_core.jobs.Job`); ``processAlgorithm`` runs in a background thread and
only passes the job on: Predict and Explain to :func:`..core.runner.run` (ONNX Runtime in QGIS), Train
to the worker process (PyTorch never runs inside QGIS).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFolder,
    QgsProcessingOutputHtml,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core import deps
from ..core.dataset import TASKS, VARIANTS, dataset_from_layers, modality_name, raster_path
from ..core.paths import default_model, icon_path
from ..core.styling import apply_style, title

# Enum options: saved models, batch files and qgis_process calls refer to them by index, so these lists
# only ever grow at the end.
DEVICES = ["auto", "cpu", "cuda"]
PRODUCTS = ["main", "confidence", "entropy", "aux", "probabilities", "sensitivity", "hillshade"]
SPLITS = ["all", "test", "val", "train"]
#: Post-processors outlive the algorithm instance that registered them: Processing runs a copy of the
#: algorithm and deletes it before it loads the outputs on the main thread, which would drop their styles.
_POST_PROCESSORS: list = []


def _raster_path(layer, name: str) -> str:
    try:
        return raster_path(layer, name)
    except ValueError as exc:
        raise QgsProcessingException(str(exc)) from exc


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer from its product key once Processing has loaded it (main thread)."""

    def __init__(self, key: str, spec: dict) -> None:
        super().__init__()
        self.key, self.spec = key, spec

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS name)
        apply_style(layer, self.key, self.spec)


class _Base(QgsProcessingAlgorithm):
    """Shared plumbing: translation, icon, dependency check."""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("MtlExplainProcessing", text)

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS name)
        """Name a layer file GDAL cannot open (QGIS alone only says the parameter check failed)."""
        from osgeo import gdal
        from qgis.core import QgsProcessingParameterMapLayer

        for name in ("INPUT", "LABELS", "AUX", "AUX_TRUTH"):
            values = parameters.get(name)
            either = isinstance(self.parameterDefinition(name), QgsProcessingParameterMapLayer)  # raster or vector
            for value in values if isinstance(values, list) else [values]:
                if not isinstance(value, str) or not Path(value).is_file():
                    continue  # a layer id, or nothing: QGIS resolves and checks those
                try:
                    if gdal.OpenEx(value, gdal.OF_RASTER | (gdal.OF_VECTOR if either else 0)) is None:
                        raise RuntimeError(gdal.GetLastErrorMsg() or "no driver recognises it")
                except RuntimeError as exc:
                    what = self.tr("a raster or vector layer") if either else self.tr("a raster")
                    return False, self.tr("{}: {!r} is not {} GDAL can open ({}); check it with gdalinfo or ogrinfo, "
                                          "or save it again (GeoTIFF, GeoPackage)").format(
                                              name, value, what, str(exc).strip()[:200])
        if "PRECISION" in parameters and self.parameterAsEnum(parameters, "PRECISION", context) == 1:
            from mtl_core.engine.runtime import int8_twin

            model = self.parameterAsFile(parameters, self.MODEL, context)
            if model and int8_twin(model) is None:
                return False, self.tr(
                    "{} has no int8 twin beside it (a .int8.mtl.onnx file); make one with 'mtl export MODEL "
                    "--onnx NAME.int8.mtl.onnx --int8 --calibration RASTER', or choose exact precision").format(
                    Path(model).name)
        return super().checkParameterValues(parameters, context)

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802 (QGIS name)
        return ""

    def helpUrl(self) -> str:  # noqa: N802 (QGIS name)
        """The plugin's manual (shipped with it), opened by the algorithm dialog's Help button."""
        from qgis.PyQt.QtCore import QUrl

        from ..core.paths import manual

        return QUrl.fromLocalFile(str(manual())).toString()

    def _add_input_and_model(self) -> None:
        """The input raster and the model file (default: the bundled model) parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Input raster")))
        model = default_model()
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", self.tr("Model file"), QgsProcessingParameterFile.Behavior.File,
            fileFilter="Models (*.safetensors *.onnx)", defaultValue=str(model) if model else None))

    def _add_aux_truth(self) -> None:
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "AUX_TRUTH", self.tr("True auxiliary rasters (one per modality, in the model's order)"),
            QgsProcessing.SourceType.TypeRaster, optional=True))

    def _aux_truth(self, parameters, context, model: str) -> dict[str, str]:
        """The true auxiliary rasters by modality name, in the model's order."""
        from ..core.model_info import read_spec

        spec = read_spec(model)
        truths = self.parameterAsLayerList(parameters, "AUX_TRUTH", context)
        if len(truths) > len(spec.aux):
            raise QgsProcessingException(self.tr("{} true auxiliary rasters given but the model reconstructs {} "
                                                 "modality(ies): {}").format(len(truths), len(spec.aux),
                                                                             ", ".join(m.name for m in spec.aux)))
        return {m.name: _raster_path(t, m.name) for m, t in zip(spec.aux, truths)}

    def _check_dependencies(self, model_path: str | None = None, sharded: bool = False) -> None:
        """Raise with the install command when the packages for this model (or, without one, for training
        in the worker; ``sharded``: for a Dask run, which the worker process starts) are missing."""
        from mtl_core.engine.runtime import is_onnx

        needs_worker = sharded or not model_path or not is_onnx(model_path)
        status = deps.check(worker=needs_worker)
        ok = status.can_run(model_path) if model_path else status.worker_ok
        if not ok:
            raise QgsProcessingException(status.message())


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

    def createInstance(self):  # noqa: N802 (QGIS name)
        return type(self)()

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
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), DEVICES, defaultValue=0))
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


def _bands(text: str, what: str) -> list[int] | None:
    """Band numbers typed as ``1,2,3`` (None when empty)."""
    if not text.strip():
        return None
    try:
        bands = [int(b) for b in re.split(r"[,\s]+", text.strip()) if b]
    except ValueError:
        bands = []
    if not bands or min(bands) < 1:
        raise QgsProcessingException(f"{what}: {text!r} must be band numbers from 1, separated by commas, e.g. 1,2,3")
    return bands


class TrainAlgorithm(_Base):
    """Train a model from map layers (input raster, auxiliary rasters, raster or polygon labels) or a dataset
    configuration, and write a model file with the configuration it used beside it."""

    CONFIG, VARIANT, STEPS, DEPTH, BATCH, SEED, DEVICE, HALF, OUTPUT = (
        "CONFIG", "VARIANT", "STEPS", "ENCODER_DEPTH", "BATCH_SIZE", "SEED", "DEVICE", "HALF", "OUTPUT")
    INPUT, INPUT_BANDS, AUX, AUX_NAMES, LABELS, LABELS_FIELD, LABELS_BAND, TASK, EXTENT = (
        "INPUT", "INPUT_BANDS", "AUX", "AUX_NAMES", "LABELS", "LABELS_FIELD", "LABELS_BAND", "TASK", "EXTENT")

    def __init__(self) -> None:
        super().__init__()
        self._dataset: dict = {}

    def createInstance(self):  # noqa: N802 (QGIS name)
        return type(self)()

    def name(self) -> str:
        return "train"

    def displayName(self) -> str:  # noqa: N802 (QGIS name)
        return self.tr("Train")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS name)
        return self.tr(
            "Trains a model (mtl: reconstructs the auxiliary modalities; unimodal and multimodal baselines) and "
            "writes a model file, with the dataset configuration it used beside it (<model>.dataset.yaml: 'mtl "
            "train' on it reproduces the run).\n\n"
            "The data: an input raster (and its bands), auxiliary rasters (one modality each, named by 'Auxiliary "
            "names' or their layer names), and labels: a raster layer (its band) or a polygon layer with a class "
            "field (class names or codes; a numeric field for regression; in any CRS; pixels no polygon covers are "
            "unlabelled; a categorised style gives the classes their colours). Optionally a training extent. Or, "
            "instead of layers, a dataset configuration file (YAML or TOML, see the docs).\n\n"
            "The scene is cut into blocks holding labels, assigned to train/validation/test; the best checkpoint "
            "by validation score is kept and its held-out test metrics reported. Training runs with PyTorch in a "
            "separate worker process (the Python set under 'Worker Python' in the MTL Explain panel), never inside "
            "QGIS; cancelling stops it and writes nothing.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 (QGIS name)
        from qgis.core import QgsProcessingParameterField, QgsProcessingParameterMapLayer

        self.addParameter(QgsProcessingParameterFile(
            self.CONFIG, self.tr("Dataset configuration (instead of the layers below)"), optional=True,
            fileFilter="Configurations (*.yaml *.yml *.toml)"))
        self.addParameter(QgsProcessingParameterEnum(self.VARIANT, self.tr("Variant"), VARIANTS, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, self.tr("Optimiser steps"), QgsProcessingParameterNumber.Type.Integer, 600, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.DEPTH, self.tr("Encoder depth"), QgsProcessingParameterNumber.Type.Integer, 4, minValue=3,
            maxValue=5))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH, self.tr("Batch size"), QgsProcessingParameterNumber.Type.Integer, 16, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Type.Integer, 0))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(self.HALF, self.tr("Store weights as float16"), False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, self.tr("Model file"), fileFilter="MTL Explain model (*.mtl.safetensors)"))
        # The data as map layers (appended after the original parameters: saved models and scripts keep working).
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster"), optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.INPUT_BANDS, self.tr("Input bands (e.g. 1,2,3,4; empty: every band)"), optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.AUX, self.tr("Auxiliary rasters (one modality each)"), QgsProcessing.SourceType.TypeRaster,
            optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.AUX_NAMES, self.tr("Auxiliary names, one per raster in order (e.g. swir,dem; empty: layer names)"),
            optional=True))
        self.addParameter(QgsProcessingParameterMapLayer(
            self.LABELS, self.tr("Labels (raster layer, or polygon layer with a class field)"), optional=True,
            types=[QgsProcessing.SourceType.TypeRaster, QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            self.LABELS_FIELD, self.tr("Class field of the polygon labels"), parentLayerParameterName=self.LABELS,
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.LABELS_BAND, self.tr("Band of the raster labels"), QgsProcessingParameterNumber.Type.Integer, 1,
            minValue=1))
        self.addParameter(QgsProcessingParameterEnum(self.TASK, self.tr("Task"), TASKS, defaultValue=0))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, self.tr("Training extent (empty: wherever there are labels)"), optional=True))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS name)
        ok, message = super().checkParameterValues(parameters, context)  # first: a file GDAL cannot open, named
        if not ok:
            return ok, message
        has_config = bool(self.parameterAsFile(parameters, self.CONFIG, context))
        has_layers = parameters.get(self.INPUT) not in (None, "") or parameters.get(self.LABELS) not in (None, "")
        if has_config == has_layers:
            return False, self.tr("Give either a dataset configuration file, or an input raster and labels "
                                  "(and auxiliary rasters for the mtl variant), not both")
        if has_layers:
            from qgis.core import QgsVectorLayer

            labels = self.parameterAsLayer(parameters, self.LABELS, context)
            if labels is None or parameters.get(self.INPUT) in (None, ""):
                return False, self.tr("Choose the input raster and the labels: a raster layer, or a polygon layer "
                                      "and its class field")
            field = self.parameterAsString(parameters, self.LABELS_FIELD, context)
            if isinstance(labels, QgsVectorLayer) and not field:
                return False, self.tr("Choose the class field of the polygon layer {!r} (LABELS_FIELD)").format(
                    labels.name())
        return True, ""

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 (QGIS name)
        """Main thread: the layers become a dataset configuration (paths, bands, classes and their colours)."""
        self._dataset = {}
        if self.parameterAsFile(parameters, self.CONFIG, context):
            return True
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        _raster_path(layer, self.tr("Input raster"))
        aux_layers = self.parameterAsLayerList(parameters, self.AUX, context)
        names = [n for n in re.split(r"[,\s]+", self.parameterAsString(parameters, self.AUX_NAMES, context)) if n]
        if names and len(names) != len(aux_layers):
            raise QgsProcessingException(self.tr("{} auxiliary names for {} auxiliary rasters; give one name per "
                                                 "raster, in order").format(len(names), len(aux_layers)))
        names = names or [modality_name(a.name()) for a in aux_layers]
        if len(set(names + ["input"])) != len(names) + 1:
            raise QgsProcessingException(self.tr("auxiliary names {} must differ from each other and from 'input'; "
                                                 "name them with 'Auxiliary names'").format(names))
        extent = None
        if parameters.get(self.EXTENT):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if not rect.isNull() and not rect.isEmpty():
                extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        try:
            self._dataset = dataset_from_layers(
                layer, _bands(self.parameterAsString(parameters, self.INPUT_BANDS, context), self.tr("Input bands")),
                [(n, a, None) for n, a in zip(names, aux_layers)],
                self.parameterAsLayer(parameters, self.LABELS, context),
                TASKS[self.parameterAsEnum(parameters, self.TASK, context)],
                labels_band=self.parameterAsInt(parameters, self.LABELS_BAND, context),
                labels_field=self.parameterAsString(parameters, self.LABELS_FIELD, context), extent=extent)
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from exc
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS name)
        """Background thread: train in the worker process (PyTorch never runs in QGIS) and write the model file."""
        self._check_dependencies()
        from mtl_core.errors import MtlError
        from mtl_core.jobs import Job

        from ..core.runner import worker_client

        out = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        if not out.name.endswith(".safetensors"):
            out = out.with_name(out.name + ".mtl.safetensors")
        steps = self.parameterAsInt(parameters, self.STEPS, context)
        job = Job(
            kind="train", config=self.parameterAsFile(parameters, self.CONFIG, context), dataset=self._dataset,
            out=str(out), device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            half=self.parameterAsBool(parameters, self.HALF, context),
            train={"variant": VARIANTS[self.parameterAsEnum(parameters, self.VARIANT, context)], "steps": steps,
                   "batch_size": self.parameterAsInt(parameters, self.BATCH, context),
                   "eval_every": max(1, min(100, steps)), "seed": self.parameterAsInt(parameters, self.SEED, context),
                   "architecture": {"encoder_depth": self.parameterAsInt(parameters, self.DEPTH, context)}})
        client = worker_client()
        client.on_log = lambda level, message: feedback.pushInfo(message)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            result = client.run(job, progress=lambda f: feedback.setProgress(100.0 * f), cancelled=feedback.isCanceled)
        except MtlError as exc:  # CancelledError included: the worker wrote nothing (its writes are atomic)
            raise QgsProcessingException(str(exc)) from exc
        except OSError as exc:
            raise QgsProcessingException(self.tr("cannot create the folder of {} ({}); choose another")
                                         .format(out, exc.strerror)) from exc
        for k, v in result.metrics.items():
            feedback.pushInfo(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
        feedback.pushInfo(self.tr("Dataset configuration used: {}").format(result.outputs.get("dataset", "")))
        return {self.OUTPUT: str(out)}


class SitesPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Gives the sites layer its style (the ``.qml`` written beside the GeoPackage) once Processing loaded it."""

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS name)
        from ..core.layers import load_sidecar_style

        load_sidecar_style(layer)


class ProposeSitesAlgorithm(_Base):
    """Where to label next: a GeoPackage of square sites ranked by the model's uncertainty or its explanation
    layers, spread over the area."""

    INPUT, MODEL, AUX_TRUTH, COUNT, DISTANCE, STRATEGY, DEVICE, OUTPUT = (
        "INPUT", "MODEL", "AUX_TRUTH", "COUNT", "MIN_DISTANCE", "STRATEGY", "DEVICE", "OUTPUT")

    def createInstance(self):  # noqa: N802 (QGIS name)
        return type(self)()

    def name(self) -> str:
        return "proposesites"

    def displayName(self) -> str:  # noqa: N802 (QGIS name)
        return self.tr("Propose sites to label")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS name)
        return self.tr(
            "Runs a segmentation model on the input raster and proposes where to label next: square sites of the "
            "model's patch size, best first, no two closer than the minimum distance, each with its score, the "
            "predicted class and why it was chosen. Strategies: entropy (where the model hesitates; needs nothing "
            "else), error (the model's stored error detector), flagged (confident pixels whose real auxiliary "
            "modality is unusual for the predicted class), mix (entropy and flagged in turn), random. error, "
            "flagged and mix need the true auxiliary rasters; without them entropy is used and the log says so.\n\n"
            "The layer is styled and editable: set a site's empty 'class' field where the square is one class, or "
            "digitise polygons inside the sites in your labels layer, then train again.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 (QGIS name)
        from mtl_core.explain.sites import DEFAULT_STRATEGY, STRATEGIES
        from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterDistance

        self._add_input_and_model()
        self._add_aux_truth()
        self.addParameter(QgsProcessingParameterNumber(
            self.COUNT, self.tr("Number of sites"), QgsProcessingParameterNumber.Type.Integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterDistance(
            self.DISTANCE, self.tr("Minimum distance between sites (0: twice the site size)"), 0.0, self.INPUT,
            minValue=0.0))
        self.addParameter(QgsProcessingParameterEnum(
            self.STRATEGY, self.tr("Strategy"), list(STRATEGIES), defaultValue=STRATEGIES.index(DEFAULT_STRATEGY)))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, self.tr("Sites"), fileFilter="GeoPackage (*.gpkg)"))
        self.addOutput(QgsProcessingOutputString("STRATEGY_USED", self.tr("Strategy used")))
        self.addOutput(QgsProcessingOutputNumber("SITES", self.tr("Number of sites written")))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 (QGIS name)
        """Main thread: layers become paths."""
        from mtl_core.explain.sites import PRODUCTS
        from mtl_core.jobs import Job

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not model:
            raise QgsProcessingException(self.tr("Choose a model file (*.onnx or *.mtl.safetensors)."))
        self._job = Job(kind="predict", model=model, raster=_raster_path(layer, self.tr("Input raster")),
                        name=layer.name(), device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                        products=list(PRODUCTS), aux_truth=self._aux_truth(parameters, context, model))
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS name)
        """Background thread: run the model into a temporary folder beside the output, rank, write the sites."""
        from mtl_core.errors import MtlError
        from mtl_core.explain.sites import STRATEGIES, propose_from_outputs
        from mtl_core.spec import ModelSpec

        from ..core.runner import run

        self._check_dependencies(self._job.model)
        out = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        if out.suffix.lower() != ".gpkg":
            out = out.with_suffix(".gpkg")
        distance = self.parameterAsDouble(parameters, self.DISTANCE, context)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".mtl-sites.", dir=out.parent) as tmp:
                self._job.out = tmp
                outcome = run(self._job, progress=lambda f: feedback.setProgress(95.0 * f),
                              cancelled=feedback.isCanceled)
                if feedback.isCanceled():
                    raise QgsProcessingException(self.tr("Cancelled; nothing was written."))
                result = propose_from_outputs(
                    {k: Path(p) for k, p in outcome.outputs.items()}, ModelSpec.from_dict(outcome.spec), out,
                    self.parameterAsInt(parameters, self.COUNT, context), distance or None,
                    STRATEGIES[self.parameterAsEnum(parameters, self.STRATEGY, context)])
        except MtlError as exc:
            raise QgsProcessingException(str(exc)) from exc
        for note in [result.note] + result.warnings:
            if note:
                feedback.reportError(self.tr("Warning: {}").format(note), False)
        feedback.pushInfo(self.tr("{} sites ranked by {} written to {}").format(
            len(result.sites), result.strategy, out))
        details = QgsProcessingContext.LayerDetails(self.tr("Sites to label ({})").format(result.strategy),
                                                    context.project(), self.OUTPUT)
        post = SitesPostProcessor()
        _POST_PROCESSORS.append(post)
        details.setPostProcessor(post)
        context.addLayerToLoadOnCompletion(f"{out}|layername=sites", details)
        return {self.OUTPUT: str(out), "STRATEGY_USED": result.strategy, "SITES": len(result.sites)}

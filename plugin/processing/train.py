"""Processing Train: a model trained from map layers or a dataset configuration in the worker process (PyTorch never
runs inside QGIS), with a budget in minutes or steps."""

from __future__ import annotations

import re
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from mtl_core.jobs import DEVICES
from mtl_core.metrics import held_out_caveats
from mtl_core.spec import TASKS, VARIANTS
from mtl_core.training.options import DEFAULT_MINUTES, MAX_MINUTES

from ..core.dataset import dataset_from_layers, modality_name

from .base import DEFAULTS, _Base, _raster_path


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

    CONFIG, VARIANT, STEPS, DEPTH, BATCH, SEED, DEVICE, HALF, OUTPUT, MINUTES = (
        "CONFIG", "VARIANT", "STEPS", "ENCODER_DEPTH", "BATCH_SIZE", "SEED", "DEVICE", "HALF", "OUTPUT", "MINUTES")
    INPUT, INPUT_BANDS, AUX, AUX_NAMES, LABELS, LABELS_FIELD, LABELS_BAND, TASK, EXTENT = (
        "INPUT", "INPUT_BANDS", "AUX", "AUX_NAMES", "LABELS", "LABELS_FIELD", "LABELS_BAND", "TASK", "EXTENT")

    def __init__(self) -> None:
        super().__init__()
        self._dataset: dict = {}

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
        self.addParameter(QgsProcessingParameterEnum(self.VARIANT, self.tr("Variant"), list(VARIANTS), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, self.tr("Optimiser steps (instead of the budget in minutes below)"),
            QgsProcessingParameterNumber.Type.Integer, optional=True, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.DEPTH, self.tr("Encoder depth"), QgsProcessingParameterNumber.Type.Integer,
            DEFAULTS.architecture.encoder_depth, minValue=3, maxValue=5))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH, self.tr("Batch size"), QgsProcessingParameterNumber.Type.Integer, DEFAULTS.batch_size,
            minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Type.Integer, 0))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), list(DEVICES), defaultValue=0))
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
        self.addParameter(QgsProcessingParameterEnum(self.TASK, self.tr("Task"), list(TASKS), defaultValue=0))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, self.tr("Training extent (empty: wherever there are labels)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MINUTES, self.tr("Budget in minutes of wall time (the recipe was chosen for {:g} on 2 CPU cores)")
            .format(DEFAULT_MINUTES), QgsProcessingParameterNumber.Type.Double, DEFAULT_MINUTES, minValue=0.1,
            maxValue=MAX_MINUTES))

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

    def job(self, parameters, context):
        """The train job of the parameters (after ``prepareAlgorithm``), built as the panel's Train page builds its
        own (:func:`mtl_core.jobs.train_jobs`)."""
        from mtl_core.errors import MtlError
        from mtl_core.jobs import train_jobs

        steps = self.parameterAsInt(parameters, self.STEPS, context) if parameters.get(self.STEPS) not in (
            None, "") else None
        budget = {"steps": steps} if steps else {"minutes": self.parameterAsDouble(parameters, self.MINUTES, context)}
        try:
            job, = train_jobs(VARIANTS[self.parameterAsEnum(parameters, self.VARIANT, context)],
                              self.parameterAsFileOutput(parameters, self.OUTPUT, context),
                              config=self.parameterAsFile(parameters, self.CONFIG, context), dataset=self._dataset,
                              device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                              batch_size=self.parameterAsInt(parameters, self.BATCH, context),
                              seed=self.parameterAsInt(parameters, self.SEED, context),
                              architecture={"encoder_depth": self.parameterAsInt(parameters, self.DEPTH, context)},
                              **budget)
        except MtlError as exc:
            raise QgsProcessingException(str(exc)) from exc
        job.half = self.parameterAsBool(parameters, self.HALF, context)
        return job

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS name)
        """Background thread: train in the worker process (PyTorch never runs in QGIS) and write the model file."""
        self._check_dependencies()
        from mtl_core.errors import MtlError

        from ..core.runner import worker_client

        job = self.job(parameters, context)
        out = Path(job.out)
        budget = job.train.get("steps") and f"{job.train['steps']} steps" or f"{job.train.get('minutes')} min"
        feedback.pushInfo(self.tr("Budget: {}").format(budget))
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
        for caveat in held_out_caveats(result.spec.get("training", {})):
            feedback.reportError(self.tr("Note: {}").format(caveat), fatalError=False)
        feedback.pushInfo(self.tr("Dataset configuration used: {}").format(result.outputs.get("dataset", "")))
        return {self.OUTPUT: str(out)}

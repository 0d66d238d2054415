"""What every MTL Explain algorithm shares: translation, icon, help, the check that names a file GDAL cannot
open, the input and model parameters, the dependency check, and the post-processor that styles an output layer.

Layers are read on the main thread in ``prepareAlgorithm`` (their file path, CRS and extent become plain values
in a :class:`mtl_core.jobs.Job`); ``processAlgorithm`` runs in a background thread and only passes the job on."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from mtl_core.training.options import TrainOptions

from ..core import deps
from ..core.dataset import raster_path
from ..core.paths import default_model, icon_path
from ..core.styling import apply_style

DEFAULTS = TrainOptions()  # the recipe's defaults, as mtl train has them
PRODUCTS = ["main", "confidence", "entropy", "aux", "probabilities", "sensitivity", "hillshade"]
SPLITS = ["all", "test", "val", "train"]
# (enum options: saved models, batch files and qgis_process calls refer to them by index, so these lists only ever
# grow at the end)
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
    """Shared plumbing: translation, icon, new instances, the parameter and dependency checks."""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("MtlExplainProcessing", text)

    def createInstance(self):  # noqa: N802 (QGIS name)
        return type(self)()

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

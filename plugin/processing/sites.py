"""Processing Propose sites to label: the model run on a raster layer, square sites ranked and spread over it,
written to a GeoPackage by the same code as ``mtl propose-sites`` (:func:`mtl_core.engine.propose_sites`)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)

from mtl_core.jobs import DEVICES


from .base import _Base, _POST_PROCESSORS, _raster_path


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
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), list(DEVICES), defaultValue=0))
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
        from mtl_core.engine import propose_sites
        from mtl_core.errors import MtlError
        from mtl_core.explain.sites import STRATEGIES
        from mtl_core.spec import ModelSpec

        from ..core.runner import run

        self._check_dependencies(self._job.model)
        out = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        if out.suffix.lower() != ".gpkg":
            out = out.with_suffix(".gpkg")
        distance = self.parameterAsDouble(parameters, self.DISTANCE, context)

        def run_model(folder: str):  # the plugin's runner: ONNX Runtime here, a .safetensors model exported first
            self._job.out = folder
            outcome = run(self._job, progress=lambda f: feedback.setProgress(95.0 * f), cancelled=feedback.isCanceled)
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled; nothing was written."))
            return ({k: Path(p) for k, p in outcome.outputs.items()}, ModelSpec.from_dict(outcome.spec),
                    list(outcome.warnings))

        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            result = propose_sites(self._job.model, self._job.raster, out,
                                   count=self.parameterAsInt(parameters, self.COUNT, context),
                                   min_distance_m=distance or None, run_model=run_model,
                                   strategy=STRATEGIES[self.parameterAsEnum(parameters, self.STRATEGY, context)])
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

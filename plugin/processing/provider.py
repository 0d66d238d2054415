"""The MTL Explain Processing provider: lists the algorithms for the toolbox, the modeller and qgis_process."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..core.paths import icon_path, metadata


class MtlExplainProvider(QgsProcessingProvider):
    """Provider ``mtl_explain`` with the algorithms ``predict``, ``explain``, ``train`` and ``proposesites``."""

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS name)
        from .run import ExplainAlgorithm, PredictAlgorithm
        from .sites import ProposeSitesAlgorithm
        from .train import TrainAlgorithm

        for alg in (PredictAlgorithm(), ExplainAlgorithm(), TrainAlgorithm(), ProposeSitesAlgorithm()):
            self.addAlgorithm(alg)

    def id(self) -> str:
        return "mtl_explain"

    def name(self) -> str:
        return "MTL Explain"

    def longName(self) -> str:  # noqa: N802 (QGIS name)
        return f"MTL Explain {metadata().get('version', '')}".strip()

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

"""The MTL Explain panel: a dock of pages — Run, Train, Setup — each a ``.py`` beside its ``.ui``.

The dock only holds the pages (``dock.ui``: a banner and a tab widget) and what passes between them: the
Setup page's dependency check feeds the Run and Train pages; a model the Train page writes is selected on
the Run page; "Explain the test blocks" runs on the Run page. The plugin connects to the pages' signals.
"""

from __future__ import annotations

from pathlib import Path

from qgis.gui import QgsDockWidget
from qgis.PyQt import uic
from qgis.PyQt.QtWidgets import QWidget

from .run_page import RunPage
from .setup_page import SetupPage
from .train_page import TrainPage

FORM, _ = uic.loadUiType(str(Path(__file__).with_name("dock.ui")))


class _Body(QWidget, FORM):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setupUi(self)


class MtlExplainDock(QgsDockWidget):
    """Dock widget of the plugin (object name ``MtlExplainDock``): ``run_page``, ``train_page``, ``setup_page``."""

    def __init__(self, iface, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("MTL Explain"))
        self.setObjectName("MtlExplainDock")
        self.iface = iface
        body = _Body()
        self.pages, self.setup_banner = body.pages, body.setup_banner
        self.run_page = RunPage(iface)
        self.train_page = TrainPage(iface)
        self.setup_page = SetupPage()
        self.pages.addTab(self.run_page, self.tr("Run"))
        self.pages.addTab(self.train_page, self.tr("Train"))
        self.pages.addTab(self.setup_page, self.tr("Setup"))
        self.setWidget(body)
        self.setup_banner.linkActivated.connect(lambda _link: self.pages.setCurrentWidget(self.setup_page))
        self.run_page.modelChanged.connect(lambda _path: self.refresh_dependencies())
        self.setup_page.workerChanged.connect(lambda: self.refresh_dependencies(check_worker=True))
        self.train_page.explainRequested.connect(self.explain_trained)
        self.pages.currentChanged.connect(self._on_page_changed)
        self.refresh_dependencies()

    def refresh_dependencies(self, check_worker: bool = False) -> None:
        """Check what QGIS's Python and (when a page needs it, or when asked) the worker's Python have; the pages
        enable their buttons from it, and the banner says when something is missing."""
        from mtl_core.engine.runtime import is_onnx  # mtl_core is importable once ..core is (bundled in the zip)

        model = self.run_page.model_file.filePath()
        worker = check_worker or (bool(model) and not is_onnx(model)) or self.pages.currentWidget() is self.train_page
        status = self.setup_page.refresh(worker)
        self.run_page.set_dependencies(status)
        self.train_page.set_dependencies(status)
        missing = not status.onnx_ok or (status.worker is not None and not status.worker.ok)
        self.setup_banner.setVisible(missing)
        self.setup_banner.setText(self.tr("Some Python packages are missing: see <a href='setup'>Setup</a>."))

    def _on_page_changed(self, _index: int) -> None:
        if self.pages.currentWidget() is self.train_page and self.setup_page.status is not None \
                and self.setup_page.status.worker is None:
            self.refresh_dependencies(check_worker=True)  # training needs the worker: check it once, when shown

    def model_trained(self, path: str) -> None:
        """Select a freshly trained model on the Run page (and put it at the top of Recent models), with the raster
        it was trained on as the Run page's input."""
        self.run_page.select_model(path, self.train_page.input_layer.currentLayer())

    def explain_trained(self, job) -> None:
        """Run the Train page's explain job from the Run page (its output folder, progress and layers)."""
        job.out = self.run_page.output_folder()
        self.pages.setCurrentWidget(self.run_page)
        self.run_page.runRequested.emit(job)

    def disconnect_iface(self) -> None:
        """Stop following the active layer and the project (called before the dock is deleted)."""
        self.run_page.disconnect_iface()

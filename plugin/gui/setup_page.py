"""The Setup page: the Python packages QGIS and the worker process lack, how to install them, the worker's Python.

Its layout is ``setup_page.ui``. QGIS's own Python is checked by looking only; the worker's Python is checked
by running it (a fraction of a second), only when asked or when a chosen model or a training needs it.
"""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt import uic
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QApplication, QWidget

from ..core import deps

FORM, _ = uic.loadUiType(str(Path(__file__).with_name("setup_page.ui")))
WARNING_STYLE = "color: #8a5a00;"


class SetupPage(QWidget, FORM):
    """The panel's Setup page (object name ``setupPage``)."""

    installRequested = pyqtSignal(str)  # "qgis" (ONNX Runtime) or "worker" (PyTorch for the worker)
    workerChanged = pyqtSignal()  # the worker's Python was changed or checked: check it again

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setupUi(self)
        self.setObjectName("setupPage")
        self.status = None
        self.worker_python.setFilePath(deps.worker_python())
        self.install_button.clicked.connect(lambda: self.installRequested.emit("qgis"))
        self.install_worker_button.clicked.connect(lambda: self.installRequested.emit("worker"))
        self.copy_command_button.clicked.connect(self._copy_install_command)
        self.worker_python.fileChanged.connect(self._on_worker_python_changed)
        self.check_worker_button.clicked.connect(self.workerChanged)

    def refresh(self, worker: bool):
        """Check the packages (the worker's too when ``worker``) and show what is missing; returns the
        ``deps.DepsStatus``."""
        status = self.status = deps.check(worker=worker)
        needs_worker = status.worker is not None and not status.worker.ok
        self.deps_box.setVisible(not status.onnx_ok or needs_worker)
        self.install_button.setVisible(not status.onnx_ok)
        self.install_worker_button.setVisible(needs_worker and status.worker.installable)
        self.deps_label.setText(status.message())
        if status.worker is not None:
            self.worker_label.setStyleSheet("" if status.worker.ok else WARNING_STYLE)
            self.worker_label.setText(status.worker.message())
        return status

    def _copy_install_command(self) -> None:
        status = self.status
        command = status.install_command() if not status.onnx_ok else status.worker.install_command()
        QApplication.clipboard().setText(command)

    def _on_worker_python_changed(self, path: str) -> None:
        deps.set_worker_python(path if path != deps.python_executable() else "")
        self.workerChanged.emit()

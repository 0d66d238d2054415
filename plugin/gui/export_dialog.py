"""Dialog of the "Export explanation rasters" action: pick a run, its layers, a folder and the format."""

from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QListWidget,
    QListWidgetItem,
    QWidget,
)

from ..core.layers import report_of, run_groups, run_layers


class ExportDialog(QDialog):
    """Choose the layers of one run to write as GeoTIFF/COG, with the run's HTML report."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("Export explanation rasters"))
        form = QFormLayout(self)
        self.run_combo = QComboBox()
        self.groups = run_groups()
        for g in self.groups:
            self.run_combo.addItem(g.name())
        form.addRow(self.tr("Run"), self.run_combo)
        self.layer_list = QListWidget()
        form.addRow(self.tr("Layers"), self.layer_list)
        self.folder = QgsFileWidget()
        self.folder.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        form.addRow(self.tr("Folder"), self.folder)
        self.cog_check = QCheckBox(self.tr("Cloud Optimized GeoTIFF (COG)"))
        form.addRow("", self.cog_check)
        self.report_check = QCheckBox(self.tr("Copy the HTML report"))
        form.addRow("", self.report_check)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.run_combo.currentIndexChanged.connect(self._fill)
        self._fill()

    def _fill(self, _index: int = 0) -> None:
        self.layer_list.clear()
        if not self.groups:
            return
        group = self.groups[self.run_combo.currentIndex()]
        for key, layer in run_layers(group).items():
            item = QListWidgetItem(layer.name())
            item.setData(Qt.ItemDataRole.UserRole, (key, layer.source()))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.layer_list.addItem(item)
        report = report_of(group)
        self.report_check.setEnabled(report is not None)
        self.report_check.setChecked(report is not None)

    def selection(self) -> tuple[dict[str, str], str, bool, str | None]:
        """(key -> source path, folder, cog, report path or None) as chosen."""
        sources = {}
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                key, path = item.data(Qt.ItemDataRole.UserRole)
                sources[key] = path
        report = None
        if self.groups and self.report_check.isChecked():
            found = report_of(self.groups[self.run_combo.currentIndex()])
            report = str(found) if found else None
        return sources, self.folder.filePath(), self.cog_check.isChecked(), report

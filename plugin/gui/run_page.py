"""The Run page: pick a raster and a model, check the band mapping, set options, run, export.

The page only gathers values: it packs them into a :class:`mtl_core.jobs.Job` and emits ``runRequested``;
the plugin starts the background task and calls :meth:`RunPage.set_running` and :meth:`RunPage.show_result`.
Its layout is ``run_page.ui``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from qgis.core import (
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt import uic
from qgis.PyQt.QtCore import pyqtSignal, pyqtSlot
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QWidget

from mtl_core.jobs import DEVICES

from ..core.model_info import BandMapping, default_mapping, raster_band_names, read_spec, summary_html, validate
from ..core.params import ogr_mask_path, tickable_products
from ..core import settings as settings_keys
from ..core.paths import default_model
from .util import ERROR_STYLE, compact, compact_all

FORM, _ = uic.loadUiType(str(Path(__file__).with_name("run_page.ui")))
MAX_RECENT = 8
EXTENT_MODES = (("layer", "Whole layer"), ("canvas", "Current map canvas"), ("aoi", "Features of a polygon layer"))
WARNING_STYLE = "color: #8a5a00;"


class RunPage(QWidget, FORM):
    """The panel's Run page (object name ``runPage``)."""

    runRequested = pyqtSignal(object)  # mtl_core.jobs.Job
    cancelRequested = pyqtSignal()
    exportRequested = pyqtSignal()
    sitesRequested = pyqtSignal(int)  # how many sites to propose from the last run
    modelChanged = pyqtSignal(str)  # the dock checks what the model needs (ONNX Runtime, the worker)

    def __init__(self, iface, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setupUi(self)
        self.setObjectName("runPage")
        self.iface = iface
        self.spec = None
        self.mapping: BandMapping | None = None
        self.band_combos: list[QComboBox] = []
        self.truth_combos: dict[str, QgsMapLayerComboBox] = {}
        self.deps_status = None
        self._running = False
        self._setup()
        self._connect()
        self._load_recent()
        self._on_layer_changed()

    def _setup(self) -> None:
        compact_all(self)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.precision_combo.addItem(self.tr("exact (float32)"), "exact")
        self.precision_combo.addItem(self.tr("fast (int8)"), "fast")
        for key, label in EXTENT_MODES:
            self.extent_combo.addItem(self.tr(label), key)
        self.aoi_combo.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.labels_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.labels_combo.setAllowEmptyLayer(True)
        self.labels_combo.setLayer(None)
        for key, label in (("all", self.tr("Every labelled pixel")), ("test", self.tr("Test blocks of the model")),
                           ("val", self.tr("Validation blocks of the model")),
                           ("train", self.tr("Training blocks of the model (optimistic)"))):
            self.split_combo.addItem(label, key)
        for d in DEVICES:
            self.device_combo.addItem(d, d)
        self.out_dir.setFilePath(self.default_output_folder())
        self._proposed_out = self.out_dir.filePath()
        self.product_checks: dict[str, QCheckBox] = {}
        for key, label, ticked in tickable_products():
            check = QCheckBox(label)
            check.setChecked(ticked)
            self.product_checks[key] = check
            self.options_form.addRow(check)  # across both columns: the labels column does not widen the page
        self.report_button.setVisible(False)

    def _connect(self) -> None:
        self.layer_combo.layerChanged.connect(self._on_layer_changed)
        self.labels_combo.layerChanged.connect(self._labels_layer_changed)
        self.model_file.fileChanged.connect(self._on_model_changed)
        self.recent_combo.activated.connect(self._on_recent_chosen)
        self.extent_combo.currentIndexChanged.connect(
            lambda _i: self.aoi_combo.setEnabled(self.extent_combo.currentData() == "aoi"))
        self.run_button.clicked.connect(self._on_run_clicked)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.export_button.clicked.connect(self.exportRequested)
        self.report_button.clicked.connect(self.open_report)
        self.help_button.clicked.connect(self.open_help)
        self.sites_button.clicked.connect(lambda: self.sitesRequested.emit(self.sites_count.value()))
        QgsProject.instance().layersAdded.connect(self._prefer_input)
        if self.iface is not None and hasattr(self.iface, "currentLayerChanged"):
            try:
                self.iface.currentLayerChanged.connect(self.follow_layer)
            except (AttributeError, TypeError):
                pass

    def disconnect_iface(self) -> None:
        """Stop following the active layer and the project (called before the dock is deleted)."""
        try:
            QgsProject.instance().layersAdded.disconnect(self._prefer_input)
        except (TypeError, RuntimeError):
            pass
        if self.iface is not None and hasattr(self.iface, "currentLayerChanged"):
            try:
                self.iface.currentLayerChanged.disconnect(self.follow_layer)
            except (AttributeError, TypeError, RuntimeError):
                pass

    # ---- state ----------------------------------------------------------------------------------------------------
    def set_dependencies(self, status) -> None:
        """What QGIS's Python and the worker can run (``core.deps.DepsStatus``, checked by the Setup page)."""
        self.deps_status = status
        self._update_run_enabled()

    def follow_layer(self, layer) -> None:
        """Select the active layer when it is a raster, but not one of the runs' own outputs."""
        from ..core.layers import is_run_output

        if isinstance(layer, QgsRasterLayer) and not is_run_output(layer):
            self.layer_combo.setLayer(layer)

    @staticmethod
    def default_output_folder() -> str:
        """A folder next to the saved project, else in the temporary folder."""
        home = QgsProject.instance().homePath()
        base = Path(home) if home else Path(tempfile.gettempdir())
        return str(base / "mtl_explain_outputs")

    def _load_recent(self) -> None:
        recent = QgsSettings().value(settings_keys.RECENT_MODELS, [], type=list) or []
        bundled = default_model()
        paths = ([str(bundled)] if bundled else []) + [p for p in recent if Path(p).exists()]
        seen: list[str] = []
        for p in paths:
            if p not in seen:
                seen.append(p)
        self.recent_combo.blockSignals(True)
        self.recent_combo.clear()
        for p in seen:
            label = self.tr("Default model (bundled)") if bundled and p == str(bundled) else Path(p).name
            self.recent_combo.addItem(label, p)
        self.recent_combo.blockSignals(False)
        if seen and not self.model_file.filePath():
            self.model_file.setFilePath(seen[0])

    def remember_model(self, path: str) -> None:
        """Put a model at the top of the recent list."""
        settings = QgsSettings()
        recent = [p for p in (settings.value(settings_keys.RECENT_MODELS, [], type=list) or []) if p != path]
        settings.setValue(settings_keys.RECENT_MODELS, [path] + recent[:MAX_RECENT - 1])
        self._load_recent()

    def select_model(self, path: str, layer=None) -> None:
        """Choose a model (at the top of Recent models too) and, when given, the raster layer to run it on."""
        self.remember_model(path)
        self.model_file.setFilePath(path)
        if layer is not None:
            self.layer_combo.setLayer(layer)

    def _on_recent_chosen(self, index: int) -> None:
        path = self.recent_combo.itemData(index)
        if path:
            self.model_file.setFilePath(path)

    def _on_model_changed(self, path: str = "") -> None:
        path = path or self.model_file.filePath()
        self.spec = None
        self.recent_combo.blockSignals(True)  # show which recent model is picked, or none for another file
        self.recent_combo.setCurrentIndex(self.recent_combo.findData(path))
        self.recent_combo.blockSignals(False)
        if not path:
            self.summary_label.setText(self.tr("Choose a model file."))
        else:
            try:
                self.spec = read_spec(path)
                self.summary_label.setText(summary_html(self.spec))
            except Exception as exc:  # noqa: BLE001 — ModelFileError or an unreadable file: show why
                self.summary_label.setText(f"<span style='{ERROR_STYLE}'>{exc}</span>")
        self._update_precision(path)
        self._rebuild_truth()
        self._rebuild_mapping()
        self.modelChanged.emit(path)

    def _update_precision(self, path: str) -> None:
        """Offer "fast (int8)" when the model has an int8 twin beside it, with what was measured when it was built."""
        from mtl_core.engine.runtime import int8_twin

        twin = int8_twin(path) if path else None
        fast = self.precision_combo.model().item(1)
        fast.setEnabled(twin is not None)
        if twin is None:
            self.precision_combo.setCurrentIndex(0)
            self.precision_combo.setToolTip(self.tr("This model has no int8 twin (a <name>.int8.mtl.onnx beside it, "
                                                    "made with 'mtl export --int8'): it runs in float32"))
            return
        try:
            measured = read_spec(twin).training.get("quantization", {}).get("measured") or {}
        except Exception:  # noqa: BLE001 — a damaged twin: offer only exact
            fast.setEnabled(False)
            self.precision_combo.setCurrentIndex(0)
            return
        said = (self.tr("same class as float32 on {:.1%} of the pixels of {}; forward pass {:.1f}× faster").format(
            measured["same_class"], measured["on"].split(",")[0], measured["speedup"])
            if {"same_class", "speedup", "on"} <= set(measured) else self.tr("not measured"))
        fast.setToolTip(said)
        self.precision_combo.setToolTip(self.tr("fast runs the int8 twin {}: {}").format(twin.name, said))

    def run_model(self) -> str:
        """The model file a run uses: the int8 twin when "fast" is chosen and there is one."""
        from mtl_core.engine.runtime import int8_twin

        path = self.model_file.filePath()
        twin = int8_twin(path) if self.precision_combo.currentData() == "fast" else None
        return str(twin) if twin else path

    def _prefer_input(self, _layers=None) -> bool:
        """When the combo sits on a run's output (its layer was removed, a project was opened), move it to an
        input raster if the project has one; returns whether it moved."""
        from ..core.layers import is_run_output

        layer = self.layer_combo.currentLayer()
        if layer is None or not is_run_output(layer):
            return False
        inputs = [lyr for lyr in QgsProject.instance().mapLayers().values()
                  if isinstance(lyr, QgsRasterLayer) and not is_run_output(lyr)]
        if inputs:
            self.layer_combo.setLayer(inputs[0])
        return bool(inputs)

    def _on_layer_changed(self, _layer=None) -> None:
        if self._prefer_input():
            return  # setLayer emitted layerChanged again
        if self.spec is None and self.model_file.filePath():
            self._on_model_changed()
        else:
            self._rebuild_mapping()

    def _aux_bands(self, name: str, layer: QgsRasterLayer) -> list[int]:
        """The bands of a real auxiliary layer holding the modality's bands (the engine's rule); raises ValueError,
        shown before Run, when the layer cannot provide them."""
        from mtl_core.engine.inputs import modality_bands

        from ..core.model_info import raster_band_names

        m = self.spec.aux_modality(name)
        found = modality_bands(m.band_names, raster_band_names(layer.source()))
        if found is None:
            raise ValueError(self.tr("The real {} layer has {} band(s) but the model's {} modality has {} ({}) and no "
                                     "band description names them; choose a layer with exactly these bands.").format(
                name, layer.bandCount(), name, len(m.bands), ", ".join(m.band_names)))
        return found

    def _labels_layer_changed(self, layer) -> None:
        """Offer the label layer's bands, the model's training band first."""
        self.labels_band.setLayer(layer)
        if layer is not None and self.spec is not None:
            from mtl_core.engine.inputs import labels_band_of

            band = labels_band_of(self.spec)
            if band <= layer.bandCount():
                self.labels_band.setBand(band)

    def _rebuild_truth(self) -> None:
        for combo in self.truth_combos.values():
            self.truth_form.removeRow(combo)
        self.truth_combos = {}
        for m in (self.spec.aux if self.spec else []):
            combo = QgsMapLayerComboBox()
            compact(combo)
            combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
            combo.setAllowEmptyLayer(True)
            combo.setLayer(None)
            combo.setToolTip(self.tr("The real auxiliary raster, with the model's bands in order"))
            self.truth_combos[m.name] = combo
            self.truth_form.insertRow(0, m.name, combo)

    def _rebuild_mapping(self) -> None:
        layer = self.layer_combo.currentLayer()
        self.band_table.setRowCount(0)
        self.band_combos = []
        self.mapping = None
        if self.spec is None or layer is None:
            self._show_mapping()
            return
        try:
            names = raster_band_names(layer.source())
        except RuntimeError:
            names = [layer.bandName(i) for i in range(1, layer.bandCount() + 1)]
        self.mapping = default_mapping(self.spec, names)
        self.band_table.setRowCount(len(self.mapping.model_bands))
        from qgis.PyQt.QtWidgets import QTableWidgetItem

        for row, model_band in enumerate(self.mapping.model_bands):
            self.band_table.setItem(row, 0, QTableWidgetItem(model_band))
            combo = QComboBox()
            compact(combo)
            combo.addItem(self.tr("(none)"), 0)
            for i, desc in enumerate(names, start=1):
                combo.addItem(f"{i}: {desc}" if desc else f"{i}", i)
            combo.setCurrentIndex(max(0, combo.findData(self.mapping.mapping[row])))
            combo.currentIndexChanged.connect(self._on_mapping_edited)
            self.band_table.setCellWidget(row, 1, combo)
            self.band_combos.append(combo)
        self._show_mapping()

    def _on_mapping_edited(self, _index: int = 0) -> None:
        if self.mapping is None:
            return
        self.mapping.mapping = [c.currentData() for c in self.band_combos]
        self.mapping.manual = True  # the user chose: do not warn about order matching again
        validate(self.spec, self.mapping)
        self._show_mapping()

    def _show_mapping(self) -> None:
        m = self.mapping
        if m is None:
            self.mapping_label.setText("")
        elif m.errors:
            self.mapping_label.setStyleSheet(ERROR_STYLE)
            self.mapping_label.setText(" ".join(m.errors))
        elif m.warnings:
            self.mapping_label.setStyleSheet(WARNING_STYLE)
            self.mapping_label.setText(" ".join(m.warnings))
        else:
            self.mapping_label.setStyleSheet("")
            if m.manual:
                self.mapping_label.setText(self.tr("Bands as you chose them."))
            else:
                how = self.tr("by band description") if m.by_name else self.tr("in order")
                self.mapping_label.setText(self.tr("Bands matched {}.").format(how))
        self._update_run_enabled()

    def _update_run_enabled(self) -> None:
        status = self.deps_status
        ready = (status is not None and status.can_run(self.model_file.filePath()) and self.spec is not None
                 and self.mapping is not None and self.mapping.ok and not self._running)
        self.run_button.setEnabled(bool(ready))

    # ---- running --------------------------------------------------------------------------------------------------
    def parameters(self):
        """Pack the panel's values into a predict job (explain with ground truth); raises ValueError with a
        message for the user when something is missing."""
        from mtl_core.jobs import Job

        layer = self.layer_combo.currentLayer()
        if layer is None:
            raise ValueError(self.tr("Choose a raster layer."))
        if layer.providerType() != "gdal" or not Path(layer.source()).exists():
            raise ValueError(self.tr("The layer {} is not a raster file GDAL can open; save it as GeoTIFF first "
                                     "(right-click > Export > Save As).").format(layer.name()))
        if self.spec is None:
            raise ValueError(self.tr("Choose a valid model file."))
        if self.mapping is None or not self.mapping.ok:
            raise ValueError(" ".join(self.mapping.errors) if self.mapping else self.tr("Check the band mapping."))
        out_dir = self.output_folder()
        aux_truth, aux_bands, labels = {}, {}, None
        if self.truth_box.isChecked():
            for name, combo in self.truth_combos.items():
                truth = combo.currentLayer()
                if truth is not None:
                    aux_truth[name] = truth.source()
                    aux_bands[name] = self._aux_bands(name, truth)
            lab = self.labels_combo.currentLayer()
            labels = lab.source() if lab is not None else None
            if not aux_truth and not labels:
                raise ValueError(self.tr("Ground truth is ticked but no raster is chosen; choose one or untick it."))
        mask = None
        if self.extent_combo.currentData() == "aoi" and self.aoi_combo.currentLayer() is not None:
            aoi = self.aoi_combo.currentLayer()
            mask = ogr_mask_path(aoi.source(), aoi.providerType(), aoi.subsetString(), aoi.selectedFeatureCount())
        extent = self.extent_in_layer_crs(layer)
        return Job(
            kind="explain" if aux_truth or labels else "predict",
            model=self.run_model(),
            raster=layer.source(),
            out=out_dir,
            name=layer.name(),
            bands=list(self.mapping.mapping),
            extent=list(extent) if extent else None,
            tile=self.tile_spin.value() or None,
            overlap=None if self.overlap_spin.value() < 0 else self.overlap_spin.value(),
            batch_size=self.batch_spin.value(),
            device=self.device_combo.currentData(),
            products=[k for k, c in self.product_checks.items() if c.isChecked()],
            aux_truth=aux_truth,
            aux_bands=aux_bands,
            labels=labels,
            labels_band=self.labels_band.currentBand() if labels and self.labels_band.currentBand() > 0 else None,
            split=self.split_combo.currentData() if labels else "all",
            mask=mask,
        )

    def output_folder(self) -> str:
        """The folder runs write into: the user's choice, else (left as proposed) next to the project now."""
        out_dir = self.out_dir.filePath()
        if not out_dir or out_dir == self._proposed_out:
            out_dir = self._proposed_out = self.default_output_folder()
            self.out_dir.setFilePath(out_dir)
        return out_dir

    def extent_in_layer_crs(self, layer: QgsRasterLayer) -> tuple[float, float, float, float] | None:
        """The chosen extent, transformed to the layer's CRS and clipped to it; None for the whole layer."""
        from ..core.dataset import area_extent

        return area_extent(
            self.extent_combo.currentData(), self.iface.mapCanvas() if self.iface else None,
            self.aoi_combo.currentLayer(), layer,
            self.tr("Choose the polygon layer that outlines the area of interest."),
            self.tr("The chosen extent does not overlap the layer {}; pan the map or choose another area.").format(
                layer.name()))

    def _on_run_clicked(self) -> None:
        try:
            params = self.parameters()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.remember_model(params.model)
        self.runRequested.emit(params)

    def set_running(self, running: bool) -> None:
        """Switch the buttons between idle and running."""
        self._running = running
        self.cancel_button.setEnabled(running)
        if running:
            self.report_button.setVisible(False)
            self.progress.setValue(0)
            self.status_label.setStyleSheet("")
            self.status_label.setText(self.tr("Running…"))
        self._update_run_enabled()

    @pyqtSlot(float)
    def set_progress(self, value: float) -> None:
        """Progress in percent (connected to the task's ``progressChanged``)."""
        self.progress.setValue(int(value))

    def show_result(self, device: str, message: str, report: str | None = None, sites: bool = False) -> None:
        """After a successful run: the device actually used, a short status, the report button, and whether sites to
        label can be proposed from its layers (``sites``)."""
        self.sites_button.setEnabled(sites)
        self.report_path = report
        self.report_button.setVisible(bool(report))
        self.device_label.setText(self.tr("Device used: {}").format(device or "?"))
        self.progress.setValue(100)
        self.status_label.setStyleSheet("")
        self.status_label.setText(message)

    @staticmethod
    def _open_file(path) -> None:
        """Open a local file (manual, report) with the system's viewer."""
        from qgis.PyQt.QtCore import QUrl
        from qgis.PyQt.QtGui import QDesktopServices

        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def open_help(self) -> None:
        """Open the plugin's manual."""
        from ..core.paths import manual

        self._open_file(manual())

    def open_report(self) -> None:
        """Open the last run's HTML report in the system's browser."""
        if getattr(self, "report_path", None):
            self._open_file(self.report_path)

    def show_error(self, message: str) -> None:
        """Show an error under the Run button (the plugin also pushes it to the message bar)."""
        self.status_label.setStyleSheet(ERROR_STYLE)
        self.status_label.setText(message)

"""The Train page: map layers and polygon labels in, a model out, with its curves drawn while it trains.

The page gathers values into train jobs (:class:`mtl_core.jobs.Job`, the layers as an inline dataset
configuration, as Processing › Train builds it) and emits ``trainRequested``; the plugin runs them in a
``TrainTask`` (the worker process) and feeds each record back through :meth:`TrainPage.on_record`. Its
layout is ``train_page.ui``; code adds what Designer cannot: combo data, the auxiliary-modality rows and
the curve plot.
"""

from __future__ import annotations

import time
from pathlib import Path

from qgis.core import (
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsCheckableComboBox, QgsMapLayerComboBox
from qgis.PyQt import uic
from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal, pyqtSlot
from qgis.PyQt.QtWidgets import QHeaderView, QLineEdit, QTableWidgetItem, QWidget

from mtl_core.jobs import DEVICES
from mtl_core.metrics import held_out_caveats
from mtl_core.spec import TASKS, VARIANTS
from mtl_core.training.options import DEFAULT_MINUTES, FOREST_VARIANTS, MAX_MINUTES

from ..core.dataset import area_extent, dataset_from_layers, modality_name
from .curves import CurvePlot
from .util import ERROR_STYLE, compact, compact_all

FORM, _ = uic.loadUiType(str(Path(__file__).with_name("train_page.ui")))
TASK_LABELS = {"segmentation": "Segmentation (per pixel)", "classification": "Patch classification",
               "regression": "Regression (per pixel)"}
AREA_MODES = (("layer", "Whole layer"), ("canvas", "Current map canvas"), ("polygons", "Polygons of a layer"))
SCORES = {"segmentation": "miou", "classification": "oa", "regression": "r2"}
#: the budget a unit starts at when it is chosen
BUDGET_DEFAULTS = {"minutes": DEFAULT_MINUTES, "steps": 600}
#: Columns of the results table: (metric key in the model's test metrics, header).
RESULT_COLUMNS = {"segmentation": (("miou", "test mIoU"), ("overall_accuracy", "test OA")),
                  "classification": (("overall_accuracy", "test OA"), ("miou", "test mIoU")),
                  "regression": (("rmse", "test RMSE"), ("r2", "test R²"))}


def _checked_bands(combo: QgsCheckableComboBox, what: str) -> list[int] | None:
    """The ticked bands (1-based); None when every band is ticked."""
    ticked = [i + 1 for i in range(combo.count()) if combo.itemCheckState(i) == Qt.CheckState.Checked]
    if not ticked:
        raise ValueError(f"{what}: tick at least one band")
    return None if len(ticked) == combo.count() else ticked


def _fill_bands(combo: QgsCheckableComboBox, layer) -> None:
    combo.clear()
    if isinstance(layer, QgsRasterLayer):
        combo.addItems([f"{i}: {layer.bandName(i)}" for i in range(1, layer.bandCount() + 1)])
        for i in range(combo.count()):
            combo.setItemCheckState(i, Qt.CheckState.Checked)


class TrainPage(QWidget, FORM):
    """The panel's Train page (object name ``trainPage``)."""

    trainRequested = pyqtSignal(object)  # list[mtl_core.jobs.Job]: the chosen variant first, then the baselines
    cancelRequested = pyqtSignal()
    explainRequested = pyqtSignal(object)  # mtl_core.jobs.Job (explain, split "test"; the dock sets its folder)

    def __init__(self, iface, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setupUi(self)
        self.setObjectName("trainPage")
        self.iface = iface
        self.curves = CurvePlot()
        self.curves_holder.layout().addWidget(self.curves)
        self.aux_rows: list[tuple[QLineEdit, QgsMapLayerComboBox, QgsCheckableComboBox]] = []
        self.deps_status = None
        self.jobs: list = []
        self.results: list = []  # (variant, mtl_core.jobs.JobResult) of the last training
        self._running = False
        self._started = 0.0
        self._job_started: dict[int, float] = {}  # job index -> when its first record came
        self._proposed_out = ""
        self._shown: dict = {}  # the layer each combo's dependent widgets were last filled for
        self._setup()
        self._connect()
        self._on_input_changed(self.input_layer.currentLayer())
        self._on_labels_changed(self.labels_layer.currentLayer())

    def _setup(self) -> None:
        self.input_layer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.labels_layer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer |
                                     QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.area_layer.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        for task in TASKS:
            self.task_combo.addItem(self.tr(TASK_LABELS[task]), task)
        for key, label in AREA_MODES:
            self.area_combo.addItem(self.tr(label), key)
        for variant in VARIANTS:
            self.variant_combo.addItem(variant, variant)
        for device in DEVICES:
            self.device_combo.addItem(device, device)
        self.budget_unit.addItem(self.tr("minutes"), "minutes")
        self.budget_unit.addItem(self.tr("steps"), "steps")
        self.results_table.setVisible(False)
        compact_all(self)
        header = self.aux_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        for column in (1, 2):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)

    def _connect(self) -> None:
        # currentIndexChanged too: a combo whose rows are re-sorted as layers are added changes its layer silently
        for combo, handler in ((self.input_layer, self._on_input_changed),
                               (self.labels_layer, self._on_labels_changed)):
            combo.layerChanged.connect(handler)
            combo.currentIndexChanged.connect(lambda _i, combo=combo, handler=handler: handler(combo.currentLayer()))
        self.area_combo.currentIndexChanged.connect(
            lambda _i: self.area_layer.setEnabled(self.area_combo.currentData() == "polygons"))
        self.variant_combo.currentIndexChanged.connect(lambda _i: self._update_out_proposal())
        self.budget_unit.currentIndexChanged.connect(lambda _i: self._on_budget_unit())
        self.add_aux_button.clicked.connect(lambda: self.add_aux())
        self.remove_aux_button.clicked.connect(self._remove_selected_aux)
        self.train_button.clicked.connect(self._on_train_clicked)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.explain_button.clicked.connect(self._on_explain_clicked)

    # ---- the form -------------------------------------------------------------------------------------------------
    def set_budget(self, value: float, unit: str = "minutes") -> None:
        """Train each model for ``value`` minutes (wall time) or ``value`` steps."""
        self.budget_unit.setCurrentIndex(self.budget_unit.findData(unit))
        self.budget_spin.setValue(value)

    def budget(self) -> dict:
        """``{"minutes": m}`` or ``{"steps": n}`` as the form says."""
        unit = self.budget_unit.currentData()
        value = self.budget_spin.value()
        return {"minutes": float(value)} if unit == "minutes" else {"steps": int(value)}

    def _on_budget_unit(self) -> None:
        unit = self.budget_unit.currentData()
        minutes = unit == "minutes"
        self.budget_spin.setDecimals(1 if minutes else 0)
        self.budget_spin.setRange(0.1 if minutes else 1, MAX_MINUTES if minutes else 1_000_000)
        self.budget_spin.setValue(BUDGET_DEFAULTS[unit])

    def add_aux(self, name: str = "", layer=None) -> int:
        """Add an auxiliary-modality row (name, raster layer, bands); returns its row."""
        row = self.aux_table.rowCount()
        self.aux_table.insertRow(row)
        name_edit = QLineEdit(name)
        name_edit.setPlaceholderText(self.tr("e.g. swir"))
        combo = QgsMapLayerComboBox()
        combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        combo.setAllowEmptyLayer(True)
        combo.setLayer(layer)
        bands = QgsCheckableComboBox()
        for widget in (combo, bands):
            compact(widget)
        self.aux_table.setCellWidget(row, 0, name_edit)
        self.aux_table.setCellWidget(row, 1, combo)
        self.aux_table.setCellWidget(row, 2, bands)

        def on_layer(chosen) -> None:
            _fill_bands(bands, chosen)
            if chosen is not None and not name_edit.text().strip():
                name_edit.setText(modality_name(chosen.name()))

        combo.layerChanged.connect(on_layer)
        on_layer(combo.currentLayer())
        self.aux_rows.append((name_edit, combo, bands))
        return row

    def _remove_selected_aux(self) -> None:
        rows = sorted({i.row() for i in self.aux_table.selectedIndexes()} or {self.aux_table.rowCount() - 1},
                      reverse=True)
        for row in rows:
            if 0 <= row < len(self.aux_rows):
                self.aux_table.removeRow(row)
                del self.aux_rows[row]

    def _on_input_changed(self, layer) -> None:
        if layer is self._shown.get("input") and layer is not None:
            return
        self._shown["input"] = layer
        _fill_bands(self.input_bands, layer)
        self._update_out_proposal()

    def _on_labels_changed(self, layer) -> None:
        if layer is self._shown.get("labels") and layer is not None:
            return
        self._shown["labels"] = layer
        vector = isinstance(layer, QgsVectorLayer)
        self.labels_field.setLayer(layer if vector else None)
        self.labels_field.setEnabled(vector)
        self.labels_band.setLayer(layer if isinstance(layer, QgsRasterLayer) else None)
        self.labels_band.setEnabled(not vector)
        if vector:  # a text field is the usual class field (names like "forest"); else the first field
            fields = layer.fields()
            text = [f.name() for f in fields if not f.isNumeric()]
            if text or fields.count():
                self.labels_field.setField(text[0] if text else fields[0].name())

    def _update_out_proposal(self) -> None:
        """Propose ``<project folder>/<input layer>.<variant>.safetensors`` (a new name), unless the user chose."""
        current = self.out_file.filePath()
        if current and current != self._proposed_out:
            return
        layer = self.input_layer.currentLayer()
        home = QgsProject.instance().homePath() or str(Path.home())
        stem = modality_name(layer.name()) if layer is not None else "model"
        variant = self.variant_combo.currentData() or "mtl"
        path = Path(home) / f"{stem}.{variant}.safetensors"
        n = 2
        while path.exists():
            path = Path(home) / f"{stem}-{n}.{variant}.safetensors"
            n += 1
        self._proposed_out = str(path)
        self.out_file.setFilePath(self._proposed_out)

    def training_extent(self, layer: QgsRasterLayer) -> tuple[float, float, float, float] | None:
        """The chosen training area in the input layer's CRS (None: the whole layer)."""
        return area_extent(
            self.area_combo.currentData(), self.iface.mapCanvas() if self.iface else None,
            self.area_layer.currentLayer(), layer,
            self.tr("Choose the polygon layer that outlines the training area."),
            self.tr("The training area does not overlap the layer {}.").format(layer.name()))

    def aux_modalities(self) -> list[tuple[str, object, list[int] | None]]:
        """``(name, layer, bands)`` of every filled auxiliary row."""
        out = []
        for name_edit, combo, bands in self.aux_rows:
            layer = combo.currentLayer()
            if layer is None:
                continue
            name = name_edit.text().strip()
            if not name or name != modality_name(name):
                raise ValueError(self.tr("Auxiliary modality name {!r}: use letters, digits and _ . + - (e.g. {})")
                                 .format(name, modality_name(name or layer.name())))
            out.append((name, layer, _checked_bands(bands, name)))
        return out

    def parameters(self) -> list:
        """The train jobs of the form: the chosen variant, then the baselines when asked; raises ValueError with a
        message for the user when something is missing."""
        layer = self.input_layer.currentLayer()
        if layer is None:
            raise ValueError(self.tr("Choose the input raster layer."))
        aux = self.aux_modalities()
        variant = self.variant_combo.currentData()
        baselines = self.baselines_check.isChecked()
        if not aux and (variant != "unimodal" or baselines):
            raise ValueError(self.tr("The {} variant needs at least one auxiliary modality: add a row with its "
                                     "raster layer, or choose the unimodal variant.").format(
                "mtl and multimodal" if baselines else variant))
        task = self.task_combo.currentData()
        dataset = dataset_from_layers(
            layer, _checked_bands(self.input_bands, self.tr("Input")), aux, self.labels_layer.currentLayer(), task,
            labels_band=max(1, self.labels_band.currentBand()), labels_field=self.labels_field.currentField(),
            extent=self.training_extent(layer))
        out = self.out_file.filePath()
        if not out:
            raise ValueError(self.tr("Choose the model file to write."))
        if not Path(out).parent.is_dir():
            raise ValueError(self.tr("The folder of {} does not exist; choose another model file.").format(out))
        from mtl_core.errors import ConfigError
        from mtl_core.jobs import train_jobs

        try:
            return train_jobs(variant, out, baselines=baselines, device=self.device_combo.currentData(),
                              dataset=dataset, name=layer.name(), **self.budget())
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    # ---- running --------------------------------------------------------------------------------------------------
    def set_dependencies(self, status) -> None:
        """What the worker can run (``core.deps.DepsStatus``); training needs the worker's PyTorch."""
        self.deps_status = status
        self._update_train_enabled()

    def _update_train_enabled(self) -> None:
        status = self.deps_status
        self.train_button.setEnabled(not self._running and status is not None and
                                     (status.worker is None or status.worker.ok))

    def _on_train_clicked(self) -> None:
        try:
            jobs = self.parameters()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.trainRequested.emit(jobs)

    def set_running(self, jobs: list | None) -> None:
        """Switch to running (``jobs``: what runs) or back to idle (None)."""
        self._running = jobs is not None
        self.cancel_button.setEnabled(self._running)
        if jobs is not None:
            self.jobs, self.results = list(jobs), []
            self._started = time.monotonic()
            self._job_started = {}
            self.curves.clear(int(jobs[0].train.get("steps", 1)))
            self.results_table.setVisible(False)
            self.explain_button.setEnabled(False)
            self.progress.setValue(0)
            self.status_label.setStyleSheet("")
            self.status_label.setText(self.tr("Starting the worker…"))
            self.phase_label.setText("")
            # the curves in view while it trains, once the layout has hidden the last scores
            QTimer.singleShot(0, lambda: self.scroll.ensureWidgetVisible(self.curves, 0, 10))
        self._update_train_enabled()

    @pyqtSlot(int, object)
    def on_record(self, index: int, record: dict) -> None:
        """One live record of job ``index`` (phase, a step's losses, a validation): curves, phase, time."""
        job = self.jobs[index] if index < len(self.jobs) else None
        variant = job.train.get("variant", "") if job is not None else ""
        kind = record.get("kind")
        if kind == "step":
            step, steps = int(record["step"]), int(record["steps"])
            if step == 1 and index > 0:
                self.curves.clear(steps)
            self.curves.set_length(steps)
            self.curves.add_losses(step, record.get("losses", {}))
            started = self._job_started.setdefault(index, time.monotonic())
            minutes = job.train.get("minutes") if job is not None else None
            fraction = min(1.0, (time.monotonic() - started) / (60 * minutes)) if minutes else step / steps
            done = (index + fraction) / max(1, len(self.jobs))
            self.progress.setValue(int(100 * done))
            elapsed = time.monotonic() - self._started
            left = elapsed * (1 - done) / done if done > 0 else 0
            self.status_label.setText(self.tr("{}: training step {} of {} — {:.0f} s elapsed, about {:.0f} s left")
                                      .format(variant, step, steps, elapsed, left))
        elif kind == "validation":
            task = self.task_combo.currentData()
            name = SCORES.get(task, "miou")
            value = record.get("metrics", {}).get(name)
            if value is not None:
                self.curves.add_score(int(record["step"]), name, float(value))
        elif kind == "phase":
            self._job_started.setdefault(index, time.monotonic())
            self.phase_label.setText(self.tr("Model {} of {} ({}): {}").format(
                index + 1, len(self.jobs), variant, record.get("phase", "")))

    def show_results(self, results: list) -> None:
        """The held-out test scores of the variants trained, side by side; the explain button for the first."""
        self.results = list(results)
        task = self.task_combo.currentData()
        columns = RESULT_COLUMNS.get(task, RESULT_COLUMNS["segmentation"])
        self.results_table.clear()
        self.results_table.setColumnCount(2 + len(columns))
        self.results_table.setHorizontalHeaderLabels(
            [self.tr("Variant"), self.tr("Needs the auxiliary rasters")] + [self.tr(h) for _, h in columns])
        self.results_table.setRowCount(len(results))
        for row, (variant, result) in enumerate(results):
            cells = [variant, self.tr("yes") if variant in ("multimodal", "forest-multimodal") else self.tr("no")]
            cells += [f"{result.metrics[k]:.3f}" if isinstance(result.metrics.get(k), float) else "–"
                      for k, _ in columns]
            for col, text in enumerate(cells):
                self.results_table.setItem(row, col, QTableWidgetItem(text))
        self.results_table.resizeColumnsToContents()
        self.results_table.setVisible(bool(results))
        if results:  # the held-out scores in view once the layout has placed the table
            QTimer.singleShot(0, lambda: self.scroll.ensureWidgetVisible(self.results_table, 0, 10))
        self.explain_button.setEnabled(bool(results) and bool(results[0][1].outputs.get("model")))
        self.progress.setValue(100)
        models = [Path(r.outputs["model"]).name for _, r in results if r.outputs.get("model")]
        done = self.tr("Done: {} in {:.0f} s.").format(
            ", ".join(models) or self.tr("no model file"), time.monotonic() - self._started)
        if any(v in FOREST_VARIANTS for v, _ in results):
            done += " " + self.tr("The forests are scored, not saved.")
        caveats = held_out_caveats(results[0][1].spec.get("training", {})) if results else []
        self.phase_label.setText(done)
        self.caveat_label.setVisible(bool(caveats))
        self.caveat_label.setText(" ".join(self.tr("Note: {}.").format(c) for c in caveats))

    def explain_job(self):
        """An explain job of the first model trained on its own held-out test blocks (output folder left to the
        dock: the Run page's)."""
        from mtl_core.jobs import Job

        if not self.results or not self.jobs:
            return None
        job, (variant, result) = self.jobs[0], self.results[0]
        data = job.dataset
        labels = data["labels"]
        return Job(kind="explain", model=result.outputs["model"], raster=data["inputs"]["input"]["path"],
                   name=f"{job.name} ({variant}, test blocks)", bands=data["inputs"]["input"].get("bands"),
                   aux_truth={n: m["path"] for n, m in data["aux"].items()},
                   aux_bands={n: m["bands"] for n, m in data["aux"].items() if m.get("bands")},
                   labels=labels["path"], labels_field=labels.get("field"),
                   labels_band=labels.get("band"), split="test", device="auto")

    def _on_explain_clicked(self) -> None:
        job = self.explain_job()
        if job is not None:
            self.explainRequested.emit(job)

    def show_cancelled(self) -> None:
        """Say that the training was cancelled and nothing written; the progress back to zero."""
        self.show_error(self.tr("Training cancelled; nothing was written."))
        self.progress.setValue(0)

    def show_error(self, message: str) -> None:
        """Show an error under the Train button (the plugin also pushes it to the message bar)."""
        self.status_label.setStyleSheet(ERROR_STYLE)
        self.status_label.setText(message)

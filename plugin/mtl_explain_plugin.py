"""The MTL Explain plugin object: adds the panel, its action and menu entries, and the Processing provider.

``unload()`` removes everything ``initGui()`` and ``initProcessing()`` added, so loading, unloading and
reloading leave QGIS as it was.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtGui import QIcon
try:
    from qgis.PyQt.QtGui import QAction  # Qt6 (QGIS 4)
except ImportError:
    from qgis.PyQt.QtWidgets import QAction  # Qt5 (QGIS 3)

from .core import deps, settings
from .core.logger import get_logger, remove_handlers
from .core.paths import PLUGIN_NAME, i18n_dir, icon_path
from .core.task import PredictTask, SitesTask, TaskResult, TrainTask

MENU = "&MTL Explain"


def load_translation():
    """Install ``i18n/mtl_explain_<locale>.qm`` for QGIS's user locale (e.g. ``fr`` or ``pt_BR``), when one is
    shipped; returns the installed translator or None. Every text the plugin shows goes through ``tr()``
    or ``QCoreApplication.translate`` (product titles: context ``MtlExplainProducts``)."""
    from qgis.core import QgsSettings
    from qgis.PyQt.QtCore import QTranslator

    locale = str(QgsSettings().value(settings.USER_LOCALE, "") or "")
    for name in (locale, locale[:2]):
        qm = i18n_dir() / f"mtl_explain_{name}.qm"
        if name and qm.is_file():
            translator = QTranslator()
            if translator.load(str(qm)):
                QCoreApplication.installTranslator(translator)
                return translator
    return None


class MtlExplainPlugin:
    """QGIS plugin: panel, actions and Processing provider of MTL Explain."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.log = get_logger()
        self.provider = None
        self.dock = None
        self.actions: list[QAction] = []
        self.task: PredictTask | None = None
        self.train_task: TrainTask | None = None
        self.export_task = None
        self.install_task = None
        self.sites_task: SitesTask | None = None
        self.last_run: TaskResult | None = None  # the last successful run: sites to label are proposed from it
        deps.add_private_folder_to_path()
        self.translator = load_translation()

    @staticmethod
    def tr(text: str) -> str:
        """Translate a message of the plugin."""
        return QCoreApplication.translate("MtlExplainPlugin", text)

    # ---- QGIS hooks ---------------------------------------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 (QGIS name)
        """Register the Processing provider (also called by qgis_process, without a GUI)."""
        from .processing.provider import MtlExplainProvider

        if self.provider is None:
            self.provider = MtlExplainProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS name)
        """Add the panel, its toggle action, the export action, menu entries and the provider."""
        self.initProcessing()
        from .gui.dock import MtlExplainDock

        self.dock = MtlExplainDock(self.iface, self.iface.mainWindow())
        self.dock.setVisible(False)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        run, train = self.dock.run_page, self.dock.train_page
        run.runRequested.connect(self.start_run)
        run.cancelRequested.connect(self.cancel_run)
        run.exportRequested.connect(self.export_run)
        run.sitesRequested.connect(self.propose_sites)
        train.trainRequested.connect(self.start_training)
        train.cancelRequested.connect(self.cancel_training)
        self.dock.setup_page.installRequested.connect(self.install_dependencies)

        panel = self.dock.toggleViewAction()
        panel.setIcon(QIcon(str(icon_path())))
        panel.setText(self.tr("MTL Explain panel"))
        panel.setObjectName("mtlExplainPanelAction")
        export = QAction(QIcon(str(icon_path("export.svg"))), self.tr("Export explanation rasters…"),
                         self.iface.mainWindow())
        export.setObjectName("mtlExplainExportAction")
        export.triggered.connect(self.export_run)
        for action in (panel, export):
            self.iface.addPluginToRasterMenu(MENU, action)
            self.actions.append(action)
        self.iface.addRasterToolBarIcon(panel)

        status = deps.check()
        if not status.onnx_ok:
            self.log.warning(status.message())
            self.iface.messageBar().pushWarning(PLUGIN_NAME, status.message())

    def unload(self) -> None:
        """Remove everything initGui added; cancel a running task first."""
        for task in (self.task, self.train_task, self.sites_task):
            if task is not None:
                try:
                    task.on_finished = None
                    task.cancel()
                except RuntimeError:  # already deleted by the task manager
                    pass
        self.task = self.train_task = self.sites_task = self.last_run = None
        if self.actions:
            self.iface.removeRasterToolBarIcon(self.actions[0])
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
        for action in self.actions[1:]:  # the first is the dock's own toggle action, deleted with it
            action.deleteLater()
        self.actions = []
        if self.dock is not None:
            self.dock.disconnect_iface()
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        remove_handlers()
        if self.translator is not None:
            QCoreApplication.removeTranslator(self.translator)
            self.translator = None

    # ---- runs -----------------------------------------------------------------------------------------------------
    def start_run(self, job) -> PredictTask | None:
        """Start a background run of the panel's job (``mtl_core.jobs.Job``); returns the task."""
        if self.task is not None:
            self.iface.messageBar().pushWarning(PLUGIN_NAME, self.tr("A run is already going; wait or cancel it."))
            return None
        self.task = PredictTask(job, self._run_finished)
        # The dock is a QObject of the main thread: progress emitted by the worker arrives queued.
        self.task.progressChanged.connect(self.dock.run_page.set_progress)
        self.dock.run_page.set_running(True)
        self.log.info("%s started: model %s on %s", job.kind, job.model, job.raster)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel_run(self) -> None:
        """Cancel the running task (its files are removed by the engine)."""
        if self.task is not None:
            self.task.cancel()

    def _run_finished(self, result: TaskResult) -> None:
        """Main thread: add the layers or show the error."""
        from .core.layers import add_run_layers

        self.task = None
        page = self.dock.run_page if self.dock is not None else None
        if page is not None:
            page.set_running(False)
        bar = self.iface.messageBar()
        if result.ok:
            group = add_run_layers(result.outcome, result.job.name)
            message = self.tr("{} layers added to group '{}' ({:.0f} s on {}).").format(
                len(group.findLayers()), group.name(), result.outcome.seconds, result.outcome.device)
            for warning in result.outcome.warnings:  # the run worked, but its outputs may not mean much
                message += " " + self.tr("Warning: {}.").format(warning)
            level = Qgis.MessageLevel.Warning if result.outcome.warnings else Qgis.MessageLevel.Success
            bar.pushMessage(PLUGIN_NAME, message, level, 8)
            self.last_run = result
            if page is not None:
                page.show_result(result.outcome.device, message, result.outcome.report,
                                 sites=result.outcome.spec.get("task") == "segmentation"
                                 and {"main", "confidence"} <= set(result.outcome.outputs))
        elif result.cancelled:
            bar.pushInfo(PLUGIN_NAME, self.tr("Run cancelled; nothing was written."))
            if page is not None:
                page.show_error(self.tr("Cancelled; nothing was written."))
                page.set_progress(0)
        else:
            bar.pushCritical(PLUGIN_NAME, result.error or self.tr("the run failed; see the log panel"))
            if page is not None:
                page.show_error(result.error or "")

    # ---- training -------------------------------------------------------------------------------------------------
    def start_training(self, jobs: list) -> TrainTask | None:
        """Start training the Train page's jobs (a variant, then its baselines) in the worker; returns the task."""
        if self.train_task is not None:
            self.iface.messageBar().pushWarning(PLUGIN_NAME, self.tr("A training is already going; wait or cancel "
                                                                     "it."))
            return None
        page = self.dock.train_page
        self.train_task = TrainTask(jobs, self._training_finished)
        self.train_task.record.connect(page.on_record)  # queued: the page lives on the main thread
        page.set_running(jobs)
        self.log.info("training started: %s", ", ".join(j.out or j.train.get("variant", "") for j in jobs))
        QgsApplication.taskManager().addTask(self.train_task)
        return self.train_task

    def cancel_training(self) -> None:
        """Stop the training worker; the task removes whatever it had written."""
        if self.train_task is not None:
            self.train_task.cancel()

    def _training_finished(self, result: TaskResult) -> None:
        """Main thread: show the held-out scores and select the new model on the Run page, or say what failed."""
        self.train_task = None
        if self.dock is None:
            return
        page, bar = self.dock.train_page, self.iface.messageBar()
        page.set_running(None)
        if result.cancelled:
            page.show_cancelled()
            bar.pushInfo(PLUGIN_NAME, self.tr("Training cancelled; nothing was written."))
            return
        if result.outcome:
            page.show_results(result.outcome)
            model = result.outcome[0][1].outputs.get("model", "")
            self.dock.model_trained(model)
            bar.pushMessage(PLUGIN_NAME, self.tr("Model written: {}; selected on the Run page.").format(model),
                            Qgis.MessageLevel.Success, 8)
        if result.error:
            page.show_error(result.error)
            bar.pushCritical(PLUGIN_NAME, result.error)

    # ---- export and dependencies --------------------------------------------------------------------------------
    # ---- where to label next ----------------------------------------------------------------------------------------
    def propose_sites(self, count: int = 20) -> SitesTask | None:
        """Propose ``count`` sites to label from the last run's layers, in a background task; the layer arrives in
        the run's group."""
        run = self.last_run
        if run is None or self.sites_task is not None:
            return None
        folder = Path(run.outcome.run_dir)
        out, n = folder / "sites_to_label.gpkg", 1
        while out.exists():
            n += 1
            out = folder / f"sites_to_label-{n}.gpkg"
        self.sites_task = SitesTask(run.outcome, count, str(out), self._sites_finished)
        QgsApplication.taskManager().addTask(self.sites_task)
        return self.sites_task

    def _sites_finished(self, result: TaskResult) -> None:
        """Main thread: add the sites layer to the run's group, or say what went wrong."""
        from .core.layers import add_sites_layer

        run_dir = self.sites_task.outcome.run_dir
        self.sites_task = None
        bar = self.iface.messageBar()
        if result.outcome is None:
            bar.pushCritical(PLUGIN_NAME, result.error or self.tr("proposing sites failed; see the log panel"))
            return
        r = result.outcome
        layer = add_sites_layer(str(r.path), run_dir,
                                self.tr("Sites to label ({})").format(r.strategy))
        message = self.tr("{} sites to label proposed, ranked by {}; set their 'class' field or digitise polygons in "
                          "them, then train again.").format(len(r.sites), r.strategy)
        for note in [r.note] + r.warnings:
            if note:
                message += " " + note + "."
        level = Qgis.MessageLevel.Warning if (r.note or r.warnings or layer is None) else Qgis.MessageLevel.Success
        bar.pushMessage(PLUGIN_NAME, message, level, 10)

    def export_run(self) -> None:
        """Ask which run's layers to export, then write them in a background task."""
        from .core.export import ExportTask
        from .gui.export_dialog import ExportDialog

        dialog = ExportDialog(self.iface.mainWindow())
        if not dialog.groups:
            self.iface.messageBar().pushInfo(PLUGIN_NAME, self.tr("No MTL Explain run in this project yet; run the "
                                                                  "panel first."))
            return
        if not dialog.exec():
            return
        sources, folder, cog, report = dialog.selection()
        if not sources or not folder:
            self.iface.messageBar().pushWarning(PLUGIN_NAME, self.tr("Choose at least one layer and a folder."))
            return
        from .core.export import existing_targets

        clash = existing_targets(sources, folder, report)
        if clash and not self._confirm_replace(clash, folder):
            return

        def done(ok: bool, task) -> None:
            self.export_task = None
            if ok:
                self.iface.messageBar().pushSuccess(
                    PLUGIN_NAME, self.tr("{} files written to {}").format(len(task.written), folder))
            else:
                self.iface.messageBar().pushCritical(PLUGIN_NAME, task.error or self.tr("Export cancelled."))

        self.export_task = ExportTask(sources, folder, cog, report, done)
        QgsApplication.taskManager().addTask(self.export_task)

    def _confirm_replace(self, files: list, folder: str) -> bool:
        """Ask before an export replaces files; True to go on."""
        from qgis.PyQt.QtWidgets import QMessageBox

        names = ", ".join(p.name for p in files[:5]) + (" …" if len(files) > 5 else "")
        answer = QMessageBox.question(
            self.iface.mainWindow(), PLUGIN_NAME,
            self.tr("{} file(s) already exist in {}: {}. Replace them?").format(len(files), folder, names),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def install_dependencies(self, kind: str = "qgis") -> None:
        """Install into the profile's private folder what QGIS's Python lacks (``qgis``: ONNX Runtime) or
        what the worker lacks (``worker``: PyTorch …; used when the worker runs QGIS's own Python)."""
        status = deps.check(worker=kind == "worker")
        if kind == "worker":
            names = [deps.WORKER[m] for m in status.worker.missing]
        else:
            names = [deps.IN_QGIS[m] for m in status.missing_qgis]
        if not names:
            return

        def done(ok: bool, output: str) -> None:
            self.install_task = None
            self.log.info(output)
            if ok:
                self.iface.messageBar().pushSuccess(PLUGIN_NAME, self.tr("Packages installed; restart QGIS."))
            else:
                self.iface.messageBar().pushCritical(
                    PLUGIN_NAME, self.tr("Installation failed (details in the log panel). Install by hand: {}")
                    .format(status.worker.install_command() if kind == "worker" else status.install_command()))
            if self.dock is not None:
                self.dock.refresh_dependencies(check_worker=kind == "worker")

        self.install_task = deps.InstallTask.create(names, done)
        QgsApplication.taskManager().addTask(self.install_task)

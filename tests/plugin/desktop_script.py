"""Run by the real QGIS desktop (``qgis.bin --code``) under Xvfb: what a user does, recorded as JSON.

Not a test module (pytest does not collect it): ``test_desktop.py`` starts QGIS with it. Steps, each
started by a timer so QGIS's event loop runs between them as it does for a user:

1. load the raster, open the MTL Explain panel from its action, press Run with the defaults, wait for
   the task; record the layers that arrived and a screenshot;
2. run Processing > MTL Explain > Train as the toolbox does (a background ``QgsProcessingAlgRunnerTask``),
   a few steps; record the progress it reported and the model file;
3. start a long Train the same way, cancel it once it reports progress, record what is left (files,
   worker processes);
4. fill the panel's Train page (raster, auxiliary raster, WGS84 polygons), train 30 steps with a screenshot
   while the curves move, then explain the test blocks from it;
5. open the demo project (when ``MTL_DESKTOP_DEMO`` names one) and record the canvas's extent and the
   layer tree, with a screenshot;
6. record whether torch's stack was ever imported in this process, write the JSON and quit.

In a QGIS without the PyTorch worker (``MTL_QGIS_SIDE_ONLY=1``: the QGIS 3.44 chroot of tools/qgis344.sh) steps
2–4 are left out and the sites are proposed after the panel's run.

Inputs come from environment variables (``MTL_DESKTOP_*``): QGIS passes no arguments to the script.
"""

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

RASTER = os.environ["MTL_DESKTOP_RASTER"]
CONFIG = os.environ["MTL_DESKTOP_CONFIG"]
OUT = Path(os.environ["MTL_DESKTOP_OUT"])
NO_WORKER = os.environ.get("MTL_QGIS_SIDE_ONLY") == "1"
HEAVY = ("torch", "segmentation_models_pytorch", "timm", "torchvision", "triton")
report: dict = {"steps": []}
keep: list = []  # Python references the task manager does not hold


def worker_processes() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"mtl_core.worker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def finish(error: str | None = None) -> None:
    report["error"] = error
    report["heavy_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    (OUT / "desktop.json").write_text(json.dumps(report, indent=2))
    # Close the project first, as File > Exit does: QGIS 3.22 crashes in its teardown when the project
    # still holds layers as the application object goes away.
    QgsProject.instance().clear()
    QgsApplication.instance().exit(0)


def guarded(step):
    def run(*args):
        try:
            step(*args)
        except Exception:  # noqa: BLE001 — any failure ends the session with its traceback in the report
            finish(traceback.format_exc())
    return run


def wait(condition, then, timeout: float = 300.0, started: float | None = None) -> None:
    started = started or time.monotonic()
    if condition():
        QTimer.singleShot(0, then)
    elif time.monotonic() - started > timeout:
        finish(f"timed out waiting in {then.__name__}")
    else:
        QTimer.singleShot(200, lambda: wait(condition, then, timeout, started))


@guarded
def panel_run() -> None:
    plugin = plugins["mtl_explain"]
    from mtl_explain.core import deps  # the installed plugin's own module, as QGIS loaded it

    report["python"] = {"sys_executable": sys.executable, "worker": deps.worker_python(),
                        "tried": deps.find_qgis_python().tried}
    layer = iface.addRasterLayer(RASTER, "raleigh_vnir")
    iface.setActiveLayer(layer)
    report["panel_visible_at_start"] = plugin.dock.isVisible()
    if not plugin.dock.isVisible():
        plugin.actions[0].trigger()  # the panel's toolbar / menu action, as a user clicks it
    dock = plugin.dock.run_page
    dock.out_dir.setFilePath(str(OUT / "panel"))
    report["panel_visible"] = plugin.dock.isVisible()
    report["default_model"] = dock.model_file.filePath()
    report["run_enabled"] = dock.run_button.isEnabled()
    window = iface.mainWindow()
    report["window"] = [window.width(), window.height()]
    # The footer (Run, progress) must be on screen without scrolling the panel.
    report["footer_visible"] = all(not w.visibleRegion().isEmpty() for w in (dock.run_button, dock.progress))
    window.grab().save(str(OUT / "panel_before.png"))
    report["started"] = time.monotonic()
    dock.run_button.click()
    report["steps"].append("run clicked")
    # A screenshot during the run: at the first progress report the main thread grabs the window while the
    # task's thread waits (at most 10 s) for it, so the picture shows the run mid-way.
    grabbed = threading.Event()

    def grab_during(progress: float) -> None:
        if not grabbed.is_set():
            report["progress_during"] = round(progress, 1)
            report["cancel_enabled_during"] = dock.cancel_button.isEnabled()
            window.grab().save(str(OUT / "panel_during.png"))
            grabbed.set()

    def hold(_progress: float) -> None:
        grabbed.wait(10)

    plugin.task.progressChanged.connect(grab_during, Qt.ConnectionType.QueuedConnection)
    plugin.task.progressChanged.connect(hold, Qt.ConnectionType.DirectConnection)
    wait(lambda: plugin.task is None, panel_done)


@guarded
def panel_done() -> None:
    from mtl_explain.core.layers import KEY_PROPERTY, run_groups

    plugin = plugins["mtl_explain"]
    report["panel_seconds"] = round(time.monotonic() - report.pop("started"), 2)
    report["status"] = plugin.dock.run_page.status_label.text()
    groups = run_groups()
    report["layers"] = {n.layer().customProperty(KEY_PROPERTY): n.layer().renderer().type()
                        for g in groups for n in g.findLayers()}
    canvas = iface.mapCanvas()  # the canvas renders in the background: let it draw the new layers first
    canvas.refresh()
    canvas.waitWhileRendering()
    QApplication.processEvents()
    iface.mainWindow().grab().save(str(OUT / "panel.png"))
    report["steps"].append("panel done")
    if NO_WORKER:  # a QGIS without the PyTorch worker (tools/qgis344.sh): the steps that train are left out
        QTimer.singleShot(0, lambda: propose_sites(open_demo))
    else:
        QTimer.singleShot(0, train_short)


def start_train(steps: int, out: Path, on_progress):
    alg = QgsApplication.processingRegistry().createAlgorithmById("mtl_explain:train")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(on_progress)
    params = {"CONFIG": CONFIG, "STEPS": steps, "ENCODER_DEPTH": 3, "BATCH_SIZE": 4, "DEVICE": 1, "OUTPUT": str(out)}
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    ended: list[bool] = []
    task.executed.connect(lambda ok, _results: ended.append(ok))
    keep.extend([alg, context, feedback, task])
    QgsApplication.taskManager().addTask(task)
    return task, feedback, ended


@guarded
def train_short() -> None:
    progress: list[float] = []
    out = OUT / "short.mtl.safetensors"
    _task, _feedback, ended = start_train(3, out, progress.append)

    def done() -> None:
        report["train"] = {"ok": ended[0], "max_progress": max(progress, default=0.0), "file": out.is_file()}
        report["steps"].append("train done")
        QTimer.singleShot(0, train_cancel)

    wait(lambda: bool(ended), guarded(done))


@guarded
def train_cancel() -> None:
    progress: list[float] = []
    out = OUT / "cancelled.mtl.safetensors"
    task, _feedback, ended = start_train(5000, out, progress.append)

    def cancel() -> None:
        report["workers_while_training"] = len(worker_processes())
        task.cancel()

    def done() -> None:
        time.sleep(1.0)
        left = sorted(p.name for p in OUT.iterdir() if p.name.startswith((".cancelled", "cancelled")))
        report["cancel"] = {"ok": ended[0], "max_progress": max(progress, default=0.0), "left": left,
                            "workers_after": worker_processes()}
        report["steps"].append("cancel done")
        QTimer.singleShot(0, train_page)

    wait(lambda: bool(progress) and progress[-1] > 0, guarded(cancel))
    wait(lambda: bool(ended), guarded(done), timeout=600)


@guarded
def train_page() -> None:
    """The panel's Train page as a user fills it: the crop's VNIR in, its SWIR as a modality, polygons with a text
    class field in WGS84; 30 steps; a screenshot while the curves move; then 'Explain the test blocks'."""
    plugin = plugins["mtl_explain"]
    crop = Path(CONFIG).parent
    vnir = iface.addRasterLayer(str(crop / "raleigh_vnir.tif"), "crop vnir")
    swir = iface.addRasterLayer(str(crop / "raleigh_swir.tif"), "crop swir")
    # Added through the project, not iface.addVectorLayer: QGIS would stop on its modal "which datum transform?"
    # dialog (WGS 84 onto NAD83(HARN) has several), which a user answers with a click and a script cannot.
    polygons = QgsVectorLayer(os.environ["MTL_DESKTOP_POLYGONS"], "land cover polygons", "ogr")
    QgsProject.instance().addMapLayer(polygons)
    dock, page = plugin.dock, plugin.dock.train_page
    dock.pages.setCurrentWidget(page)
    page.input_layer.setLayer(vnir)
    page.add_aux(name="swir", layer=swir)
    page.labels_layer.setLayer(polygons)
    page.set_budget(30, "steps")
    page.device_combo.setCurrentIndex(page.device_combo.findData("cpu"))
    out = OUT / "page" / "trained.mtl.safetensors"
    out.parent.mkdir()
    page.out_file.setFilePath(str(out))
    dock.run_page.out_dir.setFilePath(str(OUT / "page_runs"))
    dock.run_page.device_combo.setCurrentIndex(dock.run_page.device_combo.findData("cpu"))
    shot = {}

    def during() -> bool:
        if not shot and page.curves.points() > 40:
            iface.mainWindow().grab().save(str(OUT / "train_page_during.png"))
            shot["points"] = page.curves.points()
        return plugin.train_task is None

    def trained() -> None:
        report["train_page"] = {
            "points_during": shot.get("points", 0), "points": page.curves.points(), "model": out.is_file(),
            "dataset": out.with_name("trained.dataset.yaml").is_file(),
            "selected": dock.run_page.model_file.filePath() == str(out),
            "results": [page.results_table.item(0, c).text() for c in range(page.results_table.columnCount())]
            if page.results_table.rowCount() else [], "status": page.status_label.text()}
        iface.mainWindow().grab().save(str(OUT / "train_page.png"))
        page.explain_button.click()
        wait(lambda: plugin.task is None, guarded(explained))

    def explained() -> None:
        from mtl_explain.core.layers import KEY_PROPERTY, run_groups

        groups = run_groups()
        report["train_page"]["explained"] = sorted(n.layer().customProperty(KEY_PROPERTY)
                                                   for n in groups[0].findLayers()) if groups else []
        report["steps"].append("train page done")
        QTimer.singleShot(0, lambda: propose_sites(open_demo))

    def start() -> None:
        page.train_button.click()
        wait(during, guarded(trained))

    wait(lambda: page.train_button.isEnabled(), guarded(start))


def propose_sites(then) -> None:
    """Where to label next: "Propose sites to label" after the last run, as a user clicks it; then ``then``."""
    dock = plugins["mtl_explain"].dock
    run_page = dock.run_page
    dock.pages.setCurrentWidget(run_page)
    report["sites"] = {"enabled": run_page.sites_button.isEnabled()}
    run_page.sites_count.setValue(6)
    run_page.sites_button.click()

    def sites_added() -> None:
        from mtl_explain.core.layers import KEY_PROPERTY, run_groups

        group = run_groups()[0]
        layers = [n.layer() for n in group.findLayers() if n.layer().customProperty(KEY_PROPERTY) == "sites"]
        if layers:
            layer = layers[0]
            iface.setActiveLayer(layer)
            iface.mapCanvas().setExtent(layer.extent().buffered(layer.extent().width() * 0.3))
            iface.mapCanvas().refresh()
            report["sites"].update(count=layer.featureCount(), renderer=layer.renderer().type(),
                                   labels=layer.labelsEnabled(), first_in_group=group.children()[0].layer() == layer,
                                   editable=layer.startEditing(), fields=layer.fields().names())
            layer.rollBack()
        QTimer.singleShot(3000, guarded(sites_shot))

    def sites_shot() -> None:
        iface.mainWindow().grab().save(str(OUT / "sites.png"))
        report["steps"].append("sites done")
        QTimer.singleShot(0, then)

    wait(lambda: plugins["mtl_explain"].sites_task is None, guarded(sites_added))


@guarded
def open_demo() -> None:
    """Open the demo project as a user does (Project > Open) and record what the canvas shows."""
    demo = os.environ.get("MTL_DESKTOP_DEMO")
    if not demo:
        finish()
        return
    iface.addProject(demo)

    def look() -> None:
        canvas = iface.mapCanvas()
        extent = canvas.extent()
        tree = QgsProject.instance().layerTreeRoot().children()
        report["demo"] = {"extent": [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()],
                          "crs": canvas.mapSettings().destinationCrs().authid(),
                          "top": tree[0].name(), "bottom": tree[-1].name(),
                          "layers": len(QgsProject.instance().mapLayers()),
                          "panel_input": plugins["mtl_explain"].dock.run_page.layer_combo.currentLayer().name()}
        iface.mainWindow().grab().save(str(OUT / "demo.png"))
        finish()

    QTimer.singleShot(3000, guarded(look))


iface.mainWindow().setGeometry(0, 0, 1366, 768)  # a 1366 x 768 laptop screen (Xvfb has no window manager)
QTimer.singleShot(1000, panel_run)

"""Every key the plugin keeps in QGIS's settings or on project items, named once."""

#: QgsSettings: the worker process's Python interpreter ("" or absent: QGIS's own, found from its prefix)
WORKER_PYTHON = "mtl_explain/worker_python"
#: QgsSettings: the model files used last, newest first
RECENT_MODELS = "mtl_explain/recent_models"
#: custom properties of a run's layer-tree group and layers: the run's folder, its report, a layer's product key
RUN_DIR = "mtl_explain/run_dir"
REPORT = "mtl_explain/report"
PRODUCT = "mtl_explain/product"
#: QgsSettings: QGIS's interface language (read to load a translation)
USER_LOCALE = "locale/userLocale"

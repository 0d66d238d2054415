"""The plugin's one logger, routed to QGIS's log panel under the plugin's tag."""

from __future__ import annotations

import logging

from qgis.core import Qgis, QgsMessageLog

from .paths import PLUGIN_NAME

LOGGER_NAME = "mtl_explain"

_LEVELS = (
    (logging.ERROR, Qgis.MessageLevel.Critical),
    (logging.WARNING, Qgis.MessageLevel.Warning),
    (logging.INFO, Qgis.MessageLevel.Info),
    (logging.NOTSET, Qgis.MessageLevel.Info),
)


class QgsMessageLogHandler(logging.Handler):
    """Write log records to ``QgsMessageLog`` under the tag ``MTL Explain`` (thread-safe in QGIS)."""

    mtl_explain = True  # marker that survives a plugin reload (a reloaded class is a different object)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = next(q for py, q in _LEVELS if record.levelno >= py)
            QgsMessageLog.logMessage(self.format(record), PLUGIN_NAME, level, notifyUser=False)
        except Exception:  # a log handler must never raise
            self.handleError(record)


def get_logger() -> logging.Logger:
    """The plugin logger; mtl_core's own logger (``mtl_core``) is routed to the same panel."""
    log = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "mtl_explain", False) for h in log.handlers):
        handler = QgsMessageLogHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        core = logging.getLogger("mtl_core")
        core.addHandler(handler)
        core.setLevel(logging.INFO)
        log.propagate = core.propagate = False
    return log


def remove_handlers() -> None:
    """Detach the handlers (called on unload, so reloading the plugin does not log twice)."""
    for name in (LOGGER_NAME, "mtl_core"):
        log = logging.getLogger(name)
        for h in [h for h in log.handlers if getattr(h, "mtl_explain", False)]:
            log.removeHandler(h)
        log.propagate = True

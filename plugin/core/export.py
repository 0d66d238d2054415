"""Exporting a run's layers as GeoTIFF or Cloud Optimized GeoTIFF, plus its HTML report (blocking; use a task)."""

from __future__ import annotations

import shutil
from pathlib import Path

from mtl_core.io.fileio import atomic_path
from qgis.core import QgsTask

from .logger import get_logger

log = get_logger()


def existing_targets(sources: dict[str, str], folder: str | Path, report: str | Path | None = None) -> list[Path]:
    """The files an export into ``folder`` would replace (rasters, their styles, the report)."""
    folder = Path(folder)
    names = [f"{Path(src).stem}{ext}" for src in sources.values() for ext in (".tif", ".qml")]
    names += [Path(report).name] if report else []
    return [folder / n for n in names if (folder / n).exists()]


def export_rasters(sources: dict[str, str], folder: str | Path, cog: bool = False,
                   report: str | Path | None = None) -> list[Path]:
    """Copy product rasters into ``folder`` as GeoTIFF (or COG), each with its ``.qml`` style sidecar when the
    run has one, and the report beside them.

    Args:
        sources: product key -> raster path.
        folder: destination folder (created if missing).
        cog: write Cloud Optimized GeoTIFFs (GDAL's COG driver) instead of tiled GeoTIFFs.
        report: HTML report to copy along, if any.

    Returns:
        The files written.

    Raises:
        OSError: the folder cannot be created or written.
        RuntimeError: GDAL could not translate a raster (its message says why).
    """
    from osgeo import gdal

    gdal.UseExceptions()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, src in sources.items():
        dst = folder / f"{Path(src).stem}.tif"
        with atomic_path(dst) as tmp:  # a failed copy leaves no half-written raster under the final name
            if cog:
                gdal.Translate(str(tmp), src, format="COG", creationOptions=["COMPRESS=DEFLATE"])
            else:
                gdal.Translate(str(tmp), src, format="GTiff",
                               creationOptions=["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"])
        written.append(dst)
        style = Path(src).with_suffix(".qml")
        if style.exists():  # the run's style travels with the raster, so QGIS opens the copy styled
            shutil.copyfile(style, dst.with_suffix(".qml"))
            written.append(dst.with_suffix(".qml"))
        log.info("exported %s to %s", key, dst)
    if report and Path(report).exists():
        dst = folder / Path(report).name
        shutil.copyfile(report, dst)
        written.append(dst)
    return written


class ExportTask(QgsTask):
    """Export a run's rasters in the background (paths only; no layers are touched)."""

    def __init__(self, sources: dict[str, str], folder: str, cog: bool, report: str | None, on_finished=None) -> None:
        super().__init__("MTL Explain: export explanation rasters", QgsTask.Flag.CanCancel)
        self.sources, self.folder, self.cog, self.report = sources, folder, cog, report
        self.on_finished = on_finished
        self.written: list[Path] = []
        self.error: str | None = None

    def run(self) -> bool:
        """Worker thread: translate each raster; never raise."""
        try:
            for i, (key, src) in enumerate(self.sources.items()):
                if self.isCanceled():
                    return False
                self.written += export_rasters({key: src}, self.folder, self.cog)
                self.setProgress(100.0 * (i + 1) / max(1, len(self.sources)))
            if self.report:
                self.written += export_rasters({}, self.folder, self.cog, self.report)
            return True
        except (OSError, RuntimeError) as exc:
            self.error = f"export to {self.folder!r} failed: {exc}; choose a folder you can write to"
            return False

    def finished(self, ok: bool) -> None:
        """Main thread: report the ending."""
        if self.on_finished is not None:
            self.on_finished(ok, self)

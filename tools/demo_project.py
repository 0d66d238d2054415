"""Write the demo QGIS project: the input raster and every output of ``mtl explain``, styled by the plugin.

Run by ``make demo`` after the explanation: ``demo_project.py MODEL RASTER FOLDER`` writes ``FOLDER/demo.qgz``
with the run's layers in one styled group (the plugin's own styling code, ``plugin/core/styling.py``) above
the input raster, and the scene's extent saved as the project's view, so it opens on the scene.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def find_outputs(folder: Path, stem: str, spec) -> dict[str, str]:
    """The outputs present in ``folder`` for input ``stem``, by product key (file names from the engine's registry)."""
    from mtl_core.engine.products import all_layers

    found = {}
    for key, layer in all_layers(spec).items():
        path = folder / f"{stem}_{layer.suffix}.tif"
        if path.exists():
            found[key] = str(path)
    return found


def main(argv: list[str] | None = None) -> int:
    """Build and save the project; returns the process exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="model file used for the prediction")
    p.add_argument("raster", type=Path, help="input raster")
    p.add_argument("folder", type=Path, help="folder holding the outputs; demo.qgz is written there")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from qgis.core import (
        QgsApplication,
        QgsContrastEnhancement,
        QgsMultiBandColorRenderer,
        QgsProject,
        QgsRasterLayer,
        QgsReferencedRectangle,
    )

    app = QgsApplication([], False)
    app.initQgis()
    from plugin.core.layers import add_run_layers
    from plugin.core.model_info import read_spec
    from plugin.core.runner import RunOutcome
    from mtl_core.io.styles import rgb_bands

    spec = read_spec(args.model)
    outputs = find_outputs(args.folder, args.raster.stem, spec)
    if not outputs:
        sys.stderr.write(f"demo_project: no outputs of {args.raster.name} in {args.folder}; run mtl explain (or "
                         "mtl predict) first\n")
        return 1
    project = QgsProject.instance()
    project.setFileName(str(args.folder / "demo.qgz"))
    project.setTitle(f"MTL Explain demo — {spec.name}")
    report = args.folder / f"{args.raster.stem}_report.html"
    outcome = RunOutcome(outputs=outputs, run_dir=str(args.folder), spec=spec.to_dict(),
                         report=str(report) if report.exists() else None)
    add_run_layers(outcome, args.raster.stem, project)
    source = QgsRasterLayer(str(args.raster.resolve()), f"{args.raster.stem} (input)", "gdal")
    if source.isValid() and source.bandCount() >= 3:
        names = [b.name for b in spec.input_bands]
        r, g, b = rgb_bands(names) if len(names) == source.bandCount() else (3, 2, 1)
        renderer = QgsMultiBandColorRenderer(source.dataProvider(), r, g, b)
        for band, setter in ((r, renderer.setRedContrastEnhancement), (g, renderer.setGreenContrastEnhancement),
                             (b, renderer.setBlueContrastEnhancement)):
            ce = QgsContrastEnhancement(source.dataProvider().dataType(band))
            ce.setContrastEnhancementAlgorithm(
                QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
            lo, hi = source.dataProvider().cumulativeCut(band, 0.02, 0.98, source.extent(), 250000)
            ce.setMinimumValue(lo)
            ce.setMaximumValue(hi)
            setter(ce)
        source.setRenderer(renderer)
    project.addMapLayer(source, False)
    project.layerTreeRoot().addLayer(source)  # at the bottom: the outputs above it stay visible
    project.setCrs(source.crs())
    project.viewSettings().setDefaultViewExtent(QgsReferencedRectangle(source.extent(), source.crs()))
    if not project.write():
        sys.stderr.write(f"demo_project: cannot write {project.fileName()}: {project.error()}\n")
        return 1
    sys.stdout.write(f"QGIS project written: {project.fileName()} ({len(outputs)} outputs + input)\n")
    project.clear()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())

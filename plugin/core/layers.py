"""Putting a finished run into the project: one layer group per run, each product styled (main thread only)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer

from . import settings
from .logger import get_logger
from .runner import RunOutcome
from .styling import apply_style, title

log = get_logger()

#: Custom layer properties that tie a layer to its run (used by the export action).
RUN_PROPERTY = settings.RUN_DIR
KEY_PROPERTY = settings.PRODUCT


def group_name(input_name: str, spec: dict, project: QgsProject | None = None, when=None) -> str:
    """``<input> — <model name> (HH:MM:SS)``: the name of a run's layer group, unique in the project
    (``when``: the time in the name, default now)."""
    import datetime

    when = when or datetime.datetime.now()
    base = f"{input_name or 'input'} — {spec.get('name', 'model')} ({when:%H:%M:%S})"
    taken = {g.name() for g in (project or QgsProject.instance()).layerTreeRoot().findGroups(True)}
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base} #{n}"
    return name


def add_run_layers(outcome: RunOutcome, input_name: str, project: QgsProject | None = None) -> QgsLayerTreeGroup:
    """Load every output of a run, styled, into a new group at the top of the layer tree; each raster gets
    its style as a ``.qml`` sidecar too.

    Args:
        outcome: the finished run.
        input_name: the input layer's name (names the group).
        project: target project (default: the current one).

    Returns:
        The new layer group.
    """
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.insertGroup(0, group_name(input_name, outcome.spec, project))
    from mtl_core.engine.products import group_rank
    from mtl_core.spec import ModelSpec

    rank = group_rank(ModelSpec.from_dict(outcome.spec))
    model = outcome.spec.get("name", "model")
    for key in sorted(outcome.outputs, key=lambda k: (rank.get(k, 99), k)):
        path = outcome.outputs[key]
        # the model in the name too: a layer dragged out of its group or exported still says which model made it
        layer = QgsRasterLayer(path, f"{title(key, outcome.spec)} [{model}]", "gdal")
        if not layer.isValid():
            log.warning("output %s (%s) cannot be opened as a raster layer; skipped", key, path)
            continue
        apply_style(layer, key, outcome.spec)  # and its <name>.qml beside the file
        layer.setCustomProperty(RUN_PROPERTY, outcome.run_dir)
        layer.setCustomProperty(KEY_PROPERTY, key)
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    if outcome.report:
        group.setCustomProperty(settings.REPORT, outcome.report)
    group.setCustomProperty(RUN_PROPERTY, outcome.run_dir)
    return group


def is_run_output(layer) -> bool:
    """Whether a layer is one of the products a run added (not an input of the user's)."""
    return bool(layer.customProperty(KEY_PROPERTY))


def run_layers(group: QgsLayerTreeGroup) -> dict[str, QgsRasterLayer]:
    """The product layers of a run's group, by product key."""
    out = {}
    for node in group.findLayers():
        layer = node.layer()
        key = layer.customProperty(KEY_PROPERTY) if layer else None
        if key:
            out[str(key)] = layer
    return out


def run_groups(project: QgsProject | None = None) -> list[QgsLayerTreeGroup]:
    """Every run group in the project (top first)."""
    project = project or QgsProject.instance()
    return [g for g in project.layerTreeRoot().findGroups(True) if g.customProperty(RUN_PROPERTY)]


def report_of(group: QgsLayerTreeGroup) -> Path | None:
    """The HTML report of a run, when the run wrote one."""
    value = group.customProperty(settings.REPORT)
    return Path(value) if value and Path(value).exists() else None


def load_sidecar_style(layer) -> None:
    """Give a file layer the ``<name>.qml`` written beside its file (a GeoPackage's too), when there is one."""
    style = Path(layer.source().split("|")[0]).with_suffix(".qml")
    if style.exists():
        layer.loadNamedStyle(str(style))
        layer.triggerRepaint()


def add_sites_layer(path: str, run_dir: str | None, title_text: str, project: QgsProject | None = None):
    """Load a GeoPackage of proposed sites, styled from its ``.qml`` beside it, at the top of its run's group (or
    of the layer tree when the group is gone); editable like any layer. Returns the layer, or None."""
    from qgis.core import QgsVectorLayer

    project = project or QgsProject.instance()
    layer = QgsVectorLayer(f"{path}|layername=sites", title_text, "ogr")
    if not layer.isValid():
        log.warning("the sites file %s cannot be opened as a vector layer", path)
        return None
    load_sidecar_style(layer)
    layer.setCustomProperty(KEY_PROPERTY, "sites")
    project.addMapLayer(layer, False)
    group = next((g for g in run_groups(project) if g.customProperty(RUN_PROPERTY) == run_dir), None)
    (group or project.layerTreeRoot()).insertLayer(0, layer)
    return layer

"""What the panel and Processing offer for a run: the products a user can tick, and which vector layers
can serve as an area-of-interest mask. A run itself is a :class:`mtl_core.jobs.Job` (plain values only:
the task runs in a worker thread and must never see a layer, the project or a widget).
"""

from __future__ import annotations


def tickable_products() -> list[tuple[str, str, bool]]:
    """(name, label, ticked by default) of the products a user can tick, in display order, from the engine's
    registry (the products that need ground truth come with an explain run)."""
    from mtl_core.engine.products import REGISTRY

    return [(p.name, p.label, p.default) for p in REGISTRY if p.tickable]


def ogr_mask_path(source: str, provider: str, subset: str = "", selected: int = 0) -> str | None:
    """The file the engine can use as a polygon mask for a vector layer, or None when it cannot.

    The engine rasterises every feature of the file's first layer, so only a plain file-based OGR layer
    (no filter, no selection, first layer of its file) qualifies; otherwise only its extent is used.
    """
    if provider != "ogr" or subset or selected:
        return None
    path, _, options = source.partition("|")
    if not path:
        return None
    from osgeo import ogr

    ds = ogr.Open(path)
    if ds is None or ds.GetLayerCount() == 0:
        return None
    name = dict(o.split("=", 1) for o in options.split("|") if "=" in o).get("layername")
    if name is not None and name != ds.GetLayer(0).GetName():
        return None
    return path

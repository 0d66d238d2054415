"""What the panel shows about a model before a run: its summary, and how a raster's bands map to its inputs.

Reads only the model file's JSON spec (no torch) and the raster's band descriptions (GDAL metadata),
so it is cheap enough for the main thread.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from mtl_core.metrics import held_out_caveats
from mtl_core.spec import held_out_score, reconstructs


@dataclass
class BandMapping:
    """The raster band (1-based, 0 = none) feeding each model input band, with the problems found."""

    model_bands: list[str]
    raster_bands: list[str]
    mapping: list[int]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    by_name: bool = False
    manual: bool = False  # the user chose the bands in the panel

    @property
    def ok(self) -> bool:
        return not self.errors


def read_spec(path: str | Path):
    """The model's spec (``mtl_core.spec.ModelSpec``) from a ``.safetensors`` or ``.onnx`` model file;
    raises ``ModelFileError`` with the reason."""
    from mtl_core.engine.runtime import read_spec as _read

    return _read(path)


def model_bands(spec) -> list[str]:
    """``modality/band`` names of the model's inputs, in order."""
    return [f"{m.name}/{b.name}" for m in spec.inputs for b in m.bands]


def raster_band_names(path: str | Path) -> list[str]:
    """Band descriptions of a raster (empty strings where none), read from GDAL metadata only."""
    from osgeo import gdal

    gdal.UseExceptions()
    ds = gdal.Open(str(path))
    return [ds.GetRasterBand(i).GetDescription() for i in range(1, ds.RasterCount + 1)]


def default_mapping(spec, raster_bands: list[str]) -> BandMapping:
    """Map model bands to raster bands: by band description when every name is found, else in order."""
    from mtl_core.engine.inputs import bands_by_description

    names = [b.name for b in spec.input_bands]
    result = BandMapping(model_bands(spec), raster_bands, [0] * len(names))
    found = bands_by_description(names, raster_bands)
    if found is not None:
        result.mapping, result.by_name = found, True
    elif len(raster_bands) >= len(names):
        result.mapping = list(range(1, len(names) + 1))
    else:
        result.mapping = [i + 1 if i < len(raster_bands) else 0 for i in range(len(names))]
    return validate(spec, result)


def validate(spec, mapping: BandMapping) -> BandMapping:
    """Fill ``errors`` and ``warnings`` of a mapping (called again whenever the user edits it)."""
    mapping.errors, mapping.warnings = [], []
    n_model, n_raster = len(mapping.model_bands), len(mapping.raster_bands)
    if n_raster < n_model:
        mapping.errors.append(
            f"The layer has {n_raster} band(s) but the model expects {n_model}, in this order: "
            f"{', '.join(mapping.model_bands)}. Choose a raster with these bands (QGIS: Raster > Miscellaneous > "
            "Build Virtual Raster, 'Place each input file into a separate band')."
        )
        return mapping
    missing = [mapping.model_bands[i] for i, b in enumerate(mapping.mapping) if not 1 <= b <= n_raster]
    if missing:
        mapping.errors.append(f"No layer band is chosen for model band(s) {', '.join(missing)}.")
    used = [b for b in mapping.mapping if b]
    if len(set(used)) != len(used):
        mapping.warnings.append("The same layer band feeds several model bands; check the band mapping.")
    if not (mapping.by_name or mapping.manual) and n_raster != n_model:
        mapping.warnings.append(
            f"The layer has {n_raster} bands and the model {n_model}; bands were matched in order because the "
            "band descriptions do not name the model's bands. Check the mapping."
        )
    return mapping


def summary_html(spec) -> str:
    """Model summary for the panel: task, classes with colours, expected bands, auxiliary modalities."""
    e = html.escape
    parts = [f"<b>{e(spec.name)}</b><br>Task: {e(spec.task)} ({e(spec.variant)})"]
    parts.append("Input bands: " + ", ".join(e(b) for b in model_bands(spec)))
    parts.append(f"Reconstructs: {e(reconstructs(spec))}")
    if spec.task == "regression" and spec.target:
        parts.append(f"Target: {e(spec.target.name)} [{e(spec.target.units)}]")
    else:
        rows = "".join(
            f"<tr><td style='background-color:{e(c.color)}'>&nbsp;&nbsp;&nbsp;&nbsp;</td>"
            f"<td>{c.value}</td><td>{e(c.name)}</td></tr>" for c in spec.classes
        )
        parts.append(f"Classes:<table cellspacing='2'>{rows}</table>")
    score = held_out_score(spec)
    if score is not None:
        caveats = held_out_caveats(spec.training)
        parts.append(f"Held-out {e(score[0])}: {score[1]:.3f}" + "".join(
            f"<br><span style='color:#8a5a00'>Note: {e(c)}.</span>" for c in caveats))
    return "<br>".join(parts)

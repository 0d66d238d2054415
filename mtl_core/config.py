"""Dataset configuration files (YAML or TOML): which rasters hold the inputs, auxiliary targets and labels.

A configuration looks like this (paths are relative to the configuration file)::

    name: Raleigh NC, Landsat 7 (2000)
    inputs:                    # modalities the network reads, in this order
      optical:
        path: vnir.tif
        bands: [1, 2, 3, 4]    # 1-based; default: every band
        names: [blue, green, red, nir]   # default: band descriptions, else b1, b2, ...
        units: DN
    aux:                       # modalities the network reconstructs (mtl) or fuses (multimodal)
      swir: {path: swir.tif, bands: [1, 2], names: [swir1, swir2], units: DN}
    labels:
      path: landcover.tif
      task: segmentation       # segmentation | classification | regression
      classes:                 # class value -> name and colour (not for regression)
        1: {name: developed, color: "#e31a1c"}
      ignore: [0]              # values that mean "unlabelled", besides the raster's nodata; any other value
                               # missing from classes is refused, with its pixel count
    split: {block_size: 64, val_fraction: 0.15, test_fraction: 0.2, seed: 0}
    patch_size: 64
    extent: [xmin, ymin, xmax, ymax]   # optional: train only on labels inside it (the input raster's CRS)

Labels may instead be polygons of a vector layer (GeoPackage, Shapefile, GeoJSON…), rasterised on the input
grid at run time (:mod:`mtl_core.io.labels`); pixels no polygon covers are unlabelled::

    labels:
      path: polygons.gpkg
      field: class             # text (class names) or whole numbers (class codes); numbers for regression
      layer: parcels           # only for a file holding several layers
      task: segmentation
      classes:                 # optional: field value -> colour or {name, color}; default every value found
        forest: "#1a9641"
      ignore: [unknown]        # optional: field values to leave unlabelled
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, RasterNotFoundError
from .spec import TASKS, ClassInfo


@dataclass
class SourceConfig:
    """One modality: a raster, the bands to use and their names."""

    name: str
    path: Path
    bands: list[int] | None = None
    names: list[str] | None = None
    units: str = ""


@dataclass
class LabelConfig:
    """The main-task reference: a raster band, or polygons of a vector layer with a class field (``field_name``;
    the configuration's ``field``).

    For polygons ``classes`` stays empty until the layer is read (:class:`mtl_core.training.data.Scene`);
    ``declared`` holds the configuration's optional field value -> colour or {name, color} table.
    """

    path: Path
    task: str
    band: int = 1
    classes: list[ClassInfo] = field(default_factory=list)
    ignore: list = field(default_factory=list)
    name: str = "target"
    units: str = ""
    field_name: str | None = None
    layer: str | None = None
    declared: dict | None = None

    @property
    def is_vector(self) -> bool:
        return self.field_name is not None


@dataclass
class SplitConfig:
    """Spatial block split: the grid is cut into square blocks, each assigned to one split."""

    block_size: int = 64
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class DatasetConfig:
    name: str
    inputs: list[SourceConfig]
    aux: list[SourceConfig]
    labels: LabelConfig
    split: SplitConfig = field(default_factory=SplitConfig)
    patch_size: int = 64
    path: Path | None = None
    extent: list[float] | None = None


def _require(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where} needs a {key!r} entry")
    return d[key]


def _path(value: Any, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.path must be a file path, got {value!r}")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise RasterNotFoundError(f"{where}.path {str(p)!r} does not exist; fix the path in the configuration")
    return p


def _number(value: Any, kind: type, where: str) -> Any:
    """``value`` as ``kind`` (int or float), or a ConfigError naming the key and the value."""
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{where} must be a {'whole ' if kind is int else ''}number, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a {'whole ' if kind is int else ''}number, got {value!r}") from None


def _int_list(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ConfigError(f"{where} must be a non-empty list of band numbers starting at 1, got {value!r}")
    return value


def _sources(d: Any, base: Path, where: str) -> list[SourceConfig]:
    if d is None:
        return []
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must map modality names to sources, got {type(d).__name__}")
    out = []
    for name, s in d.items():
        w = f"{where}.{name}"
        if not isinstance(s, dict):
            raise ConfigError(f"{w} must be a mapping with at least 'path'")
        bands = _int_list(s.get("bands"), f"{w}.bands")
        names = s.get("names")
        if names is not None and (not isinstance(names, list) or (bands and len(names) != len(bands))):
            raise ConfigError(f"{w}.names must be a list with one name per band, got {names!r}")
        out.append(SourceConfig(str(name), _path(s.get("path"), base, w), bands, names, str(s.get("units", ""))))
    return out


def _classes(d: Any) -> list[ClassInfo]:
    if not isinstance(d, dict) or len(d) < 2:
        raise ConfigError("labels.classes must map at least two class values to {name, color}")
    out = []
    for value, c in d.items():
        try:
            v = int(value)
        except ValueError as exc:
            raise ConfigError(f"labels.classes key {value!r} is not an integer class value") from exc
        if not isinstance(c, dict) or "name" not in c:
            raise ConfigError(f"labels.classes.{value} must be a mapping with a 'name' (and a 'color')")
        out.append(ClassInfo(v, str(c["name"]), str(c.get("color", "#808080"))))
    return sorted(out, key=lambda c: c.value)


def parse_config(raw: dict, base: Path, path: Path | None = None) -> DatasetConfig:
    """Validate a configuration mapping; relative paths are resolved against ``base``."""
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a mapping at the top level")
    inputs = _sources(_require(raw, "inputs", "the configuration"), base, "inputs")
    if not inputs:
        raise ConfigError("'inputs' must name at least one modality")
    aux = _sources(raw.get("aux"), base, "aux")
    names = [s.name for s in inputs + aux]
    if len(set(names)) != len(names):
        raise ConfigError(f"modality names must be unique across inputs and aux, got {names}")
    lab = _require(raw, "labels", "the configuration")
    if not isinstance(lab, dict):
        raise ConfigError("'labels' must be a mapping with 'path' and 'task'")
    task = _require(lab, "task", "labels")
    if task not in TASKS:
        raise ConfigError(f"labels.task {task!r} is unknown; choose one of {', '.join(TASKS)}")
    labels = _labels(lab, task, base)
    s = raw.get("split", {}) or {}
    if not isinstance(s, dict):
        raise ConfigError(f"split must be a mapping (block_size, val_fraction, test_fraction, seed), got {s!r}")
    split = SplitConfig(
        block_size=_number(s.get("block_size", 64), int, "split.block_size"),
        val_fraction=_number(s.get("val_fraction", 0.15), float, "split.val_fraction"),
        test_fraction=_number(s.get("test_fraction", 0.2), float, "split.test_fraction"),
        seed=_number(s.get("seed", 0), int, "split.seed"),
    )
    val, test = split.val_fraction, split.test_fraction
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise ConfigError(
            f"split fractions val={split.val_fraction} test={split.test_fraction} must be in (0, 1) and sum below 1"
        )
    patch = _number(raw.get("patch_size", 64), int, "patch_size")
    if patch < 16 or patch % 16:
        raise ConfigError(f"patch_size {patch} must be a multiple of 16 and at least 16")
    if split.block_size < patch:
        raise ConfigError(f"split.block_size {split.block_size} must be at least patch_size {patch}")
    name = str(raw.get("name", path.stem if path else "dataset"))
    return DatasetConfig(name, inputs, aux, labels, split, patch, path, _extent(raw.get("extent")))


def _labels(lab: dict, task: str, base: Path) -> LabelConfig:
    """The ``labels`` entry: a raster band, or a vector layer's polygons with a class field."""
    from .io.labels import is_vector

    path = _path(lab.get("path"), base, "labels")
    name, units = str(lab.get("name", "target")), str(lab.get("units", ""))
    ignore = lab.get("ignore", []) or []
    if not isinstance(ignore, list):
        raise ConfigError(f"labels.ignore must be a list of values, got {ignore!r}")
    vector = is_vector(path)
    if "field" in lab or vector:
        fld = lab.get("field")
        if not vector:
            raise ConfigError(f"labels.field is set but {path.name!r} is not a vector layer; give polygons "
                              "(GeoPackage, Shapefile, GeoJSON…) or drop 'field' and give the raster's 'band'")
        if not isinstance(fld, str) or not fld:
            raise ConfigError(f"labels {path.name!r} is a vector layer: name its class field (labels.field)")
        declared = lab.get("classes")
        if declared is not None and (task == "regression" or not isinstance(declared, dict)):
            raise ConfigError("labels.classes of polygon labels must map field values to a colour or {name, color} "
                              "(and is not used for regression)")
        layer = lab.get("layer")
        return LabelConfig(path, task, 1, [], [str(v) for v in ignore], name, units, fld,
                           str(layer) if layer is not None else None, declared)
    return LabelConfig(
        path=path, task=task, band=_number(lab.get("band", 1), int, "labels.band"),
        classes=[] if task == "regression" else _classes(lab.get("classes")),
        ignore=[_number(v, float, "labels.ignore") for v in ignore], name=name, units=units)


def _extent(value: Any) -> list[float] | None:
    """The optional training extent (xmin, ymin, xmax, ymax) in the first input raster's CRS."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise ConfigError(f"extent must be [xmin, ymin, xmax, ymax] in the input raster's CRS, got {value!r}")
    xmin, ymin, xmax, ymax = (_number(v, float, "extent") for v in value)
    if not (xmin < xmax and ymin < ymax):
        raise ConfigError(f"extent {value!r} is empty: give [xmin, ymin, xmax, ymax] with xmin < xmax, ymin < ymax")
    return [xmin, ymin, xmax, ymax]


def config_to_dict(cfg: DatasetConfig) -> dict[str, Any]:
    """A configuration as the mapping :func:`parse_config` reads, with absolute paths: what a trained model's
    ``<model>.dataset.yaml`` holds, so ``mtl train`` reproduces the run."""
    def source(s: SourceConfig) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(s.path.resolve())}
        out.update({k: v for k, v in (("bands", s.bands), ("names", s.names)) if v})
        return {**out, "units": s.units} if s.units else out

    lab = cfg.labels
    labels: dict[str, Any] = {"path": str(lab.path.resolve()), "task": lab.task}
    if lab.is_vector:
        labels["field"] = lab.field_name
        labels.update({k: v for k, v in (("layer", lab.layer), ("classes", lab.declared)) if v})
    else:
        labels["band"] = lab.band
        if lab.classes:
            labels["classes"] = {c.value: {"name": c.name, "color": c.color} for c in lab.classes}
    if lab.ignore:
        labels["ignore"] = list(lab.ignore)
    if lab.task == "regression":
        labels.update(name=lab.name, units=lab.units)
    out = {"name": cfg.name, "inputs": {s.name: source(s) for s in cfg.inputs},
           "aux": {s.name: source(s) for s in cfg.aux}, "labels": labels,
           "split": dataclasses.asdict(cfg.split), "patch_size": cfg.patch_size}
    if cfg.extent:
        out["extent"] = list(cfg.extent)
    return out


def load_config(path: str | Path) -> DatasetConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) dataset configuration."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"configuration file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"configuration {path.name!r} must end in .yaml, .yml or .toml")
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as exc:  # tomllib and yaml each raise their own error types
        raise ConfigError(f"configuration {path.name!r} cannot be parsed: {exc}") from exc
    return parse_config(raw, path.parent.resolve(), path)

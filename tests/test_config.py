"""Dataset configuration validation: every mistake names the entry and the fix."""

import pytest
import yaml

from mtl_core.config import load_config
from mtl_core.errors import ConfigError, RasterNotFoundError


@pytest.fixture
def raw(crop_dir):
    return yaml.safe_load((crop_dir / "crop.yaml").read_text())


def test_the_sample_configuration_loads(sample_config):
    cfg = load_config(sample_config)
    assert [s.name for s in cfg.inputs] == ["optical"]
    assert [s.name for s in cfg.aux] == ["swir"]
    assert [c.name for c in cfg.labels.classes][:2] == ["developed", "agriculture"]
    assert cfg.labels.task == "segmentation"


def test_toml_is_accepted(crop_dir):
    p = crop_dir / "case.toml"
    p.write_text(
        'name = "toml"\n'
        '[inputs.optical]\npath = "raleigh_vnir.tif"\nbands = [1, 2, 3, 4]\n'
        '[labels]\npath = "raleigh_landcover.tif"\ntask = "segmentation"\n'
        '[labels.classes.1]\nname = "a"\ncolor = "#ff0000"\n[labels.classes.5]\nname = "b"\n'
    )
    cfg = load_config(p)
    assert cfg.name == "toml" and [c.value for c in cfg.labels.classes] == [1, 5]


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda r: r.pop("inputs"), ConfigError, "needs a 'inputs' entry"),
        (lambda r: r["labels"].update(task="detection"), ConfigError, "labels.task 'detection' is unknown"),
        (lambda r: r["inputs"]["optical"].update(path="missing.tif"), RasterNotFoundError, "inputs.optical.path"),
        (lambda r: r["inputs"]["optical"].update(bands=[0, 1]), ConfigError, "band numbers starting at 1"),
        (lambda r: r["inputs"]["optical"].update(names=["a"]), ConfigError, "one name per band"),
        (lambda r: r["labels"].update(classes={1: {"name": "only"}}), ConfigError, "at least two class values"),
        (lambda r: r.update(split={"val_fraction": 0.6, "test_fraction": 0.5}), ConfigError, "sum below 1"),
        (lambda r: r.update(patch_size=50), ConfigError, "multiple of 16"),
        (lambda r: r["aux"].update(optical=r["aux"]["swir"]), ConfigError, "must be unique"),
    ],
)
def test_invalid_configurations_are_refused(crop_dir, raw, mutate, error, message):
    mutate(raw)
    p = crop_dir / "case.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(error, match=message):
        load_config(p)


def test_unparsable_and_unknown_files(crop_dir, tmp_path):
    bad = crop_dir / "bad.yaml"
    bad.write_text("inputs: [unclosed")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_config(bad)
    with pytest.raises(ConfigError, match="must end in"):
        load_config(crop_dir / "raleigh_vnir.tif")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")

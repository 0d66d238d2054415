"""Property-based tests of every parser of outside input: model files (safetensors header and JSON spec, the spec
text ONNX metadata carries), dataset configurations and job JSON.

The property: any input gives either a valid object or one of our error types (:class:`~mtl_core.errors.MtlError`,
whose messages name the fix), never another exception, and within a bounded time per input (hypothesis's
deadline). The budget is small in ``make test`` (seconds); ``tools/fuzz.py`` runs the same properties with a large
one (``MTL_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mtl_core.config import load_config, parse_config
from mtl_core.errors import MtlError
from mtl_core.jobs import Job
from mtl_core.modelfile import parse_spec, read_spec
from mtl_core.spec import FORMAT, ModelSpec

EXAMPLES = int(os.environ.get("MTL_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=30)


def _spec_like(draw_values) -> st.SearchStrategy:
    """Dicts shaped like a spec (the right keys, often the right types), so the checks past the first are reached."""
    band = st.fixed_dictionaries({"name": st.text(max_size=8) | json_scalars, "mean": json_scalars,
                                  "std": json_scalars})
    modality = st.fixed_dictionaries({"name": st.sampled_from(["optical", "swir", "../x", ""]) | json_scalars,
                                      "bands": st.lists(band, max_size=3) | json_values})
    return st.fixed_dictionaries({
        "format": st.just(FORMAT), "format_version": st.sampled_from([1, 2, "1", None]),
        "name": st.text(max_size=10), "task": st.sampled_from(["segmentation", "classification", "regression", "x"]),
        "variant": st.sampled_from(["mtl", "unimodal", "multimodal", 3]),
        "inputs": st.lists(modality, max_size=2) | json_values, "aux": st.lists(modality, max_size=2),
        "classes": st.lists(st.fixed_dictionaries({"value": json_scalars, "name": json_scalars,
                                                   "color": st.sampled_from(["#ff0000", "red", 5])}), max_size=3),
        "architecture": st.fixed_dictionaries({}, optional={"encoder_depth": json_scalars, "arch": json_scalars}),
        "patch_size": json_scalars, "input_nodata": json_scalars, "training": json_values,
    })


def _safetensors(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def _spec_or_refused(path: Path) -> None:
    try:
        spec = read_spec(path)
    except MtlError:
        return
    assert isinstance(spec, ModelSpec)


@FUZZ
@given(data=st.binary(max_size=256))
def test_any_bytes_are_a_model_or_refused(tmp_path, data):
    path = tmp_path / "m.mtl.safetensors"
    path.write_bytes(data)
    _spec_or_refused(path)


@FUZZ
@given(header=json_values, spec=json_values | _spec_like(json_values))
def test_any_safetensors_header_and_spec_are_a_model_or_refused(tmp_path, header, spec):
    path = tmp_path / "m.mtl.safetensors"
    if isinstance(header, dict):
        header = {**header, "__metadata__": {"mtl_spec": json.dumps(spec)}}
    path.write_bytes(_safetensors(json.dumps(header).encode()))
    _spec_or_refused(path)


@FUZZ
@given(text=st.text(max_size=200) | json_values.map(json.dumps) | _spec_like(json_values).map(json.dumps))
def test_any_spec_text_is_a_spec_or_refused(text):
    """The spec text a safetensors header or an ONNX file's metadata carries."""
    try:
        spec = parse_spec(text, Path("m.onnx"))
    except MtlError:
        return
    spec.validate()


def _config_like() -> st.SearchStrategy:
    source = st.fixed_dictionaries({"path": st.sampled_from(["raster.tif", "missing.tif", "", 5])},
                                   optional={"bands": json_values | st.lists(st.integers(-1, 5), max_size=3),
                                             "names": json_values, "units": json_scalars})
    labels = st.fixed_dictionaries(
        {"path": st.sampled_from(["raster.tif", "missing.tif", None])},
        optional={"task": st.sampled_from(["segmentation", "regression", "classification", "x", 1]),
                  "field": json_scalars, "band": json_scalars, "ignore": json_values,
                  "classes": json_values | st.dictionaries(st.integers(0, 3).map(str), json_values, max_size=3)})
    return st.fixed_dictionaries(
        {"inputs": st.dictionaries(st.text(max_size=5), source, max_size=2) | json_values},
        optional={"aux": st.dictionaries(st.text(max_size=5), source, max_size=2) | json_values,
                  "labels": labels | json_values, "split": json_values, "patch_size": json_scalars,
                  "extent": json_values | st.lists(json_scalars, min_size=4, max_size=4), "name": json_values})


@pytest.fixture(scope="module")
def config_folder(tmp_path_factory) -> Path:
    """A folder with one small real raster the fuzzed configurations may name."""
    from osgeo import gdal, osr

    folder = tmp_path_factory.mktemp("fuzz")
    ds = gdal.GetDriverByName("GTiff").Create(str(folder / "raster.tif"), 8, 8, 2, gdal.GDT_Byte)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((0, 10, 0, 80, 0, -10))
    ds = None
    return folder


@FUZZ
@given(raw=json_values | _config_like())
def test_any_configuration_mapping_is_a_configuration_or_refused(config_folder, raw):
    try:
        parse_config(raw, config_folder)
    except MtlError:
        pass


@FUZZ
@given(text=st.text(max_size=300) | _config_like().map(lambda d: json.dumps(d)), suffix=st.sampled_from(
    [".yaml", ".toml"]))
def test_any_configuration_file_is_a_configuration_or_refused(config_folder, text, suffix):
    path = config_folder / f"c{suffix}"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except MtlError:
        pass


def _job_like() -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {"kind": st.sampled_from(["predict", "explain", "train", "export", "x"]) | json_scalars},
        optional={k: json_values for k in ("model", "raster", "out", "bands", "extent", "products", "aux_truth",
                                           "aux_bands", "tile", "chunk", "threads", "train", "dataset", "labels",
                                           "cog", "workers", "split", "labels_band")})


@FUZZ
@given(text=st.text(max_size=200) | json_values.map(json.dumps) | _job_like().map(json.dumps))
@example('{"kind": "predict", "aux_truth": [null]}')  # found by tools/fuzz.py: AttributeError
@example('{"kind": "predict", "products": null}')  # found by tools/fuzz.py: TypeError
def test_any_job_json_is_a_job_or_refused(text):
    try:
        job = Job.from_json(text)
    except MtlError:
        return
    assert Job.from_json(job.to_json()) == job  # what is accepted travels to the worker unchanged


def test_a_job_field_of_the_wrong_type_is_refused_by_name():
    """Once accepted, "512" for a tile size would be a TypeError deep in the engine, far from the job's text."""
    with pytest.raises(MtlError, match=re.escape("'tile' must be int | None")):
        Job.from_json('{"kind": "predict", "tile": "512"}')

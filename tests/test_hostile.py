"""Hostile and unusual input: no user file is overwritten, no script reaches a report, signals leave nothing."""

import csv
import hashlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mtl_core.cli import main
from mtl_core.errors import ModelFileError, OutputError, RasterError
from mtl_core.engine import explain
from mtl_core.io.fileio import run_lock
from mtl_core.engine import PredictOptions, predict
from mtl_core.modelfile import load_model, save_model

pytestmark = pytest.mark.slow


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_existing_file_is_never_replaced_unasked(trained_model, crop_copy, capsys):
    model = str(trained_model[0])
    raster = crop_copy / "raleigh_vnir.tif"
    users = crop_copy / "raleigh_vnir_classes.tif"  # the user's own file, with the name predict would write
    shutil.copyfile(crop_copy / "raleigh_landcover.tif", users)
    before = _digest(users)
    assert main(["-q", "predict", model, str(raster), "--out", str(crop_copy), "--tile", "64"]) == 2
    err = capsys.readouterr().err
    assert "raleigh_vnir_classes.tif' already exists" in err and "pass --overwrite" in err
    assert _digest(users) == before
    assert not list(crop_copy.glob(".*"))  # no temporary left behind
    assert main(["-q", "predict", model, str(raster), "--out", str(crop_copy), "--tile", "64", "--overwrite"]) == 0
    assert _digest(users) != before


def test_an_input_is_never_an_output_even_with_overwrite(trained_model, crop_copy):
    labels = crop_copy / "raleigh_vnir_classes.tif"  # labels named like the class map explain writes
    shutil.copyfile(crop_copy / "raleigh_landcover.tif", labels)
    before = _digest(labels)
    opts = PredictOptions(tile=64, aux_truth={"swir": str(crop_copy / "raleigh_swir.tif")}, labels=str(labels),
                          overwrite=True)
    with pytest.raises(OutputError, match="would replace the input .*raleigh_vnir_classes.tif"):
        explain(trained_model[0], crop_copy / "raleigh_vnir.tif", crop_copy, opts)
    assert _digest(labels) == before


def test_a_second_run_into_the_same_outputs_is_refused_while_the_first_runs(trained_model, crop_dir, tmp_path):
    with run_lock(tmp_path, "raleigh_vnir"):
        with pytest.raises(OutputError, match=r"another run \(process \d+\) is writing 'raleigh_vnir' outputs"):
            predict(trained_model[0], crop_dir / "raleigh_vnir.tif", tmp_path, PredictOptions(tile=64))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".raleigh_vnir.mtl-lock").write_text("999999999")  # left by a process that died
    predict(trained_model[0], crop_dir / "raleigh_vnir.tif", tmp_path, PredictOptions(tile=64))
    assert not (tmp_path / ".raleigh_vnir.mtl-lock").exists()


def test_hostile_class_names_reach_the_report_as_text(trained_model, crop_dir, tmp_path):
    spec, model = load_model(trained_model[0])
    spec.classes[0].name = "<svg onload=alert(1)>"
    spec.classes[1].name = '=HYPERLINK("http://example.invalid","x")'
    hostile = tmp_path / "hostile.mtl.safetensors"
    save_model(hostile, spec, model.state_dict())
    out = tmp_path / "out"
    out.mkdir()
    result = explain(hostile, crop_dir / "raleigh_vnir.tif", out, PredictOptions(
        tile=64, aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")},
        labels=str(crop_dir / "raleigh_landcover.tif")))
    page = result.report["html"].read_text()
    assert "<svg" not in page and "&lt;svg onload=alert(1)&gt;" in page
    for key in ("per_class_csv", "detectors_csv"):
        cells = [c for row in csv.reader(result.report[key].open()) for c in row]
        assert not [c for c in cells if c.startswith("=")], key
    assert "'=HYPERLINK" in result.report["per_class_csv"].read_text()


def test_sigterm_mid_run_exits_143_and_leaves_nothing(trained_model, sample_config, tmp_path):
    raster = sample_config.parent / "raleigh_vnir.tif"
    proc = subprocess.Popen([sys.executable, "-m", "mtl_core.cli", "-q", "predict", str(trained_model[0]),
                             str(raster), "--out", str(tmp_path), "--tile", "32", "--overlap", "0", "--batch", "1",
                             "--backend", "torch"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".raleigh_vnir_classes.*")):  # the run is writing its temporaries
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert "terminated (SIGTERM); nothing was written" in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["predict", "M", "R", "--out", "O", "--batch", "0"], "--batch: '0' is not a whole number of at least 1"),
    (["predict", "M", "R", "--out", "O", "--threads", "-1"], "--threads: '-1' is not a whole number"),
    (["train", "C", "--out", "M", "--steps", "-3"], "--steps: '-3' is not a whole number of at least 1"),
    (["train", "C", "--out", "M", "--batch-size", "0"], "--batch-size: '0'"),
    (["train", "C", "--out", "M", "--eval-every", "0"], "--eval-every: '0'"),
    (["train", "C", "--out", "M", "--lr", "-1"], "--lr: '-1' is not a number above 0"),
    (["export", "M", "--onnx", "X.onnx", "--opset", "5"], "not an ONNX opset between 11 and 20"),
])
def test_bad_option_values_are_one_line_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_command_line_mistakes_name_their_fix(trained_model, crop_dir, tmp_path, capsys):
    model, config = str(trained_model[0]), str(crop_dir / "crop.yaml")
    cases = [
        (["train", config, "--out", str(tmp_path / "m.mtl.safetensors"), "--aux-weight", "swir=abc"],
         "must look like NAME=WEIGHT with a number"),
        (["train", config, "--out", str(tmp_path / "m.mtl.safetensors"), "--aux-weight", "sar=2"],
         "(--aux-weight) name ['sar'], which the configuration does not have; its auxiliary modalities are ['swir']"),
        (["train", config, "--out", str(tmp_path)], "is a folder; give the model file to write"),
        (["export", model, "--onnx", str(tmp_path)], "is a folder; give the file to write"),
        (["evaluate", str(tmp_path / "m.onnx"), config], "is an ONNX export, which 'mtl evaluate' cannot use"),
        (["predict", model, str(crop_dir / "raleigh_vnir.tif"), "--out", config], "is a file, not a folder"),
    ]
    for args, message in cases:
        assert main(["-q", *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert list(tmp_path.iterdir()) == []


def test_a_missing_output_folder_is_created_and_removed_again_if_the_run_fails(trained_model, crop_dir, tmp_path):
    out = tmp_path / "new" / "deeper"
    assert main(["-q", "predict", str(trained_model[0]), str(crop_dir / "raleigh_vnir.tif"), "--out", str(out),
                 "--tile", "64"]) == 0
    assert (out / "raleigh_vnir_classes.tif").is_file()
    failed = tmp_path / "failed" / "run"
    assert main(["-q", "predict", str(trained_model[0]), str(crop_dir / "raleigh_swir.tif"), "--out",
                 str(failed)]) == 2  # two bands for a four-band model
    assert not (tmp_path / "failed").exists()
    onnx = tmp_path / "exports" / "m.onnx"  # the file options (export --onnx, train --out) alike
    assert main(["-q", "export", str(trained_model[0]), "--onnx", str(onnx)]) == 0 and onnx.is_file()
    assert main(["-q", "train", str(crop_dir / "crop.yaml"), "--out", str(tmp_path / "models" / "m.mtl.safetensors"),
                 "--aux-weight", "unknown=2"]) == 2
    assert not (tmp_path / "models").exists()


def test_nan_model_outputs_are_refused_and_write_nothing(trained_model, crop_dir, tmp_path):
    import torch

    spec, model = load_model(trained_model[0])
    with torch.no_grad():
        model.encoder.conv1.weight[:] = float("nan")  # a damaged file: every output NaN
    broken = tmp_path / "nan.mtl.safetensors"
    save_model(broken, spec, model.state_dict())
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ModelFileError, match="answered NaN or infinity for every pixel.*damaged"):
        predict(broken, crop_dir / "raleigh_vnir.tif", out, PredictOptions(tile=64))
    assert list(out.iterdir()) == []


def test_south_up_raster_and_extents_inside_it(trained_model, crop_dir, tmp_path):
    from osgeo import gdal

    src = gdal.Open(str(crop_dir / "raleigh_vnir.tif"))
    x0, dx, _, y0, _, dy = src.GetGeoTransform()
    flipped = tmp_path / "south_up.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(flipped), src.RasterXSize, src.RasterYSize, src.RasterCount,
                                              src.GetRasterBand(1).DataType)
    ds.SetProjection(src.GetProjection())
    ds.SetGeoTransform((x0, dx, 0, y0 + dy * src.RasterYSize, 0, -dy))  # origin at the bottom, y grows up
    for b in range(1, src.RasterCount + 1):
        band = src.GetRasterBand(b)
        ds.GetRasterBand(b).WriteArray(band.ReadAsArray()[::-1])
        ds.GetRasterBand(b).SetDescription(band.GetDescription())
        if band.GetNoDataValue() is not None:
            ds.GetRasterBand(b).SetNoDataValue(band.GetNoDataValue())
    ds = None
    inside = (x0 + 20 * dx, y0 + 120 * dy, x0 + 100 * dx, y0 + 30 * dy)  # xmin ymin xmax ymax
    out = tmp_path / "out"
    out.mkdir()
    r = predict(trained_model[0], flipped, out, PredictOptions(tile=64, extent=inside, products=("main",)))
    assert (r.grid.width, r.grid.height) == (80, 90)
    with pytest.raises(RasterError, match="is not finite"):
        predict(trained_model[0], flipped, out, PredictOptions(extent=(float("-inf"), 0, float("inf"), 1)))


def test_a_mask_that_misses_the_raster_is_refused(trained_model, crop_dir, tmp_path):
    from .conftest import write_polygon

    aoi = write_polygon(tmp_path / "far.gpkg", crop_dir / "raleigh_vnir.tif",
                        [(5000, 5000), (5100, 5000), (5100, 5100), (5000, 5100)])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RasterError, match="does not overlap the input raster.*draw the area of interest over it"):
        predict(trained_model[0], crop_dir / "raleigh_vnir.tif", out, PredictOptions(mask=str(aoi)))
    assert list(out.iterdir()) == []


def _tmpfs(folder: Path, options: str):
    """A tmpfs mounted on ``folder`` for the test (mounting needs root: skipped otherwise)."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"mounting a tmpfs needs root: {done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    """A 512 KiB file system: outputs stop fitting part-way, as on a full disk."""
    yield from _tmpfs(tmp_path / "small", "size=512k")


@pytest.fixture
def read_only(tmp_path):
    """A read-only file system (refuses writes even to root, unlike a chmod 555 folder)."""
    yield from _tmpfs(tmp_path / "ro", "ro,size=64k")


@pytest.mark.parametrize("command, out, message", [
    (["predict", "{model}", "{crop}/raleigh_vnir.tif"], "{ro}", "output folder '{ro}' is read-only"),
    (["explain", "{model}", "{crop}/raleigh_vnir.tif"], "{ro}/sub", "cannot create the output folder '{ro}/sub'"),
    (["train", "{config}"], "{ro}/m.mtl.safetensors", "folder '{ro}' is read-only"),
    (["export", "{safetensors}", "--onnx"], "{ro}/m.onnx", "output folder '{ro}' is read-only"),
])
def test_a_read_only_output_folder_is_refused_before_any_work(read_only, trained_model, crop_dir, sample_config,
                                                              command, out, message, capsys):
    names = dict(model=Path(__file__).resolve().parent.parent / "resources" / "default_model.mtl.onnx",
                 crop=crop_dir, ro=read_only, config=sample_config, safetensors=trained_model[0])
    args = [a.format(**names) for a in command]
    if args[0] != "export":
        args.append("--out")
    start = time.monotonic()
    code = main(["-q", *args, out.format(**names)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message.format(**names) in err[0], err
    assert time.monotonic() - start < 60  # refused up front (train would take minutes), not after the work
    assert list(read_only.iterdir()) == []


@pytest.mark.parametrize("command", [["predict", "--float32", "--products", "main", "confidence", "entropy",
                                      "probabilities"],
                                     ["explain", "--cog", "--aux", "swir={crop}/raleigh_swir.tif", "--labels",
                                      "{crop}/raleigh_landcover.tif"]])
def test_a_full_disk_is_one_clear_error_and_leaves_nothing(full_disk, crop_dir, command, capsys):
    model = str(Path(__file__).resolve().parent.parent / "resources" / "default_model.mtl.onnx")
    args = [a.format(crop=crop_dir) for a in command]
    code = main(["-q", args[0], model, str(crop_dir / "raleigh_vnir.tif"), *args[1:], "--out", str(full_disk / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert any("failed" in line and "free some space or choose another output folder" in line for line in err), err
    assert not any("Traceback" in line or "Exception ignored" in line for line in err), err
    assert list(full_disk.rglob("*")) == []  # not a temporary, not a sidecar, not the folder it created


@pytest.mark.parametrize("damage", ["vrt_source_missing", "truncated_tiff"])
def test_an_unreadable_raster_is_one_clear_error(crop_dir, tmp_path, damage, capsys):
    from osgeo import gdal

    if damage == "vrt_source_missing":
        source = tmp_path / "source.tif"
        shutil.copy(crop_dir / "raleigh_vnir.tif", source)
        raster = tmp_path / "mosaic.vrt"
        gdal.BuildVRT(str(raster), [str(source)]).FlushCache()
        source.unlink()
    else:
        raster = tmp_path / "cut.tif"
        gdal.Translate(str(tmp_path / "whole.tif"), str(crop_dir / "raleigh_vnir.tif"), creationOptions=["TILED=YES"])
        raster.write_bytes((tmp_path / "whole.tif").read_bytes()[:60_000])
    model = str(Path(__file__).resolve().parent.parent / "resources" / "default_model.mtl.onnx")
    code = main(["-q", "predict", model, str(raster), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "cannot read band" in err and "gdalinfo -checksum" in err, err
    assert not (tmp_path / "out").exists()


def _onnx(tmp_path, name: str, spec_json: str, input_name: str = "input", main_channels: int = 3, divisor="8",
          pooled: bool = False) -> Path:
    """A small ONNX graph with our metadata: ``main`` is the first ``main_channels`` input channels (halved in size
    when ``pooled``), ``aux_swir`` the first two; the tests make the names, shapes or metadata wrong."""
    import onnx
    from onnx import TensorProto, helper

    dims = ["batch", 4, "height", "width"]
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    ends_main = helper.make_tensor("ends_main", TensorProto.INT64, [1], [main_channels])
    ends_aux = helper.make_tensor("ends_aux", TensorProto.INT64, [1], [2])
    nodes = [helper.make_node("Slice", [input_name, "starts", "ends_main", "axes"], ["sliced" if pooled else "main"]),
             helper.make_node("Slice", [input_name, "starts", "ends_aux", "axes"], ["aux_swir"])]
    if pooled:
        nodes.append(helper.make_node("AveragePool", ["sliced"], ["main"], kernel_shape=[2, 2], strides=[2, 2]))
    graph = helper.make_graph(
        nodes, "hostile", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("main", TensorProto.FLOAT, ["batch", main_channels, "h", "w"]),
         helper.make_tensor_value_info("aux_swir", TensorProto.FLOAT, ["batch", 2, "height", "width"])],
        [starts, axes, ends_main, ends_aux])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (("mtl_spec", spec_json), ("mtl_divisor", divisor)):
        model.metadata_props.add(key=key, value=value)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case, kwargs, message", [
    ("input_name", {"input_name": "x"}, "takes x .*one input named 'input' of shape \\(batch, 4, height, width\\)"),
    ("static_channels", {"main_channels": 4}, "output 'main' has 4 channels but its spec promises 3"),
    ("divisor_text", {"divisor": "abc"}, "divisor 'abc' is not a whole number between 1 and 1024"),
    ("divisor_zero", {"divisor": "0"}, "divisor '0' is not a whole number"),
    ("runtime_shape", {"pooled": True}, r"output 'main' has shape \(\d+, 3, 16, 16\) .* promises \(\d+, 3, 32, 32\)"),
])
def test_a_foreign_or_damaged_onnx_file_is_one_clear_error(crop_dir, tmp_path, case, kwargs, message):
    import json

    from .conftest import make_spec

    spec = json.dumps(make_spec().to_dict())  # 4 bands in, 3 classes, 2-band swir
    model = _onnx(tmp_path, case, spec, **kwargs)
    with pytest.raises(ModelFileError, match=message):
        predict(model, crop_dir / "raleigh_vnir.tif", tmp_path, PredictOptions(tile=32, overlap=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{case}.onnx"]


def test_a_full_disk_while_writing_a_model_file_is_one_clear_error(full_disk, trained_model, crop_dir, capsys):
    model = str(trained_model[0])  # megabytes of weights: more than the 512 KiB file system holds
    for args in (["export", model, "--onnx", str(full_disk / "m.onnx")],
                 ["train", str(crop_dir / "crop.yaml"), "--steps", "1", "--eval-every", "1", "--encoder-depth", "3",
                  "--out", str(full_disk / "m.mtl.safetensors")]):
        assert main(["-q", *args]) == 2, args
        err = capsys.readouterr().err
        assert "failed" in err and "free some space" in err and "Traceback" not in err, err
        assert list(full_disk.iterdir()) == [], args


@pytest.mark.parametrize("change, command, message", [
    (lambda raw: raw.update(split={"block_size": "big"}), "train",
     "split.block_size must be a whole number, got 'big'"),
    (lambda raw: raw.update(split="half"), "train", "split must be a mapping"),
    (lambda raw: raw.update(patch_size=[64]), "train", "patch_size must be a whole number, got [64]"),
    (lambda raw: raw["inputs"]["optical"].update(bands=[1, 2, 3], names=["blue", "green", "red"]), "evaluate",
     "the configuration's inputs give 3 band(s) (blue, green, red) but the model takes 4"),
])
def test_a_configuration_mistake_is_one_line(trained_model, crop_dir, tmp_path, change, command, message, capsys):
    import yaml

    raw = yaml.safe_load((crop_dir / "crop.yaml").read_text())
    for section in ("inputs", "aux"):
        for source in raw[section].values():
            source["path"] = str(crop_dir / source["path"])
    raw["labels"]["path"] = str(crop_dir / raw["labels"]["path"])
    change(raw)
    config = tmp_path / "changed.yaml"
    config.write_text(yaml.safe_dump(raw))
    args = (["train", str(config), "--steps", "1", "--out", str(tmp_path / "m.mtl.safetensors")] if command == "train"
            else ["evaluate", str(trained_model[0]), str(config)])
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changed.yaml"]


def test_an_input_unlike_the_training_data_is_run_but_said(trained_model, crop_dir, tmp_path):
    """Reflectance x 10000 where the model was trained on DN: the run works, and the result says its outputs are
    likely meaningless, naming the bands (CLI: a warning line; jobs, the panel and Processing: ``warnings``)."""
    from osgeo import gdal

    from mtl_core.jobs import Job, run_job

    src = gdal.Open(str(crop_dir / "raleigh_vnir.tif"))
    scaled = gdal.Translate(str(tmp_path / "reflectance.tif"), src)
    for b in range(1, scaled.RasterCount + 1):
        band = scaled.GetRasterBand(b)
        arr = band.ReadAsArray()
        band.WriteArray(np.where(arr == band.GetNoDataValue(), arr, arr * 40.0))
    scaled = None
    (tmp_path / "plain").mkdir()
    plain = run_job(Job(kind="predict", model=str(trained_model[0]), raster=str(crop_dir / "raleigh_vnir.tif"),
                        out=str(tmp_path / "plain"), products=["main"]))
    assert plain.warnings == []
    (tmp_path / "out").mkdir()
    odd = run_job(Job(kind="predict", model=str(trained_model[0]), raster=str(tmp_path / "reflectance.tif"),
                      out=str(tmp_path / "out"), products=["main"]))
    assert len(odd.warnings) == 1 and "unlike the model's training data" in odd.warnings[0]
    assert all(f"{name} averages" in odd.warnings[0] for name in ("blue", "green", "red", "nir"))
    assert "main" in odd.outputs
    (tmp_path / "explained").mkdir()  # explain says it in its report too
    explained = run_job(Job(kind="explain", model=str(trained_model[0]), raster=str(tmp_path / "reflectance.tif"),
                            out=str(tmp_path / "explained"), labels=str(crop_dir / "raleigh_landcover.tif"),
                            products=["main", "main_error"]))
    assert explained.warnings == odd.warnings
    assert "<b>Warning:</b> the input is unlike" in Path(explained.report).read_text()


# --- third round: the last tracebacks and leftovers -------------------------------------------------------------


def test_a_model_file_nested_too_deep_is_refused_by_info(tmp_path, capsys):
    import json
    import struct

    header = ("[" * 100_000 + "]" * 100_000).encode()
    path = tmp_path / "deep.mtl.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an MTL Explain model file" in err[0], err
    spec_deep = json.dumps({"__metadata__": {"mtl_spec": "[" * 100_000}}).encode()
    path.write_bytes(struct.pack("<Q", len(spec_deep)) + spec_deep)
    assert main(["info", str(path)]) == 2
    assert "is not valid JSON text" in capsys.readouterr().err


def test_an_input_with_no_valid_pixel_is_explained_and_said(trained_model, crop_copy, tmp_path):
    from osgeo import gdal

    raster = crop_copy / "raleigh_vnir.tif"
    ds = gdal.Open(str(raster), gdal.GA_Update)
    for i in range(1, ds.RasterCount + 1):
        ds.GetRasterBand(i).Fill(ds.GetRasterBand(i).GetNoDataValue())
    ds = None
    opts = PredictOptions(aux_truth={"swir": str(crop_copy / "raleigh_swir.tif")},
                          labels=str(crop_copy / "raleigh_landcover.tif"))
    result = explain(trained_model[0], raster, tmp_path, opts)
    assert any("no valid input pixels in the chosen extent" in w for w in result.warnings)
    assert "no valid input pixels in the chosen extent" in result.report["html"].read_text()
    assert result.stats["pixels_labelled"] == 0


def test_a_failing_report_leaves_neither_tables_nor_layers(trained_model, crop_dir, tmp_path, monkeypatch):
    from mtl_core.explain import report

    def full(*args, **kwargs):
        raise OutputError("writing 'x_report.html' failed (No space left on device); free some space")

    monkeypatch.setattr(report, "_thumbnails", full)
    opts = PredictOptions(aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")},
                          labels=str(crop_dir / "raleigh_landcover.tif"))
    with pytest.raises(OutputError, match="No space left on device"):
        explain(trained_model[0], crop_dir / "raleigh_vnir.tif", tmp_path, opts)
    assert list(tmp_path.iterdir()) == []


def test_band_names_and_band_counts_that_disagree_are_one_line(trained_model, crop_copy, capsys):
    import yaml
    from osgeo import gdal

    gdal.Translate(str(crop_copy / "three.tif"), str(crop_copy / "raleigh_swir.tif"), bandList=[1, 2, 1])
    raw = yaml.safe_load((crop_copy / "crop.yaml").read_text())
    raw["aux"]["swir"] = {"path": "three.tif", "names": ["a", "b"]}
    (crop_copy / "names.yaml").write_text(yaml.safe_dump(raw))
    assert main(["-q", "train", str(crop_copy / "names.yaml"), "--steps", "1", "--out",
                 str(crop_copy / "m.mtl.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 name(s) ['a', 'b'] for 3 band(s) [1, 2, 3]" in err[0], err
    gdal.Translate(str(crop_copy / "vnir3.tif"), str(crop_copy / "raleigh_vnir.tif"), bandList=[1, 2, 3])
    raw = yaml.safe_load((crop_copy / "crop.yaml").read_text())
    raw["inputs"]["optical"] = {"path": "vnir3.tif"}
    (crop_copy / "three.yaml").write_text(yaml.safe_dump(raw))
    assert main(["-q", "evaluate", str(trained_model[0]), str(crop_copy / "three.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "inputs give 3 band(s) (blue, green, red) but the model's take 4" in err[-1], err
    assert not (crop_copy / "m.mtl.safetensors").exists()

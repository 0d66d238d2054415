"""Hostile and unusual input: no user file is overwritten, no script reaches a report, signals leave nothing."""

import csv
import hashlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from mtl_core.cli import main
from mtl_core.errors import OutputError
from mtl_core.explain import explain
from mtl_core.fileio import run_lock
from mtl_core.inference import PredictOptions, predict
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

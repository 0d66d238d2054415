"""Jobs and the worker process: one JSON job for every front end; events, errors and cancellation of the worker."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from osgeo import gdal

from mtl_core.errors import ConfigError
from mtl_core.jobs import Job, run_job

from .conftest import write_polygon

from .rasters import read

pytestmark = pytest.mark.slow


def test_a_job_travels_as_json_unchanged():
    job = Job(kind="explain", model="m.onnx", raster="r.tif", out="o", bands=[4, 3, 2, 1], extent=(1, 2, 3, 4),
              mask="aoi.gpkg", products=("main", "aux"), cog=True, aux_truth={"swir": "s.tif"}, labels="l.tif")
    again = Job.from_json(job.to_json())
    assert again == job and again.extent == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"unknown job key\(s\) \['maks'\]"):
        Job.from_dict({"kind": "predict", "maks": "aoi.gpkg"})
    with pytest.raises(ConfigError, match="unknown job kind 'segment'"):
        Job(kind="segment")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Job.from_json("{kind: predict")


def test_explain_job_keeps_the_mask_cog_and_chosen_products(trained_model, crop_dir, tmp_path):
    """Ground truth used to replace the mask by nothing, drop COG and write every product regardless."""
    raster = crop_dir / "raleigh_vnir.tif"
    aoi = write_polygon(tmp_path / "aoi.gpkg", raster, [(0, 0), (90, 0), (90, 70), (0, 70)])
    out = tmp_path / "out"
    out.mkdir()
    job = Job(kind="explain", model=str(trained_model[0]), raster=str(raster), out=str(out), mask=str(aoi),
              cog=True, tile=64, products=["main", "aux"], aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")},
              labels=str(crop_dir / "raleigh_landcover.tif"))
    result = run_job(job)
    assert "confidence" not in result.outputs and "entropy" not in result.outputs
    assert {"main", "aux_swir", "recon_error_swir", "main_error"} <= set(result.outputs)
    for path in result.outputs.values():
        assert gdal.Open(path).GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG", path
    classes = read(result.outputs["main"])
    assert (classes[:66, :86] != 0).mean() > 0.95  # inside the polygon
    assert (classes[74:, :] == 0).all() and (classes[:, 94:] == 0).all()  # outside: nodata, not a bounding box
    error = read(result.outputs["main_error"])
    assert (error[74:, :] == 255).all()
    assert result.report and "entropy" not in json.loads(
        (out / "raleigh_vnir_report.json").read_text())["detectors"]


def _worker(job: Job, **kw) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "mtl_core.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)
    proc.stdin.write(job.to_json())
    proc.stdin.close()
    return proc


def _events(proc: subprocess.Popen) -> list[dict]:
    return [json.loads(line) for line in proc.stdout]


def test_worker_reports_progress_and_the_result_as_json_lines(trained_model, crop_dir, tmp_path):
    job = Job(kind="predict", model=str(trained_model[0]), raster=str(crop_dir / "raleigh_vnir.tif"),
              out=str(tmp_path), tile=64, backend="torch", device="cpu")
    proc = _worker(job)
    events = _events(proc)
    assert proc.wait() == 0, proc.stderr.read()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "result" and "progress" in kinds
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    result = events[-1]["result"]
    assert result["device"] == "cpu" and set(result["outputs"]) >= {"main", "confidence", "entropy", "aux_swir"}
    assert np.isin(read(result["outputs"]["main"]), [0, 1, 2, 3, 4, 5, 6, 7]).all()


def test_worker_error_carries_the_cli_message(trained_model, crop_dir, tmp_path):
    job = Job(kind="predict", model=str(trained_model[0]), raster=str(crop_dir / "raleigh_swir.tif"), out=str(tmp_path))
    proc = _worker(job)
    events = _events(proc)
    assert proc.wait() == 2
    assert events[-1]["event"] == "error" and events[-1]["exit"] == 2
    assert "has 2 band(s) but the model expects 4" in events[-1]["message"]
    assert list(tmp_path.iterdir()) == []


def test_sigterm_cancels_training_and_leaves_no_model_file(crop_dir, tmp_path):
    out = tmp_path / "model.mtl.safetensors"
    job = Job(kind="train", config=str(crop_dir / "crop.yaml"), out=str(out), device="cpu",
              train={"steps": 400, "batch_size": 4, "eval_every": 400, "architecture": {"encoder_depth": 3}})
    proc = _worker(job)
    for line in proc.stdout:  # wait until training really runs
        if json.loads(line)["event"] == "progress":
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    events = _events(proc)
    assert proc.wait(timeout=30) == 143
    assert events[-1]["event"] == "error" and events[-1]["type"] == "CancelledError"
    assert list(tmp_path.iterdir()) == []

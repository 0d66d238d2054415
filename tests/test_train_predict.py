"""End to end on a crop of the real sample: train a few steps, save, reload, predict, check outputs."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from mtl_core.cli import main
from mtl_core.config import load_config
from mtl_core.errors import RasterError
from mtl_core.engine import predict
from mtl_core.modelfile import load_model, save_model
from mtl_core.spec import Architecture
from mtl_core.training.train import TrainOptions, train

pytestmark = pytest.mark.slow
SMALL = Architecture(encoder="resnet18", encoder_depth=3)


@pytest.fixture
def trained(trained_model):
    return trained_model


def test_training_reports_metrics_and_provenance(trained):
    path, result = trained
    assert 0.0 <= result.test["overall_accuracy"] <= 1.0
    assert set(result.test["recon_rmse"]) == {"swir/swir1", "swir/swir2"}
    assert len(result.test["per_class"]) == 7
    training = result.spec.training
    assert training["data"]["blocks"]["test"] >= 1
    assert training["best_step"] in (3, 6)
    assert "test_miou" in training["metrics"]
    assert load_model(path)[0].training["data"]["split"]["block_size"] == 64


@pytest.mark.parametrize("variant, in_channels, aux", [("unimodal", 4, []), ("multimodal", 6, [])])
def test_baselines_train_with_the_same_code(crop_dir, variant, in_channels, aux):
    cfg = load_config(crop_dir / "crop.yaml")
    result = train(cfg, TrainOptions(variant=variant, steps=2, batch_size=2, eval_every=2, architecture=SMALL),
                   progress=False)
    assert result.spec.in_channels == in_channels and result.spec.aux == aux
    assert result.test["recon_rmse"] == {}


def test_prediction_keeps_the_input_georeferencing(trained, crop_dir, tmp_path):
    path, result = trained
    raster = crop_dir / "raleigh_vnir.tif"
    out = predict(path, raster, tmp_path)
    src = gdal.Open(str(raster))
    assert set(out.outputs) == {"main", "confidence", "entropy", "aux_swir"}
    for product, p in out.outputs.items():
        ds = gdal.Open(str(p))
        assert ds.GetGeoTransform() == src.GetGeoTransform(), product
        assert (ds.RasterXSize, ds.RasterYSize) == (src.RasterXSize, src.RasterYSize)
        assert osr.SpatialReference(ds.GetProjection()).IsSame(osr.SpatialReference(src.GetProjection()))
    info = gdal.Info(str(out.outputs["main"]), format="json")["bands"][0]
    assert info["categories"][1] == "developed" and info["colorInterpretation"] == "Palette"
    classes = gdal.Open(str(out.outputs["main"]))
    band = classes.GetRasterBand(1)
    assert band.GetColorTable().GetColorEntry(5)[:3] == (0x1A, 0x96, 0x41)
    values = set(np.unique(band.ReadAsArray())) - {0}
    assert values <= {1, 2, 3, 4, 5, 6, 7}
    swir = gdal.Open(str(out.outputs["aux_swir"]))
    assert swir.RasterCount == 2 and "swir1" in swir.GetRasterBand(1).GetDescription()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    # de-normalised to DN with the spec's statistics: the same weights under a spec whose swir1 mean is 100 DN
    # higher and whose spread is twice as wide must write exactly that reconstruction (whatever a 6-step model's
    # values are)
    spec, model = load_model(path)
    band = spec.aux[0].bands[0]
    mean, band.mean, band.std = band.mean, band.mean + 100.0, band.std * 2.0
    shifted = tmp_path / "shifted" / "shifted.mtl.safetensors"
    shifted.parent.mkdir()
    save_model(shifted, spec, model.state_dict())
    first, s1 = _dn(out.outputs["aux_swir"])
    second, s2 = _dn(predict(shifted, raster, shifted.parent).outputs["aux_swir"])
    valid = ~np.isnan(first)
    assert valid.sum() > 1000 and (np.isnan(second) == ~valid).all()
    np.testing.assert_allclose(second[valid], 2.0 * (first[valid] - mean) + mean + 100.0, atol=2 * s1 + s2 + 1e-3)


def _dn(path) -> tuple[np.ndarray, float]:
    """Band 1 of an output raster in its units (scale and offset applied; nodata as NaN), and its scale."""
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    raw = band.ReadAsArray()
    scale, offset = band.GetScale() or 1.0, band.GetOffset() or 0.0
    values = raw.astype(np.float64) * scale + offset
    values[raw == band.GetNoDataValue()] = np.nan
    return values, scale


def test_input_nodata_is_nodata_in_every_output(trained, crop_copy, tmp_path):
    path, _ = trained
    raster = crop_copy / "raleigh_vnir.tif"
    ds = gdal.Open(str(raster), gdal.GA_Update)
    band = ds.GetRasterBand(2)
    arr = band.ReadAsArray()
    arr[50:60, 20:90] = band.GetNoDataValue()
    band.WriteArray(arr)
    ds = None
    out = predict(path, raster, tmp_path)
    for product, p in out.outputs.items():
        ds = gdal.Open(str(p))
        b = ds.GetRasterBand(1)
        a = b.ReadAsArray()
        assert (a[50:60, 20:90] == b.GetNoDataValue()).all(), product
        assert (a[70:80, 20:90] != b.GetNoDataValue()).any(), product


def test_wrong_band_count_is_refused_with_the_expected_bands(trained, crop_dir, tmp_path):
    path, _ = trained
    with pytest.raises(RasterError, match=r"has 2 band\(s\) but the model expects 4.*optical/blue"):
        predict(path, crop_dir / "raleigh_swir.tif", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_raster_is_a_clear_error(trained, crop_dir, tmp_path):
    path, _ = trained
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict(path, crop_dir / "nope.tif", tmp_path)


def test_read_only_output_folder_is_a_clear_error(trained, crop_dir):
    """Root may write anywhere, so as root the run happens as user 'nobody' in a child process."""
    path, _ = trained
    user = 65534 if os.getuid() == 0 else None
    shared = Path(tempfile.mkdtemp(prefix="mtl-ro-"))  # world-readable, for the unprivileged child
    try:
        shared.chmod(0o755)
        model, raster, ro = shared / path.name, shared / "in.tif", shared / "ro"
        shutil.copy(path, model)
        shutil.copy(crop_dir / "raleigh_vnir.tif", raster)
        for p in (model, raster):
            p.chmod(0o644)
        ro.mkdir(mode=0o555)
        env = {**os.environ, "HOME": str(shared)}
        probe = subprocess.run([sys.executable, "-c", "import mtl_core.engine"], user=user, env=env,
                               cwd=shared, capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"user 'nobody' cannot import the project from here: {probe.stderr[-300:]}")
        code = "import sys; from mtl_core.engine import predict; predict(*sys.argv[1:])"
        done = subprocess.run([sys.executable, "-c", code, str(model), str(raster), str(ro)], user=user, env=env,
                              cwd=shared, capture_output=True, text=True, check=False)
        assert done.returncode != 0
        assert "OutputError" in done.stderr and "is read-only; choose a folder you can write to" in done.stderr
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(shared)


def test_cli_train_info_predict(crop_dir, tmp_path, capsys):
    model = tmp_path / "cli.mtl.safetensors"
    assert main(["-q", "train", str(crop_dir / "crop.yaml"), "--out", str(model), "--steps", "2",
                 "--batch-size", "2", "--eval-every", "2", "--encoder-depth", "3"]) == 0
    assert "miou" in capsys.readouterr().out
    assert main(["info", str(model)]) == 0
    assert "swir [DN]: swir1, swir2" in capsys.readouterr().out
    assert main(["evaluate", str(model), str(crop_dir / "crop.yaml")]) == 0
    assert "overall_accuracy" in capsys.readouterr().out
    assert main(["-q", "predict", str(model), str(crop_dir / "raleigh_vnir.tif"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "raleigh_vnir_classes.tif").exists()
    assert main(["info", str(crop_dir / "raleigh_vnir.tif")]) == 2
    assert "not an MTL Explain model" in capsys.readouterr().err


def test_torchrun_single_process_ddp(crop_dir, tmp_path):
    """The multi-GPU path (DDP under torchrun) runs here as one CPU process."""
    model = tmp_path / "ddp.mtl.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_port=29533",
           "-m", "mtl_core.cli", "-q", "train", str(crop_dir / "crop.yaml"), "--out", str(model),
           "--steps", "2", "--batch-size", "2", "--eval-every", "2", "--encoder-depth", "3", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    spec, _ = load_model(model)
    assert spec.training["world_size"] == 1
    assert Path(model).stat().st_size > 0


@pytest.mark.slow
def test_torchrun_two_cpu_processes_end_with_the_same_weights(crop_dir, tmp_path):
    """DDP with two CPU processes (gloo): each draws its own patches, gradients are averaged, both ranks end in
    step (training gathers both ranks' weights and records the largest difference); rank 0 alone writes."""
    model = tmp_path / "ddp2.mtl.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534",
           "-m", "mtl_core.cli", "-q", "train", str(crop_dir / "crop.yaml"), "--out", str(model),
           "--steps", "3", "--batch-size", "2", "--eval-every", "3", "--encoder-depth", "3", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    spec, _ = load_model(model)
    assert spec.training["world_size"] == 2
    assert spec.training["ranks_weight_spread"] == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp2.dataset.yaml", "ddp2.mtl.safetensors"]


def test_distillation_needs_a_multimodal_teacher_of_the_same_data(crop_dir, trained_model, tmp_path):
    """An mtl model learns from a multimodal teacher's outputs; any other model file is refused with the fix."""
    from mtl_core.config import load_config
    from mtl_core.errors import ConfigError
    from mtl_core.modelfile import read_spec, save_model
    from mtl_core.spec import Architecture
    from mtl_core.training.train import TrainOptions, train

    cfg = load_config(crop_dir / "crop.yaml")
    small = dict(steps=2, batch_size=2, eval_every=2, architecture=Architecture(encoder_depth=3))
    with pytest.raises(ConfigError, match="cannot teach this model: give a multimodal model"):
        train(cfg, TrainOptions(distil_from=str(trained_model[0]), **small), progress=False)
    teacher = train(cfg, TrainOptions(variant="multimodal", **small), progress=False)
    save_model(tmp_path / "mm.mtl.safetensors", teacher.spec, teacher.state_dict)
    seen = []
    student = train(cfg, TrainOptions(distil_from=str(tmp_path / "mm.mtl.safetensors"), **small), progress=False,
                    report=seen.append)
    steps = [r["losses"] for r in seen if r["kind"] == "step"]
    assert len(steps) == 2 and all(s["distil"] > 0 for s in steps)
    assert steps[0]["total"] == pytest.approx(steps[0]["main"] + steps[0]["aux/swir"] + steps[0]["distil"], rel=1e-5)
    save_model(tmp_path / "student.mtl.safetensors", student.spec, student.state_dict)
    options = read_spec(tmp_path / "student.mtl.safetensors").training["options"]
    assert options["distil_from"] == str(tmp_path / "mm.mtl.safetensors")  # the file says how it was trained

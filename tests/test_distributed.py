"""Sharded runs on Dask workers (mtl predict/explain --workers, --scheduler, --vrt): the same outputs as one run, on
the real sample with the bundled model; cancelling leaves nothing; a killed worker's shard is run again."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from mtl_core.engine import PredictOptions, explain, predict
from mtl_core.errors import CancelledError, RasterError

pytest.importorskip("distributed")

MODEL = Path(__file__).resolve().parent.parent / "resources" / "default_model.mtl.onnx"
#: 128 px tiles and 256 px chunks split the 489 px wide sample into two chunks, so two shards.
SMALL = dict(tile=128, chunk=256)


def _sample(sample_config: Path) -> dict[str, Path]:
    folder = sample_config.parent
    return {"vnir": folder / "raleigh_vnir.tif", "swir": folder / "raleigh_swir.tif",
            "labels": folder / "raleigh_landcover.tif"}


def _pixels(path: Path) -> list[np.ndarray]:
    """Every band of a GeoTIFF and of each of its overviews."""
    ds = gdal.Open(str(path))
    out = []
    for i in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(i)
        out += [band.ReadAsArray()] + [band.GetOverview(o).ReadAsArray() for o in range(band.GetOverviewCount())]
    return out


def _assert_same_outputs(single: dict[str, Path], sharded: dict[str, Path]) -> None:
    assert sorted(single) == sorted(sharded)
    for key in single:
        a, b = gdal.Open(str(single[key])), gdal.Open(str(sharded[key]))
        assert a.GetGeoTransform() == b.GetGeoTransform() and a.GetProjection() == b.GetProjection()
        assert [a.GetRasterBand(i).GetScale() for i in range(1, a.RasterCount + 1)] == \
               [b.GetRasterBand(i).GetScale() for i in range(1, b.RasterCount + 1)]
        for x, y in zip(_pixels(single[key]), _pixels(sharded[key]), strict=True):
            assert x.dtype == y.dtype
            if x.dtype.kind == "f":
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, err_msg=key)
            else:
                np.testing.assert_array_equal(x, y, err_msg=key)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_explain_on_two_workers_equals_one_run(sample_config, tmp_path):
    s = _sample(sample_config)
    opts = PredictOptions(**SMALL, aux_truth={"swir": str(s["swir"])}, labels=str(s["labels"]),
                          products=("main", "confidence", "entropy", "aux", "sensitivity"))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = explain(MODEL, s["vnir"], tmp_path / "one", opts)
    seen = []
    two = explain(MODEL, s["vnir"], tmp_path / "two", PredictOptions(**{**opts.__dict__, "workers": 2}),
                  progress=seen.append)
    _assert_same_outputs(one.outputs, two.outputs)
    report = [json.loads(Path(r.report["json"]).read_text()) for r in (one, two)]
    for r in report:
        r.pop("inputs", None)
    assert report[0] == report[1]  # the statistics merged from the shards are the single run's
    # monotone and complete; whether a value between the first and the last arrives depends on how fast the shards
    # are next to the half-second reports (CI's machine finished both within the first one)
    assert seen == sorted(seen) and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)
    assert not [n for n in _leftovers(tmp_path / "two") if "shards" in n or n.startswith(".")]


def test_predict_against_a_running_scheduler(sample_config, tmp_path):
    """A scheduler and two workers started as a user starts them (``dask scheduler``, ``dask worker``)."""
    s = _sample(sample_config)
    dask = Path(sys.executable).with_name("dask")
    file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", file], env=env, stderr=subprocess.DEVNULL)
    workers = None
    try:
        for _ in range(100):
            if file.exists() and file.read_text().strip():
                break
            time.sleep(0.2)
        address = json.loads(file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        workers = subprocess.Popen([dask, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                    "--no-dashboard"], env=env, stderr=subprocess.DEVNULL)
        from distributed import Client

        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
        (tmp_path / "one").mkdir()
        (tmp_path / "many").mkdir()
        one = predict(MODEL, s["vnir"], tmp_path / "one", PredictOptions(**SMALL))
        many = predict(MODEL, s["vnir"], tmp_path / "many", PredictOptions(**SMALL, scheduler=address))
        _assert_same_outputs(one.outputs, many.outputs)
        with pytest.raises(Exception, match="already exist"):  # refused before anything is computed
            predict(MODEL, s["vnir"], tmp_path / "many", PredictOptions(**SMALL, scheduler=address))
    finally:
        for proc in (workers, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(30)


def test_cancelling_a_sharded_run_leaves_nothing(sample_config, tmp_path):
    s = _sample(sample_config)
    seen = []
    with pytest.raises(CancelledError):
        predict(MODEL, s["vnir"], tmp_path, PredictOptions(**SMALL, workers=2, products=("main", "sensitivity")),
                progress=seen.append, cancelled=lambda: bool(seen))
    assert _leftovers(tmp_path) == []


def test_a_killed_worker_s_shard_runs_again_and_the_outputs_are_the_same(sample_config, tmp_path):
    from distributed import Client, LocalCluster

    s = _sample(sample_config)
    opts = PredictOptions(**SMALL, products=("main", "confidence", "sensitivity"))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = predict(MODEL, s["vnir"], tmp_path / "one", opts)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        killed = []

        def kill_one(fraction: float) -> None:
            if not killed:  # as soon as the shards run: one worker process dies (the nanny starts another)
                os.kill(pids[0], signal.SIGKILL)
                killed.append(fraction)

        two = predict(MODEL, s["vnir"], tmp_path / "two",
                      PredictOptions(**{**opts.__dict__, "scheduler": cluster.scheduler_address}), progress=kill_one)
        assert killed[0] < 1 and pids[0] not in client.run(os.getpid).values()  # killed while the shards ran
    _assert_same_outputs(one.outputs, two.outputs)


def test_a_shard_s_input_mistake_is_the_run_s_error(sample_config, tmp_path):
    """A raster whose lower half cannot be read: the shard says which, once (a mistake is not retried)."""
    s = _sample(sample_config)
    broken = tmp_path / "broken.tif"
    gdal.Translate(str(broken), str(s["vnir"]), creationOptions=["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"])
    size = broken.stat().st_size
    with open(broken, "r+b") as f:  # the last tiles' bytes are lost
        f.truncate(size - size // 5)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RasterError, match=r"shard \d of 2"):
        predict(MODEL, broken, out, PredictOptions(**SMALL, workers=2))
    assert _leftovers(out) == []


def test_shards_are_runs_of_consecutive_chunks_covering_the_plan():
    from mtl_core.engine.distributed import SHARDS_PER_WORKER, shard_ranges

    for chunks, workers in [(1, 4), (2, 2), (7, 2), (49, 16), (100, 3)]:
        shards = shard_ranges(chunks, workers)
        assert shards[0][0] == 0 and shards[-1][1] == chunks
        assert all(a < b for a, b in shards) and all(b == c for (_, b), (c, _) in zip(shards, shards[1:]))
        assert len(shards) == min(chunks, SHARDS_PER_WORKER * workers)
        sizes = [b - a for a, b in shards]
        assert max(sizes) - min(sizes) <= 1


def test_scheduler_mistakes_are_one_clear_error_and_leave_nothing(sample_config, tmp_path):
    from mtl_core.errors import ConfigError

    s = _sample(sample_config)
    with pytest.raises(ConfigError, match="not both"):
        predict(MODEL, s["vnir"], tmp_path, PredictOptions(workers=2, scheduler="tcp://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        predict(MODEL, s["vnir"], tmp_path, PredictOptions(scheduler="tcp://127.0.0.1:1"))
    assert _leftovers(tmp_path) == []


def test_patch_classification_is_sharded_along_chunks_of_whole_cells(crop_dir, sample_config, tmp_path):
    from mtl_core.engine.tiling import Plan

    from .test_tasks import _model

    model, spec = _model(crop_dir, tmp_path, "cls", {"task": "classification"}, patch=16)
    plan = Plan.of(spec, 489, 443, 16, None, None, 256, 4)
    assert plan.bounds == [0, 256, 489] and plan.overlap == 0  # 31 x 28 cells: no overview, 256 px chunks
    covered = [x for span in plan.spans for x, _ in span]
    assert covered == list(range(0, 489, 16))  # every cell once, none straddling two chunks
    assert Plan.of(spec, 8000, 8000, 16, None, None, 2048, 4).bounds[1] == 2048  # 500 cells: 2 levels, 64 px
    cells24 = Plan.of(dataclasses.replace(spec, patch_size=24), 4000, 4000, 8, None, None, 2048, 4)
    assert cells24.bounds[1] == 2304  # 167 cells, 1 level: lcm(256, 48 px) = 768 px, 2048 rounded up to it
    s = _sample(sample_config)
    opts = PredictOptions(chunk=256, aux_truth={"swir": str(s["swir"])}, labels=str(s["labels"]),
                          products=("main", "confidence", "entropy", "aux", "main_error"))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = explain(model, s["vnir"], tmp_path / "one", opts)
    two = explain(model, s["vnir"], tmp_path / "two", PredictOptions(**{**opts.__dict__, "workers": 2}))
    _assert_same_outputs(one.outputs, two.outputs)
    assert gdal.Open(str(two.outputs["main"])).RasterXSize == 31  # the cell grid
    (tmp_path / "whole").mkdir()  # one chunk (as before cells were chunked): the same cells
    whole = predict(model, s["vnir"], tmp_path / "whole", PredictOptions(chunk=512, products=("main", "confidence")))
    for key in whole.outputs:
        np.testing.assert_allclose(_pixels(whole.outputs[key])[0], _pixels(one.outputs[key])[0], atol=1e-6)
    report = [json.loads(Path(r.report["json"]).read_text()) for r in (one, two)]
    for r in report:
        r.pop("inputs", None)
    assert report[0] == report[1] and report[0]["unit"] == "cells"


def _assert_mosaic_of(single: Path, mosaic: Path, key: str) -> None:
    """A VRT layer shows the single run's pixels, band metadata and overviews (its first levels: GDAL gives a VRT
    the levels of its sources down to 128 px)."""
    a, b = gdal.Open(str(single)), gdal.Open(str(mosaic))
    assert mosaic.suffix == ".vrt" and b.GetDriver().ShortName == "VRT"
    assert a.GetGeoTransform() == b.GetGeoTransform() and a.GetProjection() == b.GetProjection()
    for i in range(1, a.RasterCount + 1):
        x, y = a.GetRasterBand(i), b.GetRasterBand(i)
        assert (x.GetDescription(), x.GetNoDataValue(), x.GetCategoryNames(), x.GetUnitType()) == \
               (y.GetDescription(), y.GetNoDataValue(), y.GetCategoryNames(), y.GetUnitType()), key
        np.testing.assert_allclose([x.GetScale() or 1, x.GetOffset() or 0], [y.GetScale() or 1, y.GetOffset() or 0],
                                   rtol=1e-15)  # the VRT's XML holds them to the 16th digit
        assert 1 <= y.GetOverviewCount() <= x.GetOverviewCount()
        for u, v in zip([x] + [x.GetOverview(o) for o in range(y.GetOverviewCount())],
                        [y] + [y.GetOverview(o) for o in range(y.GetOverviewCount())]):
            np.testing.assert_array_equal(u.ReadAsArray(), v.ReadAsArray(), err_msg=key)


def test_vrt_outputs_are_the_single_run_s_without_a_copy(sample_config, tmp_path):
    s = _sample(sample_config)
    opts = PredictOptions(**SMALL, products=("main", "confidence", "aux"))
    (tmp_path / "one").mkdir()
    (tmp_path / "vrt").mkdir()
    one = predict(MODEL, s["vnir"], tmp_path / "one", opts)
    vrt = predict(MODEL, s["vnir"], tmp_path / "vrt", dataclasses.replace(opts, workers=2, vrt=True))
    assert sorted(one.outputs) == sorted(vrt.outputs)
    for key in one.outputs:
        _assert_mosaic_of(one.outputs[key], vrt.outputs[key], key)
    assert vrt.timings["copy"] == 0 and len(vrt.timings["shard_tiles"]) == 2  # one shard per worker
    folder = vrt.shards
    assert folder.parent == (tmp_path / "vrt").resolve()
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["shard-000", "shard-001"]
    assert sorted(p.name for p in folder.glob("*.vrt")) == sorted(  # its levels: 2x and 4x on the sample
        f"{path.stem}.ovr.{f}x.vrt" for path in vrt.outputs.values() for f in (2, 4))
    moved = tmp_path / "moved"  # the VRTs name their shards relative to themselves: the folder can move
    (tmp_path / "vrt").rename(moved)
    for key, path in vrt.outputs.items():
        _assert_mosaic_of(one.outputs[key], moved / path.name, key)
    moved.rename(tmp_path / "vrt")
    with pytest.raises(Exception, match="already exist"):
        predict(MODEL, s["vnir"], tmp_path / "vrt", dataclasses.replace(opts, workers=2, vrt=True))
    again = predict(MODEL, s["vnir"], tmp_path / "vrt", dataclasses.replace(opts, workers=2, vrt=True, overwrite=True))
    assert not folder.exists() and again.shards.exists()  # the replaced VRTs' shards go with them
    assert _leftovers(tmp_path / "vrt") == sorted([p.name for p in again.outputs.values()] + [again.shards.name])
    from mtl_core.errors import ConfigError

    with pytest.raises(ConfigError, match="--vrt .* --workers"):
        predict(MODEL, s["vnir"], tmp_path / "one", dataclasses.replace(opts, vrt=True, overwrite=True))


def test_a_cancelled_vrt_run_leaves_nothing(sample_config, tmp_path):
    s = _sample(sample_config)
    seen = []
    with pytest.raises(CancelledError):
        predict(MODEL, s["vnir"], tmp_path, PredictOptions(**SMALL, workers=2, vrt=True,
                                                           products=("main", "sensitivity")),
                progress=seen.append, cancelled=lambda: bool(seen))
    assert _leftovers(tmp_path) == []


def test_a_vrt_run_s_halo_product_is_one_file_read_across_the_shards(sample_config, tmp_path, monkeypatch):
    """Workers in this process (threads), so the test-only halo product registered here is theirs too."""
    from distributed import LocalCluster

    from mtl_core.engine import products, run

    from mtl_core.spec import FLOAT_NODATA

    from .rasters import read
    from .test_products import _MaxOfConfidence, _max3

    monkeypatch.setattr(products, "REGISTRY", products.REGISTRY + [_MaxOfConfidence()])
    monkeypatch.setattr(run, "HALO_WINDOW", 64)
    s = _sample(sample_config)
    opts = PredictOptions(**SMALL, products=("main", "max_confidence"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        result = predict(MODEL, s["vnir"], tmp_path, dataclasses.replace(
            opts, scheduler=cluster.scheduler_address, vrt=True))
    assert result.outputs["max_confidence"].suffix == ".tif" and result.outputs["confidence"].suffix == ".vrt"
    expected = _max3(read(result.outputs["confidence"]), FLOAT_NODATA, (0, 0, 0, 0))
    expected[np.isinf(expected)] = FLOAT_NODATA  # no valid neighbour (the sample has nodata): written as nodata
    np.testing.assert_array_equal(gdal.Open(str(result.outputs["max_confidence"])).ReadAsArray(), expected)

"""Shared fixtures: the real sample scene (fetched once into the cache) and small crops of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from osgeo import gdal, ogr, osr

from mtl_core.sample_data import prepare_sample
from mtl_core.spec import Architecture, Band, ClassInfo, Modality, ModelSpec, Target

from .fixtures import make_crop

gdal.UseExceptions()


@pytest.fixture(scope="session")
def sample_config() -> Path:
    """The prepared real sample (Raleigh, Landsat 7): its dataset configuration."""
    return prepare_sample("raleigh")


@pytest.fixture(scope="session")
def crop_dir(sample_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 192 x 160 px crop of the real sample (all three rasters), with its own configuration.

    In the QGIS 3.44 chroot (``MTL_TEST_CROP``): the crop the host made, which the tiny ONNX model was trained on."""
    if os.environ.get("MTL_TEST_CROP"):
        return Path(os.environ["MTL_TEST_CROP"])
    return make_crop(sample_config, tmp_path_factory.mktemp("crop"))


@pytest.fixture(scope="session")
def trained_model(crop_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """An mtl model trained for a few steps on the crop: (model file, TrainResult)."""
    from mtl_core.config import load_config
    from mtl_core.modelfile import save_model
    from mtl_core.training.train import TrainOptions, train

    cfg = load_config(crop_dir / "crop.yaml")
    opts = TrainOptions(steps=6, batch_size=4, eval_every=3, architecture=Architecture(encoder_depth=3))
    result = train(cfg, opts, progress=False)
    path = tmp_path_factory.mktemp("model") / "crop.mtl.safetensors"
    save_model(path, result.spec, result.state_dict)
    return path, result


@pytest.fixture
def crop_copy(crop_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the crop (for tests that alter rasters)."""
    dst = tmp_path / "crop"
    shutil.copytree(crop_dir, dst)
    return dst


def make_spec(task: str = "segmentation", variant: str = "mtl", encoder: str = "resnet18") -> ModelSpec:
    """A small spec built by hand: 4 optical bands in, a 2-band 'swir' modality reconstructed."""
    optical = Modality("optical", [Band(n, 50.0, 10.0) for n in ("blue", "green", "red", "nir")], "DN")
    swir = Modality("swir", [Band("swir1", 60.0, 12.0), Band("swir2", 40.0, 9.0)], "DN")
    inputs = [optical, swir] if variant == "multimodal" else [optical]
    return ModelSpec(
        name=f"test {task} {variant}",
        task=task,
        variant=variant,
        inputs=inputs,
        aux=[swir] if variant == "mtl" else [],
        classes=[] if task == "regression" else [ClassInfo(1, "a", "#ff0000"), ClassInfo(2, "b", "#00ff00"),
                                                 ClassInfo(5, "c", "#0000ff")],
        target=Target("height", "m", 10.0, 3.0) if task == "regression" else None,
        architecture=Architecture(encoder=encoder, encoder_depth=3),
        patch_size=32,
    )


def write_polygon(path: Path, raster: Path, corners: list[tuple[int, int]]) -> Path:
    """A GeoPackage holding one polygon whose corners are (column, row) pixel positions of ``raster``."""
    ds = gdal.Open(str(raster))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("aoi", osr.SpatialReference(ds.GetProjection()), ogr.wkbPolygon)
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for cx, cy in [*corners, corners[0]]:
        ring.AddPoint(x0 + cx * dx, y0 + cy * dy)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(poly)
    layer.CreateFeature(feature)
    source = None
    return path

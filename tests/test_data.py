"""Data: grid alignment, the spatial block split, training-only statistics and nodata masking."""

import logging

import numpy as np
import pytest
from osgeo import gdal

from mtl_core.config import load_config
from mtl_core.training.data import SampleReader, Scene, TrainPatches, block_split, modalities
from mtl_core.errors import RasterError
from mtl_core.training.losses import IGNORE_INDEX


@pytest.fixture
def scene(crop_dir):
    return Scene(load_config(crop_dir / "crop.yaml"))


def test_blocks_partition_the_labelled_grid_without_overlap(scene):
    split = block_split(scene, scene.cfg.split)
    covered = np.zeros((scene.grid.height, scene.grid.width), dtype=int)
    for blocks in split.values():
        assert blocks
        for x, y, w, h in blocks:
            covered[y:y + h, x:x + w] += 1
    assert covered.max() == 1  # no pixel in two splits
    size = scene.cfg.split.block_size
    for blocks in split.values():  # whole blocks on the block grid, never scattered pixels
        assert all(x % size == 0 and y % size == 0 for x, y, _, _ in blocks)
    assert block_split(scene, scene.cfg.split) == split  # seeded
    other = scene.cfg.split
    other.seed = 1
    assert block_split(scene, other) != split


def test_training_patches_stay_inside_training_blocks(scene):
    split = block_split(scene, scene.cfg.split)
    inputs = modalities(scene.inputs, scene, split["train"])
    aux = modalities(scene.aux, scene, split["train"])
    patches = TrainPatches(SampleReader(scene, "mtl", inputs, aux), split["train"], 64, 50, seed=0)
    train = np.zeros((scene.grid.height, scene.grid.width), dtype=bool)
    for x, y, w, h in split["train"]:
        train[y:y + h, x:x + w] = True
    for x, y in map(patches.start, range(len(patches))):
        assert train[y:y + 64, x:x + 64].all()
    s = patches[0]
    assert s["image"].shape == (4, 64, 64) and s["aux"]["swir"].shape == (2, 64, 64)
    assert s["mask"].shape == (64, 64)


def test_normalisation_uses_the_training_blocks_only(scene):
    split = block_split(scene, scene.cfg.split)
    train_stats = modalities(scene.inputs, scene, split["train"])[0].bands
    test_stats = modalities(scene.inputs, scene, split["test"])[0].bands
    data, valid = Scene.read_stack(scene.inputs, split["train"][0])
    assert [b.name for b in train_stats] == ["blue", "green", "red", "nir"]
    assert all(b.std > 0 for b in train_stats)
    assert train_stats[0].mean != pytest.approx(test_stats[0].mean)


def test_nodata_is_masked_not_learned(crop_copy):
    vnir = crop_copy / "raleigh_vnir.tif"
    ds = gdal.Open(str(vnir), gdal.GA_Update)
    band = ds.GetRasterBand(3)
    arr = band.ReadAsArray()
    arr[:10, :] = band.GetNoDataValue()
    band.WriteArray(arr)
    ds = None
    scene = Scene(load_config(crop_copy / "crop.yaml"))
    split = block_split(scene, scene.cfg.split)
    inputs = modalities(scene.inputs, scene, split["train"])
    aux = modalities(scene.aux, scene, split["train"])
    s = SampleReader(scene, "mtl", inputs, aux).read((0, 0, 64, 64))
    assert not s["valid"][:10].any() and s["valid"][10:].any()
    assert (s["image"][:, :10] == 0).all()  # the training mean, not -99999
    assert (s["mask"][:10] == IGNORE_INDEX).all()
    assert not s["aux_valid"]["swir"][:10].any()


def test_label_raster_on_another_grid_is_aligned_and_the_user_told(crop_copy, caplog):
    src = crop_copy / "raleigh_landcover.tif"
    shifted = crop_copy / "labels_utm.tif"
    gdal.Warp(str(shifted), str(src), dstSRS="EPSG:32617", xRes=30, yRes=30, resampleAlg="near")
    text = (crop_copy / "crop.yaml").read_text().replace("raleigh_landcover.tif", "labels_utm.tif")
    (crop_copy / "crop.yaml").write_text(text)
    with caplog.at_level(logging.WARNING, logger="mtl_core"):
        scene = Scene(load_config(crop_copy / "crop.yaml"))
    assert "not on the input grid" in caplog.text and "near" in caplog.text
    window = (0, 0, scene.grid.width, scene.grid.height)
    labels, labelled = scene.read_labels(window)
    assert labels.shape == (scene.grid.height, scene.grid.width)
    text = text.replace("labels_utm.tif", "raleigh_landcover.tif")
    (crop_copy / "crop.yaml").write_text(text)
    original, original_labelled = Scene(load_config(crop_copy / "crop.yaml")).read_labels(window)
    both = labelled & original_labelled
    assert both.mean() > 0.9
    assert (labels[both] == original[both]).mean() > 0.8  # nearest neighbour there and back


def test_non_overlapping_raster_is_a_clear_error(crop_copy):
    far = crop_copy / "far.tif"
    gdal.Translate(str(far), str(crop_copy / "raleigh_swir.tif"), outputBounds=[0, 1000, 1000, 0])
    text = (crop_copy / "crop.yaml").read_text().replace("raleigh_swir.tif", "far.tif")
    (crop_copy / "crop.yaml").write_text(text)
    with pytest.raises(RasterError, match="does not overlap the input raster"):
        Scene(load_config(crop_copy / "crop.yaml"))


def test_raster_without_crs_is_a_clear_error(crop_copy):
    ds = gdal.Open(str(crop_copy / "raleigh_swir.tif"), gdal.GA_Update)
    ds.SetProjection("")
    ds = None
    with pytest.raises(RasterError, match="has no coordinate reference system; assign one"):
        Scene(load_config(crop_copy / "crop.yaml"))


def test_undeclared_label_values_are_counted_and_refused_unless_ignored(crop_copy):
    import yaml

    from mtl_core.errors import ConfigError

    labels = crop_copy / "raleigh_landcover.tif"
    ds = gdal.Open(str(labels), gdal.GA_Update)
    arr = ds.GetRasterBand(1).ReadAsArray()
    arr[:3, :10] = 9  # a value labels.classes does not declare: 30 pixels
    ds.GetRasterBand(1).WriteArray(arr)
    ds = None
    with pytest.raises(ConfigError, match=r"does not declare \(9: 30 px\); add them to labels.classes, or list them "
                                          r"under labels.ignore"):
        Scene(load_config(crop_copy / "crop.yaml"))
    raw = yaml.safe_load((crop_copy / "crop.yaml").read_text())
    raw["labels"]["ignore"] = [9]
    (crop_copy / "crop.yaml").write_text(yaml.safe_dump(raw))
    scene = Scene(load_config(crop_copy / "crop.yaml"))  # ignored on purpose: those pixels are unlabelled
    _, labelled = scene.read_labels((0, 0, 10, 3))
    assert not labelled.any()


def test_the_second_sample_prepares_from_its_wheel_and_trains_from_its_polygons():
    """Berlin (Sentinel-2, OSM polygons): 10 m bands in, the 20 m bands aligned onto them, 'grass' left out."""
    from mtl_core.sample_data import prepare_sample

    cfg = load_config(prepare_sample("berlin"))
    scene = Scene(cfg)
    assert (scene.grid.width, scene.grid.height) == (1536, 768) and scene.grid.pixel_size_m() == 10
    assert [c.name for c in scene.classes] == ["farm", "meadow", "forest", "residential", "scrub", "wetland", "water"]
    assert scene.polygons.skipped["ignored value"] == 10  # the 'grass' polygons
    window = (512, 256, 64, 64)
    aux, valid = Scene.read_stack(scene.aux, window)  # the 20 m raster read on the 10 m grid
    assert aux.shape == (6, 64, 64) and valid.all() and aux.std() > 0

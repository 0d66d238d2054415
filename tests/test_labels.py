"""Polygon labels: a vector layer with a class field, rasterised on the input grid, for training and explain."""

import logging

import numpy as np
import pytest
import yaml
from osgeo import gdal, ogr, osr

from mtl_core.cli import main
from mtl_core.config import load_config
from mtl_core.engine import explain
from mtl_core.engine.runtime import read_spec
from mtl_core.errors import ConfigError, RasterError
from mtl_core.io.labels import polygons_from_raster
from mtl_core.jobs import Job, run_job
from mtl_core.training.data import SampleReader, Scene, TrainPatches, block_split, modalities

CLASSES = {1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland", 5: "forest", 6: "water", 7: "sediment"}


def _config(folder, labels: dict, name: str = "poly.yaml", **extra):
    """The crop's configuration with other labels (and top-level keys)."""
    raw = yaml.safe_load((folder / "crop.yaml").read_text())
    raw["labels"] = labels
    raw.update(extra)
    (folder / name).write_text(yaml.safe_dump(raw))
    return folder / name


@pytest.fixture(scope="module")
def polygons(crop_dir, tmp_path_factory):
    """The crop's land-cover map as polygons with a text class field, in WGS 84 (the raster is EPSG:3358)."""
    folder = tmp_path_factory.mktemp("poly")
    for f in crop_dir.iterdir():
        (folder / f.name).symlink_to(f)
    polygons_from_raster(crop_dir / "raleigh_landcover.tif", folder / "landcover.gpkg", CLASSES, epsg=4326)
    return folder


def _vector(path, srs_epsg, features, geom_type=ogr.wkbPolygon, field_type=ogr.OFTString, driver="GPKG"):
    """A vector file of (wkt or None, value) features."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(srs_epsg)
    source = ogr.GetDriverByName(driver).CreateDataSource(str(path))
    layer = source.CreateLayer("labels", srs, geom_type)
    layer.CreateField(ogr.FieldDefn("class", field_type))
    for wkt, value in features:
        f = ogr.Feature(layer.GetLayerDefn())
        if wkt is not None:
            f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        if value is not None:
            f.SetField("class", value)
        layer.CreateFeature(f)
    source = None
    return path


def _square(crop_dir, col, row, size):
    """WKT of a square of ``size`` px at pixel (col, row) of the crop, in the crop's CRS (EPSG:3358)."""
    x0, dx, _, y0, _, dy = gdal.Open(str(crop_dir / "raleigh_vnir.tif")).GetGeoTransform()
    xa, ya, xb, yb = x0 + col * dx, y0 + row * dy, x0 + (col + size) * dx, y0 + (row + size) * dy
    return f"POLYGON (({xa} {ya}, {xb} {ya}, {xb} {yb}, {xa} {yb}, {xa} {ya}))"


def _squares(path, crop, *squares, field_type=ogr.OFTString):
    """A GeoPackage in the crop's CRS of squares (col, row, size in px, class value)."""
    return _vector(path, 3358, [(_square(crop, c, r, n), v) for c, r, n, v in squares], field_type=field_type)


def test_polygons_in_another_crs_rasterise_onto_the_raster_labels(polygons, caplog):
    with caplog.at_level(logging.WARNING, logger="mtl_core"):
        scene = Scene(load_config(_config(polygons, {"path": "landcover.gpkg", "field": "class",
                                                     "task": "segmentation"})))
    assert "reprojected from WGS 84" in caplog.text
    raster = Scene(load_config(polygons / "crop.yaml"))
    present = [c.name for c, n in zip(raster.classes, raster.census().per_class) if n]
    assert [c.name for c in scene.classes] == sorted(present)  # text values become classes, by name
    window = (0, 0, scene.grid.width, scene.grid.height)
    idx, labelled = scene.read_labels(window)
    ref, ref_labelled = raster.read_labels(window)
    names = np.array([c.name for c in scene.classes])
    ref_names = np.array([c.name for c in raster.classes])
    assert abs(labelled.mean() - ref_labelled.mean()) < 0.01
    both = labelled & ref_labelled
    assert (names[idx[both]] == ref_names[ref[both]]).mean() > 0.97  # the same map, there and back through WGS 84
    assert scene.census().per_class.sum() == labelled.sum()


def test_train_and_explain_from_polygons(polygons, tmp_path, capsys):
    """The issue's done-when: train from a GeoPackage with a text class field in another CRS, explain with it."""
    config = _config(polygons, {"path": "landcover.gpkg", "field": "class", "task": "segmentation",
                                "classes": {"forest": "#1a9641", "water": {"color": "#2b83ba"}, **{
                                    n: "#808080" for n in CLASSES.values() if n not in ("forest", "water")}}})
    model = tmp_path / "m.mtl.safetensors"
    assert main(["-q", "train", str(config), "--steps", "4", "--batch-size", "4", "--eval-every", "2",
                 "--encoder-depth", "3", "--out", str(model)]) == 0
    spec = read_spec(model)
    declared = list(yaml.safe_load(config.read_text())["labels"]["classes"])
    assert [c.name for c in spec.classes] == declared  # the declared classes, in the file's order, with their colours
    colors = {c.name: c.color for c in spec.classes}
    assert colors["forest"] == "#1a9641" and colors["water"] == "#2b83ba"
    data = spec.training["data"]
    assert data["labels_field"] == "class" and data["label_values"]["forest"] == declared.index("forest") + 1
    assert data["labelled_pixels"]["test"] > 0 and data["polygons"]["used"] > 100
    out = tmp_path / "explained"
    assert main(["-q", "explain", str(model), str(polygons / "raleigh_vnir.tif"), "--aux",
                 f"swir={polygons / 'raleigh_swir.tif'}", "--labels", str(polygons / "landcover.gpkg"),
                 "--labels-field", "class", "--out", str(out), "--no-sensitivity", "--split", "test"]) == 0
    report = yaml.safe_load((out / "raleigh_vnir_report.json").read_text())
    assert report["scored"]["blocks"] == data["blocks"]["test"]  # the model's own test blocks, rebuilt from polygons
    assert (out / "raleigh_vnir_main_error.tif").exists()
    # without --labels-field the field the model was trained on is used
    again = explain(model, polygons / "raleigh_vnir.tif", tmp_path,
                    Job(kind="explain", labels=str(polygons / "landcover.gpkg"), products=["main"]).predict_options())
    assert again.stats["pixels_labelled"] > 0 and again.stats["metrics"]["overall_accuracy"] > 0


def test_sparse_polygons_keep_only_labelled_blocks_and_patches_hold_labels(polygons, tmp_path):
    polygons_from_raster(polygons / "raleigh_landcover.tif", tmp_path / "sparse.gpkg", CLASSES, keep=0.1, seed=1)
    scene = Scene(load_config(_copy_config(polygons, tmp_path)))
    split = block_split(scene, scene.cfg.split)
    for blocks in split.values():
        for w in blocks:
            assert scene.read_labels(w)[1].any()
    inputs = modalities(scene.inputs, scene, split["train"])
    patches = TrainPatches(SampleReader(scene, "unimodal", inputs, []), split["train"], 64, 200, seed=0)
    assert all(scene.read_labels((x, y, 64, 64))[1].any() for x, y in map(patches.start, range(len(patches))))
    train = np.zeros((scene.grid.height, scene.grid.width), dtype=bool)
    for x, y, w, h in split["train"]:
        train[y:y + h, x:x + w] = True
    assert all(train[y:y + 64, x:x + 64].all() for x, y in map(patches.start, range(len(patches))))


def _copy_config(polygons, tmp_path):
    """The crop's configuration in ``tmp_path``, with the polygons of ``tmp_path/sparse.gpkg`` as labels."""
    raw = yaml.safe_load((polygons / "crop.yaml").read_text())
    for group in ("inputs", "aux"):
        for m in raw[group].values():
            m["path"] = str(polygons / m["path"])
    raw["labels"] = {"path": "sparse.gpkg", "field": "class", "task": "segmentation"}
    (tmp_path / "sparse.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "sparse.yaml"


def test_bad_polygon_layers_are_clear_errors(polygons, tmp_path):
    def scene(path, **labels):
        return Scene(load_config(_config(polygons, {"path": str(path), "field": "class", "task": "segmentation",
                                                    **labels}, name="bad.yaml")))

    far = _vector(tmp_path / "far.gpkg", 4326, [("POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))", "a"),
                                                ("POLYGON ((2 0, 3 0, 3 1, 2 1, 2 0))", "b")])
    with pytest.raises(RasterError, match="does not overlap the input raster"):
        scene(far)
    one = _squares(tmp_path / "one.gpkg", polygons, (0, 0, 50, "forest"))
    with pytest.raises(ConfigError, match="holds one class only"):
        scene(one)
    points = _vector(tmp_path / "pts.gpkg", 3358, [("POINT (0 0)", "a")], ogr.wkbPoint)
    with pytest.raises(ConfigError, match="holds Point geometries; labels must be polygons"):
        scene(points)
    mixed = _vector(tmp_path / "mixed.geojson", 3358, [(_square(polygons, 0, 0, 50), "1"),
                                                       (_square(polygons, 60, 0, 50), "forest")], driver="GeoJSON")
    with pytest.raises(ConfigError, match=r"mixes class codes \(1\) and class names \(forest\)"):
        scene(mixed)
    with pytest.raises(ConfigError, match=r"has no field 'kind'; its fields are \['class'\]"):
        scene(one, field="kind")
    with pytest.raises(ConfigError, match=r"values that labels.classes does not declare \(forest\)"):
        scene(_squares(tmp_path / "two.gpkg", polygons, (0, 0, 50, "forest"), (60, 0, 50, "water")),
              classes={"water": "#0000ff"})
    # labels in one corner only: too few blocks for a train/val/test split, said with the fix
    corner = _squares(tmp_path / "corner.gpkg", polygons, (0, 0, 20, "forest"), (20, 20, 20, "water"))
    with pytest.raises(RasterError, match="only 1 block.*validation and test must not be empty.*lower "
                                          "split.block_size"):
        block_split(scene(corner), load_config(polygons / "crop.yaml").split)
    with pytest.raises(ConfigError, match="training extent .* does not overlap"):
        Scene(load_config(_config(polygons, {"path": str(corner), "field": "class", "task": "segmentation"},
                                  name="bad.yaml", extent=[0, 0, 1, 1])))


def test_null_empty_and_invalid_geometries_are_skipped_and_counted(polygons, tmp_path, caplog):
    bowtie = "POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))"
    path = _vector(tmp_path / "messy.gpkg", 3358, [
        (_square(polygons, 0, 0, 60), "forest"), (_square(polygons, 70, 70, 60), "water"),
        (None, "forest"), ("POLYGON EMPTY", "water"), (bowtie, "forest"), (_square(polygons, 130, 0, 30), None)])
    with caplog.at_level(logging.WARNING, logger="mtl_core"):
        scene = Scene(load_config(_config(polygons, {"path": str(path), "field": "class", "task": "segmentation"},
                                          name="messy.yaml")))
    skipped = scene.polygons.skipped
    assert scene.polygons.used == 2 and skipped["no geometry"] == 1 and skipped["empty geometry"] == 1
    assert skipped["invalid geometry"] == 1 and skipped["no 'class' value"] == 1
    assert "1 feature(s) skipped: invalid geometry" in caplog.text


def test_a_class_with_almost_no_pixels_is_named(polygons, tmp_path, caplog):
    path = _squares(tmp_path / "rare.gpkg", polygons, (0, 0, 100, "forest"), (100, 100, 2, "water"))
    with caplog.at_level(logging.WARNING, logger="mtl_core"):
        Scene(load_config(_config(polygons, {"path": str(path), "field": "class", "task": "segmentation"},
                                  name="rare.yaml")))
    assert "class 'water' has only 4 labelled pixel(s)" in caplog.text


def test_a_numeric_field_is_a_regression_target(polygons, tmp_path):
    path = _squares(tmp_path / "height.gpkg", polygons, (0, 0, 60, 12.5), (80, 60, 60, 3.25), field_type=ogr.OFTReal)
    scene = Scene(load_config(_config(polygons, {"path": str(path), "field": "class", "task": "regression"},
                                      name="reg.yaml")))
    values, valid = scene.read_labels((0, 0, scene.grid.width, scene.grid.height))
    assert set(np.unique(values[valid]).tolist()) == {12.5, 3.25}
    assert valid.sum() == 2 * 60 * 60
    with pytest.raises(ConfigError, match="a regression target needs a numeric field"):
        Scene(load_config(_config(polygons, {"path": "landcover.gpkg", "field": "class", "task": "regression"},
                                  name="reg.yaml")))


def test_explain_refuses_polygon_classes_the_model_lacks(polygons, trained_model, tmp_path):
    path = _squares(tmp_path / "other.gpkg", polygons, (0, 0, 60, "forest"), (80, 60, 60, "glacier"))
    job = Job(kind="explain", model=str(trained_model[0]), raster=str(polygons / "raleigh_vnir.tif"),
              out=str(tmp_path), labels=str(path), labels_field="class", products=["main"])
    with pytest.raises(ConfigError, match=r"value\(s\) the model has no class for \(glacier\)"):
        run_job(job)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.gpkg"]


def test_an_aux_raster_covering_part_of_the_scene_is_said(polygons, tmp_path, caplog):
    half = tmp_path / "swir_half.tif"
    gdal.Translate(str(half), str(polygons / "raleigh_swir.tif"), srcWin=[0, 0, 96, 160])
    raw = yaml.safe_load((polygons / "crop.yaml").read_text())
    raw["aux"]["swir"]["path"] = str(half)
    (polygons / "half.yaml").write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING):
        Scene(load_config(polygons / "half.yaml"))
    assert "'swir' " in caplog.text and "swir_half.tif' covers only 50% of the input raster" in caplog.text


def test_a_model_file_in_a_folder_that_takes_no_file_is_refused_before_training(polygons, capsys):
    """/proc refuses new files even to root (os.access says it may write there)."""
    assert main(["train", str(polygons / "crop.yaml"), "--steps", "2", "--out", "/proc/m.mtl.safetensors"]) != 0
    err = capsys.readouterr().err
    assert "cannot write in output folder '/proc'" in err and "step" not in err


def test_values_ignored_at_training_stay_ignored_when_explaining(polygons, tmp_path):
    """A class left out on purpose (labels.ignore) is not 'a class the model lacks' when the same layer scores it."""
    path = _squares(tmp_path / "few.gpkg", polygons, (0, 0, 64, "forest"), (64, 0, 64, "developed"),
                    (0, 64, 64, "developed"), (64, 64, 64, "forest"), (128, 64, 60, "cloud"), (128, 0, 60, "forest"))
    config = _config(polygons, {"path": str(path), "field": "class", "task": "segmentation", "ignore": ["cloud"]},
                     name="ignore.yaml")
    model = tmp_path / "m.mtl.safetensors"
    assert main(["-q", "train", str(config), "--steps", "2", "--batch-size", "2", "--eval-every", "2",
                 "--encoder-depth", "3", "--out", str(model)]) == 0
    assert read_spec(model).training["data"]["labels_ignore"] == ["cloud"]
    result = explain(model, polygons / "raleigh_vnir.tif", tmp_path, Job(
        kind="explain", labels=str(path), products=["main"]).predict_options())
    assert result.stats["pixels_labelled"] == 4 * 64 * 64 + 60 * 60  # every square but the cloud's

"""Where to label next: sites proposed from a real model's layers, from the CLI, and used as labels again."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from osgeo import gdal, ogr, osr

from mtl_core.cli import main
from mtl_core.errors import ConfigError
from mtl_core.explain.sites import Cell, select
from mtl_core.modelfile import read_spec


def _features(path):
    ds = ogr.Open(str(path))
    layer = ds.GetLayer("sites")
    rows = []
    for f in layer:
        env = f.GetGeometryRef().GetEnvelope()
        rows.append({**{k: f.GetField(k) for k in f.keys()}, "envelope": env})
    return rows, layer.GetSpatialRef().ExportToWkt()


def _cells(n: int = 12) -> list[Cell]:
    """A row of 64 px cells with made-up scores: entropy falls, the flagged share rises along the row."""
    return [Cell((64 * i, 0, 64, 64), 1.0, 1 + i % 3, 0.5, entropy=1 - i / n, error_probability=(i % 5) / 5,
                 flagged=i / n) for i in range(n)]


def test_selection_ranks_spreads_and_mixes():
    cells = _cells()
    by_entropy = select(cells, "entropy", 4, 64)
    assert [s.cell.window[0] // 64 for s in by_entropy] == [0, 1, 2, 3]  # best first, adjacent allowed at 64 px
    spread = select(cells, "entropy", 4, 150)
    xs = [s.cell.window[0] for s in spread]
    assert all(abs(a - b) >= 150 for i, a in enumerate(xs) for b in xs[i + 1:])
    assert [s.rank for s in spread] == [1, 2, 3, 4] and all(s.kind == "uncertain" for s in spread)
    mix = select(cells, "mix", 4, 64)
    assert [s.kind for s in mix] == ["uncertain", "flagged", "uncertain", "flagged"]
    assert [s.cell.window[0] // 64 for s in mix] == [0, 11, 1, 10]
    assert select(cells, "random", 5, 64, seed=3)[0].cell is select(cells, "random", 5, 64, seed=3)[0].cell
    assert len(select(cells, "entropy", 50, 64)) == len(cells)  # no more sites than candidate squares
    with pytest.raises(ConfigError, match="unknown strategy"):
        select(cells, "smart", 2, 64)


def test_cli_proposes_styled_sites_that_train_as_labels(crop_dir, trained_model, tmp_path, capsys):
    model = trained_model[0]
    spec = read_spec(model)
    out = tmp_path / "sites.gpkg"
    assert main(["-q", "propose-sites", str(model), str(crop_dir / "raleigh_vnir.tif"), "--aux",
                 f"swir={crop_dir / 'raleigh_swir.tif'}", "--count", "4", "--size", "32", "--min-distance",
                 str(2 * 32 * 28.5), "--strategy", "mix", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ranked by mix" in printed
    rows, wkt = _features(out)
    ds = gdal.Open(str(crop_dir / "raleigh_vnir.tif"))
    assert osr.SpatialReference(wkt).IsSame(osr.SpatialReference(ds.GetProjection()))
    assert 1 <= len(rows) <= 4 and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    pixel = ds.GetGeoTransform()[1]
    for r in rows:
        xmin, xmax, ymin, ymax = r["envelope"]
        assert xmax - xmin == pytest.approx(32 * pixel) and ymax - ymin == pytest.approx(32 * pixel)
        assert r["kind"] in ("uncertain", "flagged") and r["reason"] and r["strategy"] == "mix"
        assert r["predicted"] in [c.name for c in spec.classes] and r["class"] is None
        assert 0 <= r["flagged_share"] <= 1 and 0 <= r["entropy"] <= 1
    centres = [((r["envelope"][0] + r["envelope"][1]) / 2, (r["envelope"][2] + r["envelope"][3]) / 2) for r in rows]
    assert all(math.dist(a, b) >= 2 * 32 * pixel - 1e-6 for i, a in enumerate(centres) for b in centres[i + 1:])
    assert (tmp_path / "sites.qml").read_text().count("<category ") == 4  # the style beside it, by kind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sites.gpkg", "sites.qml"]  # no temporary folder left

    # The user sets the class of two sites; the layer trains as polygon labels (empty classes are unlabelled).
    src = ogr.Open(str(out), 1)
    layer = src.GetLayer("sites")
    for f, name in zip(layer, ["forest", "developed"]):
        f.SetField("class", name)
        layer.SetFeature(f)
    src = layer = None
    raw = yaml.safe_load((crop_dir / "crop.yaml").read_text())
    for m in list(raw["inputs"].values()) + list(raw["aux"].values()):
        m["path"] = str(crop_dir / m["path"])
    raw["labels"] = {"path": str(out), "field": "class", "task": "segmentation"}
    raw["split"] = {"block_size": 16, "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    raw["patch_size"] = 16
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(raw))
    again = tmp_path / "again.mtl.safetensors"
    assert main(["-q", "train", str(tmp_path / "again.yaml"), "--steps", "2", "--batch-size", "2", "--eval-every",
                 "2", "--encoder-depth", "3", "--out", str(again)]) == 0
    data = read_spec(again).training["data"]
    assert sorted(data["label_values"]) == ["developed", "forest"]
    assert data["polygons"]["skipped"]["no 'class' value"] == len(rows) - 2


def test_without_the_real_modality_entropy_is_used_and_said(crop_dir, trained_model, tmp_path, capsys):
    out = tmp_path / "sites.gpkg"
    assert main(["-q", "propose-sites", str(trained_model[0]), str(crop_dir / "raleigh_vnir.tif"), "--count", "3",
                 "--strategy", "error", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ranked by entropy" in printed and "needs the layer(s) error_probability" in printed
    rows, _ = _features(out)
    assert {r["strategy"] for r in rows} == {"entropy"} and all(r["error_probability"] is None for r in rows)
    assert np.all(np.diff([r["score"] for r in rows]) <= 0)  # best first


def test_an_existing_file_or_another_format_is_refused_and_nothing_is_left(crop_dir, trained_model, tmp_path, capsys):
    raster = str(crop_dir / "raleigh_vnir.tif")
    existing = tmp_path / "mine.gpkg"
    existing.write_bytes(b"the user's own file")
    assert main(["-q", "propose-sites", str(trained_model[0]), raster, "--out", str(existing)]) != 0
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"the user's own file"
    assert main(["-q", "propose-sites", str(trained_model[0]), raster, "--out", str(tmp_path / "sites.shp")]) != 0
    assert "GeoPackage" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.gpkg"]

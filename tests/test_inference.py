"""The streaming engine: seamless tiles, exact georeferencing, nodata, masks, cancellation, products."""

import numpy as np
import pytest
import torch
from osgeo import gdal, osr

from mtl_core.errors import CancelledError, ConfigError, RasterError
from mtl_core.engine import PredictOptions, predict
from mtl_core.engine.product import argmax as _argmax
from mtl_core.engine.tiling import extent_window, tile_spans
from mtl_core.modelfile import load_model, save_model
from mtl_core.io.raster import Grid

from .conftest import write_polygon

from .rasters import read, unpack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model[0]


@pytest.fixture(scope="module")
def square(crop_dir, tmp_path_factory):
    """A 160 x 160 crop of the real sample's optical bands."""
    path = tmp_path_factory.mktemp("square") / "square.tif"
    gdal.Translate(str(path), str(crop_dir / "raleigh_vnir.tif"), srcWin=[0, 0, 160, 160])
    return path


def _probs(model, raster, out, **kw):
    out.mkdir()
    r = predict(model, raster, out, PredictOptions(products=("probabilities", "main"), **kw))
    return read(r.outputs["probabilities"]), read(r.outputs["main"])


def test_tiles_are_blended_without_seams(model, square, tmp_path):
    """Tiled output must approach the whole-image output and show no jump at tile borders.

    A CNN sees zero padding at every tile border, so a tiled prediction never equals the whole-image one
    exactly; blending gives each tile little weight near its own borders. Tolerance: in the interior
    (16 px from the raster edge) the mean |dp| of class probabilities stays under 0.05 with 64-px tiles
    and 16-px overlap, and blending must beat plain tiling. Class maps are not compared: the test model
    is trained for six steps, so its probabilities are nearly flat and argmax flips on tiny changes.
    """
    whole, _ = _probs(model, square, tmp_path / "whole", tile=160, overlap=0)
    plain, _ = _probs(model, square, tmp_path / "plain", tile=64, overlap=0)
    blend, _ = _probs(model, square, tmp_path / "blend", tile=64, overlap=16)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    d_blend = np.abs(blend - whole)[inner].mean()
    assert d_blend < 0.05
    assert d_blend < np.abs(plain - whole)[inner].mean()

    def jump(p, cols):  # mean change of probabilities between a column and the one before it
        return np.mean([np.abs(p[:, 16:-16, c] - p[:, 16:-16, c - 1]).mean() for c in cols])

    # plain 64-px tiles meet at column 64 (and 128, where the edge tile only 32 px wide starts); the blended
    # ones (stride 48) meet over columns 48-64 and 96-112
    others = [c for c in range(17, 143) if c not in (47, 48, 63, 64, 65, 95, 96, 111, 112, 127, 128, 129)]
    assert jump(plain, [64]) > 1.3 * jump(plain, others)  # plain tiling does show a seam here
    assert jump(blend, [48, 64, 96, 112]) < 1.3 * jump(blend, others)


def test_tile_spans_cover_the_axis_and_end_at_the_edge():
    assert tile_spans(0, 100, 128, 32, 32) == [(0, 128)]  # shorter than a tile: one tile, padded
    assert tile_spans(0, 300, 128, 32, 32) == [(0, 128), (96, 128), (172, 128)]
    assert tile_spans(0, 260, 128, 32, 32) == [(0, 128), (96, 128), (164, 96)]  # the last only as wide as needed
    for start, end in ((0, 129), (0, 256), (0, 1000), (512, 2064)):
        spans = tile_spans(start, end, 128, 16, 32)
        assert spans[0][0] == start and spans[-1][0] + spans[-1][1] == end
        assert all(size % 32 == 0 and 64 <= size <= 128 for _, size in spans)  # at least half a tile
        assert all(b - (a + size) <= -16 for (a, size), (b, _) in zip(spans, spans[1:]))  # neighbours overlap


def test_argmax_matches_numpy_and_takes_the_first_of_ties():
    p = np.random.default_rng(0).random((7, 30, 40)).astype(np.float32)
    p[3, :5] = p[5, :5] = 2.0  # a tie: the first class wins, as with numpy
    idx, best = _argmax(p)
    np.testing.assert_array_equal(idx, p.argmax(0))
    np.testing.assert_array_equal(best, p.max(0))


def test_sub_extent_off_the_tile_grid_is_exact(model, square, tmp_path):
    ds = gdal.Open(str(square))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    # 37.3 px from the left, 21.6 px from the top, 70.2 x 50.5 px: pixels are kept if touched
    extent = (x0 + 37.3 * dx, y0 + (21.6 + 50.5) * dy, x0 + (37.3 + 70.2) * dx, y0 + 21.6 * dy)
    r = predict(model, square, tmp_path, PredictOptions(extent=extent, tile=64, overlap=16))
    out = gdal.Open(str(r.outputs["main"]))
    assert (out.RasterXSize, out.RasterYSize) == (71, 52)  # columns 37..107, rows 21..72
    assert out.GetGeoTransform() == pytest.approx((x0 + 37 * dx, dx, 0, y0 + 21 * dy, 0, dy))
    assert osr.SpatialReference(out.GetProjection()).IsSame(osr.SpatialReference(ds.GetProjection()))
    # the same values as a run on a copy of exactly those pixels
    crop = tmp_path / "crop.tif"
    gdal.Translate(str(crop), str(square), srcWin=[37, 21, 71, 52])
    (tmp_path / "crop").mkdir()
    same = predict(model, crop, tmp_path / "crop", PredictOptions(tile=64, overlap=16))
    for key in r.outputs:
        np.testing.assert_array_equal(read(r.outputs[key]), read(same.outputs[key]))


def test_geographic_crs_raster(model, square, tmp_path):
    geo = tmp_path / "geo.tif"
    gdal.Warp(str(geo), str(square), dstSRS="EPSG:4326")
    src = gdal.Open(str(geo))
    r = predict(model, geo, tmp_path, PredictOptions(tile=64, overlap=8))
    for path in r.outputs.values():
        ds = gdal.Open(str(path))
        assert ds.GetGeoTransform() == src.GetGeoTransform()
        assert (ds.RasterXSize, ds.RasterYSize) == (src.RasterXSize, src.RasterYSize)
        srs = osr.SpatialReference(ds.GetProjection())
        assert srs.IsGeographic() and srs.GetAuthorityCode(None) == "4326"


def test_raster_smaller_than_one_tile(model, square, tmp_path):
    tiny = tmp_path / "tiny.tif"
    gdal.Translate(str(tiny), str(square), srcWin=[30, 40, 23, 17])
    r = predict(model, tiny, tmp_path, PredictOptions(tile=256))
    assert r.tiles == 1
    classes = read(r.outputs["main"])
    assert classes.shape == (17, 23) and set(np.unique(classes)) <= set(range(8))


def test_extent_outside_the_raster_and_empty_extent(model, square, tmp_path):
    with pytest.raises(RasterError, match="does not intersect the raster"):
        predict(model, square, tmp_path, PredictOptions(extent=(0, 0, 10, 10)))
    with pytest.raises(RasterError, match="is empty"):
        predict(model, square, tmp_path, PredictOptions(extent=(10, 0, 0, 10)))
    assert list(tmp_path.iterdir()) == []
    grid = Grid.of(gdal.Open(str(square)))
    assert extent_window(grid, None) == (0, 0, 160, 160)


def test_cancellation_mid_run_leaves_no_files(model, square, tmp_path):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(CancelledError):
        predict(model, square, tmp_path, PredictOptions(tile=32, overlap=0, batch_size=1), cancelled=cancelled)
    assert len(calls) == 4
    assert list(tmp_path.iterdir()) == []


def test_progress_reaches_one(model, square, tmp_path):
    seen = []
    predict(model, square, tmp_path, PredictOptions(tile=64, overlap=16), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_polygon_mask_skips_tiles_and_blanks_outside(model, square, tmp_path):
    shp = write_polygon(tmp_path / "aoi.gpkg", square, [(0, 0), (60, 0), (60, 50), (0, 50)])
    out = tmp_path / "out"
    out.mkdir()
    r = predict(model, square, out, PredictOptions(tile=64, overlap=0, mask=str(shp)))
    assert r.skipped_tiles >= 5
    classes = read(r.outputs["main"])
    assert (classes[:48, :58] != 0).mean() > 0.95
    assert (classes[52:, :] == 0).all() and (classes[:, 62:] == 0).all()


def test_cog_output(model, square, tmp_path):
    r = predict(model, square, tmp_path, PredictOptions(tile=64, cog=True, products=("main", "confidence")))
    for path in r.outputs.values():
        ds = gdal.Open(str(path))
        assert ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml")) == sorted(
        p.name for p in r.outputs.values())


def test_sensitivity_of_an_ignored_band_is_zero(trained_model, square, tmp_path):
    path, _ = trained_model
    spec, net = load_model(path)
    with torch.no_grad():
        net.encoder.conv1.weight[:, 2] = 0.0  # the red band no longer reaches the network
    blind = tmp_path / "blind.mtl.safetensors"
    save_model(blind, spec, net.state_dict())
    r = predict(blind, square, tmp_path, PredictOptions(tile=64, overlap=16, products=("sensitivity",)))
    sens = read(r.outputs["sensitivity"])
    assert sens.shape[0] == 4
    assert np.abs(sens[2]).max() == 0.0
    assert sens[[0, 1, 3]].max() > 0
    rec = read(r.outputs["sensitivity_swir"])
    assert np.abs(rec[2]).max() == 0.0 and rec[[0, 1, 3]].max() > 0


def test_error_layers_match_their_definition(model, crop_dir, tmp_path):
    spec, _ = load_model(model)
    opts = PredictOptions(tile=64, overlap=16, aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")},
                          labels=str(crop_dir / "raleigh_landcover.tif"))
    r = predict(model, crop_dir / "raleigh_vnir.tif", tmp_path, opts)
    assert {"recon_error_swir", "main_error"} <= set(r.outputs)
    rec = read(r.outputs["aux_swir"])
    real = read(crop_dir / "raleigh_swir.tif")
    err = read(r.outputs["recon_error_swir"])
    assert err.shape[0] == 3
    ok = (err[0] != -9999) & (real[0] != -99999)
    for i, band in enumerate(spec.aux[0].bands):
        expected = np.abs(rec[i] - real[i]) / band.std
        np.testing.assert_allclose(err[i + 1][ok], expected[ok], atol=0.0101)  # both packed in steps of 0.01 std
    np.testing.assert_allclose(err[0][ok], err[1:, ok].mean(0), atol=0.01)  # each packed in steps of 0.01
    classes, labels = read(r.outputs["main"]), read(crop_dir / "raleigh_landcover.tif")
    wrong = read(r.outputs["main_error"])
    labelled = wrong != 255
    assert labelled.mean() > 0.5
    np.testing.assert_array_equal(wrong[labelled], (classes != labels)[labelled])


def test_aux_truth_with_wrong_band_count_or_grid(model, crop_dir, tmp_path):
    vnir = crop_dir / "raleigh_vnir.tif"
    with pytest.raises(RasterError, match=r"has 4 band\(s\) but the model's 'swir' modality has 2"):
        predict(model, vnir, tmp_path, PredictOptions(aux_truth={"swir": str(vnir)}))
    shifted = tmp_path / "shifted.tif"  # another grid: warped onto the input's, as training does
    gdal.Translate(str(shifted), str(crop_dir / "raleigh_swir.tif"), srcWin=[5, 5, 100, 100])
    far = tmp_path / "far.tif"
    gdal.Translate(str(far), str(shifted), options="-a_ullr 0 100 100 0")
    with pytest.raises(RasterError, match="does not overlap the input raster"):
        predict(model, vnir, tmp_path, PredictOptions(aux_truth={"swir": str(far)}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.tif", "shifted.tif"]


def test_overviews_are_written_along_the_way(model, sample_config, tmp_path):
    """Overviews are filled strip by strip; they must equal 2 x 2 means of valid pixels of the full image."""
    r = predict(model, sample_config.parent / "raleigh_vnir.tif", tmp_path,
                PredictOptions(tile=128, overlap=24, products=("main", "confidence")))
    ds = gdal.Open(str(r.outputs["confidence"]))
    band = ds.GetRasterBand(1)
    full = unpack(band, band.ReadAsArray())  # packed (Byte): overviews are means of the values, packed again
    nodata = -9999.0  # FLOAT_NODATA, as the products compute
    assert band.GetOverviewCount() == 2  # 489 x 443: levels 2 and 4 keep at least 64 px
    ovr = band.GetOverview(0)
    assert (ovr.XSize, ovr.YSize) == (245, 222)
    padded = np.full((444, 490), nodata, dtype=np.float32)
    padded[:443, :489] = full
    blocks = padded.reshape(222, 2, 245, 2)
    valid = blocks != nodata
    count = valid.sum(axis=(1, 3))
    expected = np.where(count > 0, np.where(valid, blocks, 0).sum(axis=(1, 3)) / np.maximum(count, 1), nodata)
    np.testing.assert_allclose(unpack(band, ovr.ReadAsArray()), expected, atol=band.GetScale())  # one step
    classes_ds = gdal.Open(str(r.outputs["main"]))
    classes = classes_ds.GetRasterBand(1)
    np.testing.assert_array_equal(classes.GetOverview(1).ReadAsArray(), classes.ReadAsArray()[::4, ::4])


def test_column_chunks_blend_like_tiles_and_run_no_tile_twice(model, sample_config, tmp_path):
    """Chunks are tiled on their own and blended over the overlap like any two tiles: no tile runs twice,
    the result stays close to one pass, no seam shows at chunk borders, and overviews line up. Four
    chunks, so the middle ones both take the seam of the chunk before and leave one for the next."""
    scene = sample_config.parent / "raleigh_vnir.tif"  # 489 x 443 px
    raster = tmp_path / "wide.tif"  # the scene twice, side by side: 978 px, chunks of 256 px
    src = gdal.Open(str(scene))
    ds = gdal.GetDriverByName("GTiff").Create(str(raster), 978, 443, src.RasterCount, gdal.GDT_Float32)
    ds.SetProjection(src.GetProjection())
    ds.SetGeoTransform(src.GetGeoTransform())
    for b in range(1, src.RasterCount + 1):
        band, orig = ds.GetRasterBand(b), src.GetRasterBand(b)
        band.SetDescription(orig.GetDescription())
        if orig.GetNoDataValue() is not None:
            band.SetNoDataValue(orig.GetNoDataValue())
        band.WriteArray(np.hstack([orig.ReadAsArray()] * 2))
    del band, orig
    ds = src = None
    outs = {}
    for chunk in (256, 2048):
        out = tmp_path / str(chunk)
        out.mkdir()
        outs[chunk] = predict(model, raster, out, PredictOptions(tile=96, overlap=16, chunk=chunk,
                                                                 products=("probabilities", "aux")))
    bounds = [0, 256, 512, 768, 978]
    spans = {256: [t for lo, hi in zip(bounds, bounds[1:]) for t in tile_spans(lo, min(978, hi + 16), 96, 16, 8)],
             2048: tile_spans(0, 978, 96, 16, 8)}
    rows = len(tile_spans(0, 443, 96, 16, 8))
    for chunk, r in outs.items():
        assert r.tiles == rows * len(spans[chunk])
    one, two = (read(outs[c].outputs["probabilities"]) for c in (2048, 256))
    valid = (one != -9999).all(0) & (two != -9999).all(0)
    assert np.abs(one - two)[:, valid].mean() < 0.02

    def jump(p, c):  # mean change of probabilities between column c and the one before it
        v = valid[:, c] & valid[:, c - 1]
        return np.abs(p[:, v, c] - p[:, v, c - 1]).mean()

    columns = [c for c in range(1, 978) if (valid[:, c] & valid[:, c - 1]).sum() > 100]
    typical = np.median([jump(two, c) for c in columns])
    for border in bounds[1:-1]:  # the chunk border and the overlap after it
        assert max(jump(two, c) for c in range(border, border + 17) if c in columns) < 3 * typical
    aux = gdal.Open(str(outs[256].outputs["aux_swir"]))
    band = aux.GetRasterBand(1)
    full, ovr = unpack(band, band.ReadAsArray()), unpack(band, band.GetOverview(0).ReadAsArray())
    inside = (full[:-1:2, :-1:2] != -9999) & (full[1::2, 1::2] != -9999) & (full[:-1:2, 1::2] != -9999) \
        & (full[1::2, :-1:2] != -9999)
    quarter = (full[:-1:2, :-1:2] + full[1::2, 1::2] + full[:-1:2, 1::2] + full[1::2, :-1:2]) / 4
    np.testing.assert_allclose(ovr[:quarter.shape[0], :quarter.shape[1]][inside], quarter[inside],
                               atol=band.GetScale())  # one packing step
    with pytest.raises(ConfigError, match="multiple of 256"):
        predict(model, raster, tmp_path, PredictOptions(chunk=300))

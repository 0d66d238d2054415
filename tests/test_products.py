"""The product registry, the halo pass, the hillshade and error-probability products, and the package's layout."""

import ast
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from mtl_core.cli import build_parser
from mtl_core.engine import PredictOptions, explain, predict, products, run
from mtl_core.engine.product import Available, Layer, Product
from mtl_core.engine.products import REGISTRY, all_layers, hillshade, plan_layers, product
from mtl_core.errors import ConfigError
from mtl_core.io.raster import read_values
from mtl_core.explain.scores import DETECTOR_FEATURES
from mtl_core.explain.stats import LogisticDetector
from mtl_core.spec import FLOAT_NODATA, Band, Modality

from .conftest import make_spec

from .rasters import read

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("task", ["segmentation", "classification", "regression"])
def test_every_layer_has_a_unique_file_and_a_shipped_style(task):
    spec = make_spec(task)
    layers = list(all_layers(spec).values())
    assert len({layer.suffix for layer in layers}) == len(layers)
    for layer in layers:
        assert (ROOT / "resources" / "styles" / f"{layer.style}.qml").exists(), layer
        assert layer.title and layer.help, layer
    assert ("probabilities" in all_layers(spec)) == (task != "regression")


def test_the_cli_offers_exactly_the_tickable_products():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["predict"]
    choices = next(a for a in sub._actions if a.dest == "products").choices
    assert list(choices) == [p.name for p in REGISTRY if p.tickable]
    with pytest.raises(ConfigError, match="unknown product 'nope'; choose from main, confidence"):
        product("nope")


def test_layers_follow_what_the_run_has():
    spec = make_spec()
    keys = lambda available: [layer.key for _, layer in plan_layers(spec, [p.name for p in REGISTRY],  # noqa: E731
                                                                    available)]
    assert keys(Available()) == ["main", "confidence", "entropy", "probabilities", "aux_swir", "sensitivity",
                                 "sensitivity_swir"]
    assert set(keys(Available.everything(spec))) - set(keys(Available())) == {
        "recon_error_swir", "main_error", "error_score", "agreement", "error_probability"}
    # the real SWIR and labels, but a model file without an error model: no score, agreement or probability
    with_truth = set(keys(Available.of(spec, ["swir"], True)))
    assert with_truth - set(keys(Available())) == {"recon_error_swir", "main_error"}
    spec.training["error_model"] = {"threshold": 0.5, "detector": {"names": DETECTOR_FEATURES}}
    assert keys(Available.of(spec, ["swir"], True)) == keys(Available.everything(spec))
    # labels without the real SWIR: the main error only
    assert set(keys(Available(labels=True))) - set(keys(Available())) == {"main_error"}


def test_hillshade_in_windows_with_a_halo_matches_gdaldem(tmp_path):
    rng = np.random.default_rng(0)
    z = np.cumsum(np.cumsum(rng.normal(size=(70, 90)), 0), 1).astype(np.float32) * 3
    z[30:33, 40:44] = FLOAT_NODATA
    ds = gdal.GetDriverByName("MEM").Create("", 90, 70, 1, gdal.GDT_Float32)
    ds.SetGeoTransform((500000, 30, 0, 4000000, 0, -30))
    ds.GetRasterBand(1).WriteArray(z)
    ds.GetRasterBand(1).SetNoDataValue(FLOAT_NODATA)
    gdal.DEMProcessing(str(tmp_path / "hs.tif"), ds, "hillshade")
    reference = gdal.Open(str(tmp_path / "hs.tif")).ReadAsArray()
    out = np.zeros_like(reference)
    for y in range(0, 70, 16):  # windows of 16 x 32 px, each read one pixel beyond its sides where it can
        for x in range(0, 90, 32):
            h, w = min(16, 70 - y), min(32, 90 - x)
            top, bottom, left, right = min(1, y), min(1, 70 - y - h), min(1, x), min(1, 90 - x - w)
            block = z[y - top:y + h + bottom, x - left:x + w + right]
            out[y:y + h, x:x + w] = hillshade(block, FLOAT_NODATA, (top, bottom, left, right), (30.0, 30.0))
    np.testing.assert_array_equal(out, reference)
    assert (out[29:34, 39:45] == 0).all() and (out[1:-1, 1:-1] > 0).mean() > 0.9  # no shade beside nodata


class _MaxOfConfidence(Product):
    """A product made for this test: the 3 x 3 maximum of the confidence (halo 1)."""

    name, label, help, halo, source, tickable = "max_confidence", "3x3 max confidence", "test", 1, "confidence", True

    def layers(self, spec, available):
        return [Layer("max_confidence", "max_confidence", "Max confidence", "test", style="confidence")]

    def source_key(self, layer):
        return "confidence"

    def compute_halo(self, layer, source, source_layer, halo, pixel_size):
        return _max3(source[0], source_layer.nodata, halo)[None]


def _max3(a: np.ndarray, nodata: float, halo: tuple[int, int, int, int]) -> np.ndarray:
    a = np.where(a == nodata, -np.inf, a.astype(np.float64))
    p = np.pad(a, 1, constant_values=-np.inf)
    stack = [p[1 + dy:p.shape[0] - 1 + dy, 1 + dx:p.shape[1] - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    out = np.max(stack, axis=0).astype(np.float32)
    top, bottom, left, right = halo
    return out[top:out.shape[0] - bottom, left:out.shape[1] - right]


def test_a_new_halo_product_is_one_class_and_one_entry_and_its_windows_do_not_show(
        trained_model, crop_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(products, "REGISTRY", REGISTRY + [_MaxOfConfidence()])
    monkeypatch.setattr(run, "HALO_WINDOW", 16)  # windows of 16 rows x 128 columns over the 192 x 160 crop
    model, _ = trained_model
    result = predict(model, crop_dir / "raleigh_vnir.tif", tmp_path,
                     PredictOptions(products=("main", "max_confidence"), tile=64, overlap=8))
    assert set(result.outputs) == {"main", "confidence", "max_confidence"}  # the source comes along
    conf = read(result.outputs["confidence"])
    ds = gdal.Open(str(result.outputs["max_confidence"]))
    np.testing.assert_array_equal(ds.ReadAsArray(), _max3(conf, FLOAT_NODATA, (0, 0, 0, 0)))
    assert ds.GetRasterBand(1).GetOverviewCount() >= 1 and ds.GetRasterBand(1).GetDescription() == ""


def test_hillshade_of_a_reconstructed_elevation_is_offered_only_for_elevation():
    spec = make_spec()
    assert not product("hillshade").layers(spec, Available())
    spec.aux.append(Modality("dem", [Band("elevation", 120.0, 30.0)], "m"))
    (layer,) = product("hillshade").layers(spec, Available())
    assert (layer.key, layer.suffix, layer.dtype, layer.nodata) == ("hillshade_dem", "dem_hillshade", gdal.GDT_Byte, 0)
    assert [k for _, k in [(p, la.key) for p, la in plan_layers(spec, ["hillshade"], Available())]] == [
        "aux_swir", "aux_dem", "hillshade_dem"]


def test_error_probability_is_the_stored_detector_on_the_written_layers(trained_model, crop_dir, tmp_path):
    model, result = trained_model
    if not result.spec.training["error_model"].get("detector"):
        pytest.skip("the few-step model's validation blocks hold only one outcome: no detector was fitted")
    res = explain(model, crop_dir / "raleigh_vnir.tif", tmp_path,
                  PredictOptions(aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")},
                                 labels=str(crop_dir / "raleigh_landcover.tif"),
                                 products=("main", "confidence", "entropy", "recon_error", "error_score", "main_error",
                                           "error_probability"), float32=True))  # the layers as computed
    values = lambda key: read(res.outputs[key]).astype(np.float64)  # noqa: E731
    p = values("error_probability")
    ok = p != FLOAT_NODATA
    assert ok.mean() > 0.5 and (p[ok] >= 0).all() and (p[ok] <= 1).all()
    swir = read(res.outputs["recon_error_swir"])[1:]
    x = np.stack([values("entropy")[ok], 1 - values("confidence")[ok], values("error_score")[ok], swir.mean(0)[ok]],
                 1)
    detector = LogisticDetector.from_dict(result.spec.training["error_model"]["detector"])
    np.testing.assert_allclose(p[ok], detector.score(x), atol=2e-4)
    assert res.stats["detectors"]["combined"]["n"] == int((ok & (values("main_error") != 255)).sum())


def _imports(path: Path, package: str) -> set[str]:
    """The mtl_core modules a module imports, at any depth of its code (lazy imports count)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out |= {t for t in targets if t.startswith("mtl_core")}
    return out


def test_mtl_core_has_no_import_cycle_and_no_module_over_500_lines():
    modules = {}
    for path in (ROOT / "mtl_core").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = name if rel.name == "__init__" else ".".join(rel.parts[:-1])
        modules[name] = (path, package)
        assert len(path.read_text().splitlines()) <= 500, f"{path} is over 500 lines"
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring naming its job"
    graph = {name: {m for m in _imports(path, pkg) if m in modules and m != name and not name.startswith(m + ".")}
             for name, (path, pkg) in modules.items()}
    # package __init__ files re-export their modules; an edge into a package means its __init__
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["mtl_core.engine.run"] >= {"mtl_core.engine.products", "mtl_core.engine.blend"}


def test_bounded_layers_are_packed_with_scale_and_offset_and_read_back_as_float32(trained_model, crop_dir, tmp_path):
    """Packed integers (Byte/UInt16/Int16 + scale/offset, which GDAL and QGIS apply) hold the float32 values to
    half a step, nodata in the same place, in fewer bytes; --float32 writes them as computed."""
    model, _ = trained_model
    kinds = ("main", "confidence", "entropy", "probabilities", "aux", "recon_error", "error_score")
    runs = {}
    for float32 in (False, True):
        out = tmp_path / str(float32)
        out.mkdir()
        runs[float32] = predict(model, crop_dir / "raleigh_vnir.tif", out, PredictOptions(
            products=kinds, float32=float32, aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")}))
    packed, floats = runs[False].outputs, runs[True].outputs
    expected = {"confidence": gdal.GDT_Byte, "probabilities": gdal.GDT_Byte, "error_score": gdal.GDT_Byte,
                "entropy": gdal.GDT_Byte, "recon_error_swir": gdal.GDT_UInt16, "aux_swir": gdal.GDT_Int16}
    for key, dtype in expected.items():
        p, f = gdal.Open(str(packed[key])), gdal.Open(str(floats[key]))
        assert p.GetRasterBand(1).DataType == dtype and f.GetRasterBand(1).DataType == gdal.GDT_Float32, key
        step = max(p.GetRasterBand(i).GetScale() for i in range(1, p.RasterCount + 1))
        assert 0 < step < 0.05 * (np.nanmax(read_values(floats[key])) or 1), key
        a, b = read_values(packed[key]), read_values(floats[key])  # GDAL's scale/offset applied, nodata NaN
        assert (np.isnan(a) == np.isnan(b)).all() and np.isfinite(a).mean() > 0.5, key
        np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=step / 2 + 1e-6, err_msg=key)
        assert os.path.getsize(packed[key]) < os.path.getsize(floats[key]), key
    # The class map is not packed; packed reconstructions keep their band's own scale and offset (mean, std).
    np.testing.assert_array_equal(read(packed["main"]), read(floats["main"]))
    spec = runs[False].spec
    aux = gdal.Open(str(packed["aux_swir"]))
    for i, band in enumerate(spec.aux[0].bands, start=1):
        assert aux.GetRasterBand(i).GetOffset() == pytest.approx(band.mean)
        assert aux.GetRasterBand(i).GetScale() == pytest.approx(band.std / 100)


def test_packing_and_overview_means_against_plain_references(tmp_path):
    """Layer.encode (float32, in place) and Overviews._halve (pairs of rows, then columns) against the definitions
    written out slowly: the nearest step in float64, and the mean of each 2 x 2 block's valid pixels."""
    from mtl_core.engine.outputs import Overviews

    rng = np.random.default_rng(3)
    layer = Layer(key="x", suffix="x", title="x", help="x", bands=2, dtype=gdal.GDT_Int16, nodata=-32768,
                  scale=(0.01, 0.02), offset=(70.0, 80.0))
    data = rng.uniform(60, 90, size=(2, 64, 96)).astype(np.float32)
    data[:, 0, :3], data[0, 1, 0], data[1, 2, 0], data[0, 3, 1] = FLOAT_NODATA, np.nan, np.inf, 1e9
    stored = layer.encode(data)
    exact = (data.astype(np.float64) - np.array([70.0, 80.0])[:, None, None]) / np.array([0.01, 0.02])[:, None, None]
    finite = np.isfinite(exact) & (data != FLOAT_NODATA)
    assert (stored[~finite] == -32768).all() and stored[0, 3, 1] == 32767  # out of range: clipped, not nodata
    inside = finite & (np.abs(exact) < 32000)
    assert np.abs(stored[inside] - exact[inside]).max() <= 0.5 + 1e-3  # the nearest step (float32 breaks ties)
    assert np.abs(layer.decode(stored)[inside] - data[inside]).max() <= 0.01 + 1e-4

    ds = gdal.GetDriverByName("MEM").Create("", 96, 64, 1, gdal.GDT_Float32)
    over = Overviews(ds, FLOAT_NODATA, categorical=False)
    block = rng.uniform(0, 1, size=(1, 7, 9)).astype(np.float32)  # odd sizes: padded with nodata
    block[0, :2, :2] = FLOAT_NODATA  # a whole 2 x 2 block without data
    block[0, 2, 2] = FLOAT_NODATA  # a block with three valid pixels
    half = over._halve(block)
    padded = np.full((8, 10), np.nan, np.float64)
    padded[:7, :9] = np.where(block[0] == FLOAT_NODATA, np.nan, block[0])
    with warnings.catch_warnings():  # the all-nodata block's mean of nothing
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmean(padded.reshape(4, 2, 5, 2), axis=(1, 3))
    assert half.shape == (1, 4, 5) and half[0, 0, 0] == FLOAT_NODATA
    np.testing.assert_allclose(half[0][~np.isnan(expected)], expected[~np.isnan(expected)], rtol=1e-6)
    assert (half[0][np.isnan(expected)] == FLOAT_NODATA).all()
    full = rng.uniform(0, 1, size=(2, 6, 8)).astype(np.float32)  # no nodata: the fast path
    np.testing.assert_allclose(over._halve(full), full.reshape(2, 3, 2, 4, 2).mean(axis=(2, 4)), rtol=1e-6)

"""Styling of every product key (and unknown ones) from the QML templates, on real GeoTIFFs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr
from qgis.core import QgsRasterLayer

from mtl_core.io.styles import rgb_bands
from plugin.core.styling import apply_style, title

from ..conftest import make_spec


def _raster(path: Path, bands: int, dtype=gdal.GDT_Float32, values: np.ndarray | None = None) -> QgsRasterLayer:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 20, 10, bands, dtype)
    ds.SetGeoTransform((500000, 30, 0, 200000, 0, -30))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    ds.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(0)
    for i in range(1, bands + 1):
        data = values if values is not None else rng.random((10, 20)) * 100 * i
        ds.GetRasterBand(i).WriteArray(data)
    ds = None
    layer = QgsRasterLayer(str(path), path.stem)
    assert layer.isValid()
    return layer


@pytest.fixture
def spec() -> dict:
    return make_spec().to_dict()


def test_class_map_gets_the_models_classes(tmp_path, spec):
    layer = _raster(tmp_path / "classes.tif", 1, gdal.GDT_Byte, np.tile([1, 2, 5, 0], (10, 5)))
    assert apply_style(layer, "main", spec) == "paletted"
    classes = layer.renderer().classes()
    assert [(c.value, c.label, c.color.name()) for c in classes] == [
        (1, "a", "#ff0000"), (2, "b", "#00ff00"), (5, "c", "#0000ff")]


def test_regression_main_is_a_ramp_over_the_data(tmp_path):
    spec = make_spec("regression").to_dict()
    layer = _raster(tmp_path / "height.tif", 1)
    assert apply_style(layer, "main", spec) == "singlebandpseudocolor"
    r = layer.renderer()
    assert 0 <= r.classificationMin() < r.classificationMax() <= 100


def test_agreement_and_main_error_have_legends(tmp_path, spec):
    layer = _raster(tmp_path / "agreement.tif", 1, gdal.GDT_Byte, np.tile([1, 2, 3, 4], (10, 5)))
    assert apply_style(layer, "agreement", spec) == "paletted"
    labels = [c.label for c in layer.renderer().classes()]
    assert [c.value for c in layer.renderer().classes()] == [1, 2, 3, 4]
    assert "explained" in labels[1] and "unexplained" in labels[2]
    err = _raster(tmp_path / "main_error.tif", 1, gdal.GDT_Byte, np.tile([0, 1], (10, 10)))
    assert apply_style(err, "main_error", spec) == "paletted"
    assert [c.label for c in err.renderer().classes()] == ["correct", "wrong"]


def test_regression_main_error_is_continuous(tmp_path):
    layer = _raster(tmp_path / "abs_error.tif", 1)
    assert apply_style(layer, "main_error", make_spec("regression").to_dict()) == "singlebandpseudocolor"


@pytest.mark.parametrize("key", ["confidence", "entropy", "recon_error_swir", "error_score", "sensitivity",
                                 "sensitivity_swir", "probabilities"])
def test_continuous_products_get_a_colour_ramp(tmp_path, spec, key):
    layer = _raster(tmp_path / f"{key}.tif", 3 if key.startswith(("sensitivity", "prob", "recon")) else 1)
    assert apply_style(layer, key, spec) == "singlebandpseudocolor"
    items = layer.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert len(items) >= 2 and items[0].value < items[-1].value


def test_range_follows_the_data(tmp_path, spec):
    layer = _raster(tmp_path / "err.tif", 1, values=np.linspace(10, 20, 200).reshape(10, 20))
    apply_style(layer, "recon_error_swir", spec)
    r = layer.renderer()
    assert 10 <= r.classificationMin() < 11 and 19 < r.classificationMax() <= 20


def test_reconstruction_multiband_and_single_band(tmp_path, spec):
    two = _raster(tmp_path / "swir.tif", 2)
    assert apply_style(two, "aux_swir", spec) == "multibandcolor"
    r = two.renderer()
    assert (r.redBand(), r.greenBand(), r.blueBand()) == (2, 1, 1)
    one = _raster(tmp_path / "sar.tif", 1)
    assert apply_style(one, "aux_sar", spec) == "singlebandgray"


def test_unknown_keys_get_a_default(tmp_path, spec):
    assert apply_style(_raster(tmp_path / "new1.tif", 1), "something_new", spec) == "singlebandpseudocolor"
    assert apply_style(_raster(tmp_path / "new3.tif", 3), "something_else", spec) == "multibandcolor"


def test_rgb_bands_and_titles(spec):
    assert rgb_bands(["blue", "green", "red", "nir"]) == (3, 2, 1)
    assert rgb_bands(["a", "b", "c", "d"]) == (1, 2, 3)
    assert title("aux_swir", spec) == "swir (reconstructed)"
    assert title("recon_error_swir", spec) == "Reconstruction error — swir"
    assert title("agreement", spec) == "Error agreement"
    assert title("aux_sar", spec) == "sar (reconstructed)"  # a modality this model does not have
    assert title("something_new", spec) == "Something new"


def test_product_titles_go_through_qt_translation(spec):
    from qgis.PyQt.QtCore import QCoreApplication, QTranslator

    class French(QTranslator):  # what a loaded mtl_explain_fr.qm answers for this context
        def translate(self, context, text, disambiguation=None, n=-1):
            return {"Error agreement": "Concordance des erreurs"}.get(text) if context == "MtlExplainProducts" else None

        def isEmpty(self):  # noqa: N802 (Qt name)
            return False

    french = French()
    assert QCoreApplication.installTranslator(french)
    try:
        assert title("agreement", spec) == "Concordance des erreurs"
        assert title("confidence", spec) == "Confidence"  # no translation: the registry's text
    finally:
        QCoreApplication.removeTranslator(french)
    assert title("agreement", spec) == "Error agreement"


def test_cli_outputs_carry_the_plugins_styles(tiny_model, crop_dir, tmp_path):
    """``mtl explain`` writes a .qml beside every output; QGIS loads it when the raster is added by hand, and
    it is byte for byte the style the plugin gives the same layer."""
    from mtl_core.engine.runtime import read_spec

    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "mtl_core.cli", "-q", "explain", str(tiny_model),
                    str(crop_dir / "raleigh_vnir.tif"), "--aux", f"swir={crop_dir / 'raleigh_swir.tif'}", "--labels",
                    str(crop_dir / "raleigh_landcover.tif"), "--out", str(out), "--no-sensitivity"], check=True)
    tifs = sorted(out.glob("*.tif"))
    assert len(tifs) >= 8
    cli_styles = {t: t.with_suffix(".qml").read_bytes() for t in tifs}
    spec = read_spec(tiny_model).to_dict()
    by_file = {Path(v).name: k for k, v in _outputs(out, spec).items()}
    for tif, written in cli_styles.items():
        layer = QgsRasterLayer(str(tif), tif.stem)  # added by hand: QGIS loads the sidecar itself
        key = by_file[tif.name]
        expected_type = layer.renderer().type()
        assert apply_style(layer, key, spec) == expected_type != "", tif.name
        assert tif.with_suffix(".qml").read_bytes() == written, f"{tif.name}: the plugin's style is not the CLI's"
    main = next(t for t in tifs if by_file[t.name] == "main")
    classes = QgsRasterLayer(str(main), "classes")  # kept in a name: the layer owns the renderer
    assert [c.label for c in classes.renderer().classes()] == [c["name"] for c in spec["classes"]]


def _outputs(folder: Path, spec: dict) -> dict[str, str]:
    from mtl_core.engine.products import all_layers
    from mtl_core.spec import ModelSpec

    stem = "raleigh_vnir"
    layers = all_layers(ModelSpec.from_dict(spec))
    return {key: str(folder / f"{stem}_{layer.suffix}.tif") for key, layer in layers.items()
            if (folder / f"{stem}_{layer.suffix}.tif").exists()}


def _colours(layer: QgsRasterLayer) -> int:
    """Distinct opaque colours QGIS draws for a layer at 200 x 200 px (its renderer, as the canvas uses it)."""
    block = layer.renderer().block(1, layer.extent(), 200, 200)
    argb = np.frombuffer(bytes(block.data()), dtype=np.uint32)
    return len(np.unique(argb[(argb >> 24) > 0]))


def test_every_default_layer_of_a_run_shows_its_values(crop_dir, tiny_model, tmp_path):
    """Scaled layers are stored as small integers: a style fitted on the integers instead of the values QGIS shows
    (scale and offset applied) drew entropy and error score in one colour. Each layer is drawn as QGIS draws it."""
    from mtl_core.jobs import Job, run_job

    done = run_job(Job(kind="explain", model=str(tiny_model), raster=str(crop_dir / "raleigh_vnir.tif"),
                       out=str(tmp_path), aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")},
                       labels=str(crop_dir / "raleigh_landcover.tif"), device="cpu"))
    scaled = 0
    for key, path in done.outputs.items():
        layer = QgsRasterLayer(path, key)
        assert layer.isValid(), path
        apply_style(layer, key, done.spec)
        ds = gdal.Open(path)
        band = ds.GetRasterBand(1)
        data = band.ReadAsArray()
        nodata = band.GetNoDataValue()
        values = np.unique(data[data != nodata] if nodata is not None else data)
        scaled += (band.GetScale() or 1.0) != 1.0
        drawn = _colours(layer)
        assert drawn >= min(3, len(values)), f"{key}: {len(values)} values drawn in {drawn} colours"
    assert scaled >= 3  # entropy, error score, reconstruction error … are among them

"""The crop of the real sample and the tiny model the tests share, made the same way by the fixtures and by
tools/qgis344.sh, which prepares them on the host (PyTorch) for the QGIS 3.44 chroot (none):

    python -m tests.fixtures FOLDER   # FOLDER/crop/ (rasters + crop.yaml), FOLDER/tiny.mtl.onnx, FOLDER/reference/

``reference/`` holds the tiny model's prediction of the crop made on the host (its ONNX Runtime and numpy), which
the chroot's QGIS 3.44 run is compared with pixel for pixel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from osgeo import gdal

from mtl_core.spec import Architecture

CROP_FILES = ("raleigh_vnir.tif", "raleigh_swir.tif", "raleigh_landcover.tif")


def make_crop(sample_config: Path, out: Path) -> Path:
    """A 192 x 160 px crop of the real sample (all three rasters) in ``out``, with its own configuration."""
    raw = yaml.safe_load(sample_config.read_text())
    for key in CROP_FILES:
        gdal.Translate(str(out / key), str(sample_config.parent / key), srcWin=[100, 120, 192, 160])
    raw["split"] = {"block_size": 64, "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    (out / "crop.yaml").write_text(yaml.safe_dump(raw))
    return out


def train_tiny(crop_dir: Path, path: Path) -> Path:
    """A real mtl model (U-Net/resnet18, depth 3) trained for 4 steps on the crop, written to ``path``."""
    from mtl_core.config import load_config
    from mtl_core.modelfile import save_model
    from mtl_core.training.train import TrainOptions, train

    opts = TrainOptions(steps=4, batch_size=4, eval_every=4, device="cpu", seed=0,
                        architecture=Architecture(encoder_depth=3))
    result = train(load_config(crop_dir / "crop.yaml"), opts, progress=False)
    save_model(path, result.spec, result.state_dict)
    return path


def main(folder: Path) -> None:
    from mtl_core.engine.run import PredictOptions, predict
    from mtl_core.sample_data import prepare_sample
    from mtl_core.training.export import export_onnx

    (folder / "crop").mkdir(parents=True, exist_ok=True)
    crop = make_crop(prepare_sample("raleigh"), folder / "crop")
    export_onnx(train_tiny(crop, folder / "tiny.mtl.safetensors"), folder / "tiny.mtl.onnx")
    (folder / "reference").mkdir()
    predict(folder / "tiny.mtl.onnx", crop / "raleigh_vnir.tif", folder / "reference",
            PredictOptions(device="cpu", backend="onnx"))


if __name__ == "__main__":
    gdal.UseExceptions()
    main(Path(sys.argv[1]))

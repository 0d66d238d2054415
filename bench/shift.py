"""Benchmark of the third claim under shift: do reconstruction errors flag main-task errors in areas unlike the
training area, where the model's own confidence may not?

Not a test: it trains and explains, then prints what it measured. Usage::

    .venv/bin/python bench/shift.py [--seeds 0 1 2] [--steps 300] [--threads 2] [--shifts east class]

On the real sample scene (Landsat 7, Raleigh; VNIR in, SWIR reconstructed), for each shift and seed it trains the
``mtl`` variant (U-Net/ResNet-18, depth-3 encoder, like the bundled model) on part of the scene only, then runs
``mtl explain`` with the real SWIR and labels where the model was not trained, and reads the report's statistics:

* ``east``: trained on the western 55 % of the scene (a crop: the east is never seen), scored on the eastern 45 %;
* ``class``: trained on the whole scene with one class (``--class``, default water) removed from the labels and
  from the SWIR targets (the network sees those input pixels, but is never taught their class nor their SWIR),
  scored on the whole scene;
* ``none``: the reference, trained as usual (on its training blocks) and scored on its held-out test blocks.

For reconstruction error (mean over SWIR bands), entropy and 1 - confidence it prints, as mean ± sd over seeds:
AUROC of the score for "the class is wrong" over all labelled pixels; AUROC among the confident half (confidence
at least its median); and "caught": the share of confident errors the score flags at 10 % false alarms on confident
correct pixels (chance = 0.10).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCORES = {"recon_error_mean": "reconstruction error", "entropy": "entropy", "one_minus_confidence": "1 - confidence"}


def _crop(src: Path, dst: Path, width_share: float) -> None:
    from osgeo import gdal

    ds = gdal.Open(str(src))
    gdal.Translate(str(dst), ds, srcWin=[0, 0, int(ds.RasterXSize * width_share), ds.RasterYSize])


def _without_class(folder: Path, sample: Path, value: int) -> None:
    """Labels and SWIR targets with one class's pixels set to nodata."""
    from osgeo import gdal

    labels = gdal.Open(str(sample / "raleigh_landcover.tif")).ReadAsArray()
    for name in ("raleigh_landcover.tif", "raleigh_swir.tif"):
        out = gdal.Translate(str(folder / name), str(sample / name))
        for b in range(1, out.RasterCount + 1):
            band = out.GetRasterBand(b)
            arr = band.ReadAsArray()
            arr[labels == value] = band.GetNoDataValue()
            band.WriteArray(arr)
        out = None


def run_one(shift: str, seed: int, steps: int, threads: int, hold_out: str, tmp: Path) -> dict:
    import torch
    import yaml

    from mtl_core.config import load_config
    from mtl_core.engine import PredictOptions, explain
    from mtl_core.modelfile import save_model
    from mtl_core.sample_data import prepare_sample
    from mtl_core.spec import Architecture
    from mtl_core.training.train import TrainOptions, train

    torch.set_num_threads(threads)
    config = prepare_sample("raleigh")
    sample = config.parent
    raw = yaml.safe_load(config.read_text())
    folder = tmp / f"{shift}_{seed}"
    folder.mkdir()
    value = next(int(v) for v, c in raw["labels"]["classes"].items() if c["name"] == hold_out)
    names = ("raleigh_vnir.tif", "raleigh_swir.tif", "raleigh_landcover.tif")
    if shift == "east":
        for name in names:
            _crop(sample / name, folder / name, 0.55)
        raw["split"] = {**raw["split"], "test_fraction": 0.0}  # nothing of the crop held out: the east is the test
    elif shift == "class":
        (folder / "raleigh_vnir.tif").symlink_to(sample / "raleigh_vnir.tif")
        _without_class(folder, sample, value)
    else:
        for name in names:
            (folder / name).symlink_to(sample / name)
    (folder / "shift.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(folder / "shift.yaml")
    start = time.perf_counter()
    result = train(cfg, TrainOptions(variant="mtl", steps=steps, batch_size=16, eval_every=50, device="cpu",
                                     seed=seed, architecture=Architecture(encoder_depth=3)), progress=False)
    trained = time.perf_counter() - start
    model = folder / "model.mtl.safetensors"
    save_model(model, result.spec, result.state_dict)
    extent, split = None, "all"
    if shift == "east":
        from osgeo import gdal

        ds = gdal.Open(str(sample / "raleigh_vnir.tif"))
        x0, dx, _, y0, _, dy = ds.GetGeoTransform()
        extent = (x0 + int(ds.RasterXSize * 0.55) * dx, y0 + ds.RasterYSize * dy, x0 + ds.RasterXSize * dx, y0)
    elif shift == "none":
        split = "test"
    out = folder / "out"
    out.mkdir()
    opts = PredictOptions(aux_truth={"swir": str(sample / "raleigh_swir.tif")},
                          labels=str(sample / "raleigh_landcover.tif"), extent=extent, threads=threads,
                          products=("main", "confidence", "entropy", "recon_error", "main_error"))
    stats = explain(model, sample / "raleigh_vnir.tif", out, opts, split=split).stats
    row = {"trained_s": trained, "accuracy": stats["metrics"]["overall_accuracy"],
           "confident_wrong": stats["confident"]["wrong"], "confident_pixels": stats["confident"]["pixels"]}
    for key in SCORES:
        row[f"{key}/auroc"] = stats["detectors"][key]["auroc"]
        row[f"{key}/confident_auroc"] = stats["confident"]["detectors"][key]["auroc"]
        row[f"{key}/caught"] = stats["confident"]["detectors"][key]["caught"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300, help="training steps per model (default 300)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shifts", nargs="+", default=["none", "east", "class"], choices=["none", "east", "class"])
    p.add_argument("--class", dest="hold_out", default="water", help="class held out by the 'class' shift")
    args = p.parse_args()
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shift in args.shifts:
            for seed in args.seeds:
                row = run_one(shift, seed, args.steps, args.threads, args.hold_out, Path(tmp))
                rows.setdefault(shift, []).append(row)
                print(f"{shift} seed {seed}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                           for k, v in row.items()), flush=True)

    def cell(shift: str, key: str) -> str:
        v = np.array([r[key] for r in rows[shift]], dtype=float)
        return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"

    print(f"\nSample scene, {len(args.seeds)} seeds ({' '.join(map(str, args.seeds))}), {args.steps} steps; "
          "mean ± sd over seeds")
    print("| shift | accuracy | score | AUROC, all labelled | AUROC, confident half | confident errors caught "
          "at 10 % false alarms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shift in rows:
        for key, label in SCORES.items():
            print(f"| {shift} | {cell(shift, 'accuracy')} | {label} | {cell(shift, key + '/auroc')} | "
                  f"{cell(shift, key + '/confident_auroc')} | {cell(shift, key + '/caught')} |")


if __name__ == "__main__":
    main()

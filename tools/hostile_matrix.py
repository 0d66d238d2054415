"""Run a matrix of hostile and unusual inputs through the ``mtl`` command line; one line per case, then a summary.

Usage: ``.venv/bin/python tools/hostile_matrix.py [--keep DIR]``. Needs the sample scene (``mtl sample-data``) and
the bundled model. Each case builds its files in a fresh folder, runs ``mtl`` in a subprocess and checks what a
user needs: the exit status, one clear error line on stderr and no traceback, nothing left in the output folder
after a failure, and the user's own files untouched. Exit status 1 when a case falls short. The pytest suite
holds the same classes of case as tests (``tests/test_hostile.py``); this script is the quick re-run by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "resources" / "default_model.mtl.onnx"


def _digest(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def cases(sample: Path) -> list[tuple[str, Callable[[Path], tuple[list[str], list[Path], bool]]]]:
    """(name, setup): setup(folder) returns the mtl arguments, the user's files that must not change, and whether
    the run should succeed."""
    from osgeo import gdal

    vnir, swir, labels = (sample / f"raleigh_{n}.tif" for n in ("vnir", "swir", "landcover"))
    config = sample / "raleigh.yaml"

    def copy(folder: Path, src: Path, name: str | None = None) -> Path:
        dst = folder / (name or src.name)
        shutil.copy(src, dst)
        return dst

    def existing_output(f):
        r = copy(f, vnir)
        (f / "out").mkdir()
        mine = f / "out" / "raleigh_vnir_classes.tif"
        mine.write_bytes(b"the user's own file")
        return ["predict", str(MODEL), str(r), "--out", str(f / "out")], [mine], False

    def labels_as_output(f):
        r, lab = copy(f, vnir), copy(f, labels, "raleigh_vnir_classes.tif")
        return ["explain", str(MODEL), str(r), "--labels", str(lab), "--out", str(f)], [lab, r], False

    def truncated(f):
        cut = f / "cut.tif"
        cut.write_bytes(vnir.read_bytes()[:100_000])
        return ["predict", str(MODEL), str(cut), "--out", str(f / "out")], [cut], False

    def vrt_missing_source(f):
        src = copy(f, vnir, "gone.tif")
        gdal.BuildVRT(str(f / "m.vrt"), [str(src)]).FlushCache()
        src.unlink()
        return ["predict", str(MODEL), str(f / "m.vrt"), "--out", str(f / "out")], [], False

    def text_as_onnx(f):
        fake = f / "model.onnx"
        fake.write_text("not a model")
        return ["predict", str(fake), str(vnir), "--out", str(f / "out")], [fake], False

    def garbage_safetensors(f):
        fake = f / "model.mtl.safetensors"
        fake.write_bytes(b"\xff" * 64)
        return ["predict", str(fake), str(vnir), "--out", str(f / "out")], [fake], False

    def south_up(f):
        ds = gdal.Translate(str(f / "south.tif"), str(vnir))
        x0, dx, rx, y0, ry, dy = ds.GetGeoTransform()
        ds.SetGeoTransform((x0, dx, rx, y0 + dy * ds.RasterYSize, ry, -dy))
        ds.WriteArray(ds.ReadAsArray()[:, ::-1, :])
        ds = None
        return ["predict", str(MODEL), str(f / "south.tif"), "--out", str(f / "out")], [], True

    def split_elsewhere(f):
        part, part_labels = f / "part.tif", f / "part_labels.tif"
        gdal.Translate(str(part), str(vnir), srcWin=[40, 40, 300, 300])
        gdal.Translate(str(part_labels), str(labels), srcWin=[40, 40, 300, 300])
        return (["explain", str(MODEL), str(part), "--labels", str(part_labels), "--split", "test", "--out",
                 str(f / "out")], [part, part_labels], False)

    def simple(args: list[str], ok: bool = False):
        return lambda f: ([a.format(out=f / "out", f=f) for a in args], [], ok)

    base = [str(MODEL), str(vnir), "--out", "{out}"]
    return [
        ("an existing output, no --overwrite", existing_output),
        ("labels named like an output", labels_as_output),
        ("wrong band count (SWIR as input)", simple(["predict", str(MODEL), str(swir), "--out", "{out}"])),
        ("empty extent", simple(["predict", *base, "--extent", "10", "10", "10", "20"])),
        ("extent outside the raster", simple(["predict", *base, "--extent", "0", "0", "1", "1"])),
        ("infinite extent", simple(["predict", *base, "--extent", "-inf", "0", "inf", "1"])),
        ("truncated TIFF", truncated),
        ("VRT whose source is missing", vrt_missing_source),
        ("a text file named .onnx", text_as_onnx),
        ("a garbage .safetensors", garbage_safetensors),
        ("--batch 0", simple(["predict", *base, "--batch", "0"])),
        ("--chunk 300", simple(["predict", *base, "--chunk", "300"])),
        ("--out is a file", simple(["predict", str(MODEL), str(vnir), "--out", str(vnir)])),
        ("--aux with the optical bands", simple(["explain", *base, "--aux", f"swir={vnir}"])),
        ("--split test on another raster", split_elsewhere),
        ("--aux-bands out of range", simple(["explain", *base, "--aux", f"swir={swir}", "--aux-bands", "swir=1,9"])),
        ("--threads -1", simple(["predict", *base, "--threads", "-1"])),
        ("train --steps 0", simple(["train", str(config), "--out", "{out}/m.mtl.safetensors", "--steps", "0"])),
        ("train --lr -1", simple(["train", str(config), "--out", "{out}/m.mtl.safetensors", "--lr", "-1"])),
        ("train --aux-weight abc", simple(["train", str(config), "--out", "{out}/m.mtl.safetensors",
                                           "--aux-weight", "abc"])),
        ("train --aux-weight unknown=2", simple(["train", str(config), "--out", "{out}/m.mtl.safetensors",
                                                 "--aux-weight", "unknown=2"])),
        ("evaluate given an .onnx", simple(["evaluate", str(MODEL), str(config)])),
        ("export given an .onnx", simple(["export", str(MODEL), "--onnx", "{out}/m.onnx"])),
        ("south-up raster (works)", south_up),
        ("a missing --out folder is created (works)", simple(["predict", *base], ok=True)),
    ]


def run_case(name: str, setup, folder: Path) -> tuple[bool, str]:
    args, keep, should_succeed = setup(folder)
    before = _digest(keep)
    done = subprocess.run([sys.executable, "-m", "mtl_core.cli", "-q", *args], capture_output=True, text=True,
                          cwd=folder, timeout=600)
    lines = [line for line in done.stderr.strip().splitlines() if "error:" in line]  # (argparse adds its usage)
    problems = []
    if should_succeed != (done.returncode == 0):
        problems.append(f"exit {done.returncode}")
    if "Traceback" in done.stderr:
        problems.append("traceback")
    if not should_succeed and len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    if _digest(keep) != before:
        problems.append("a user's file changed")
    out = folder / "out"
    if not should_succeed and out.is_dir() and any(p for p in out.iterdir() if p.name != "raleigh_vnir_classes.tif"):
        problems.append("files left in the output folder")
    said = lines[-1] if lines else "(no message)"
    return not problems, f"{'ok  ' if not problems else 'FAIL'} {name:<45} {', '.join(problems) or said[:150]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", type=Path, help="build the cases' files here and keep them (default: a temporary folder)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from mtl_core.sample_data import prepare_sample

    sample = prepare_sample("raleigh").parent
    root = args.keep or Path(tempfile.mkdtemp(prefix="mtl-hostile-"))
    results = []
    for i, (name, setup) in enumerate(cases(sample)):
        folder = root / f"case{i:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        ok, line = run_case(name, setup, folder)
        print(line, flush=True)
        results.append(ok)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{sum(results)} of {len(results)} cases as a user needs them")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

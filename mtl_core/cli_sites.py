"""``mtl propose-sites`` (where to label next) and the ``--aux`` options it shares with ``mtl explain``."""

from __future__ import annotations

import argparse

from .errors import MtlError


def aux_args(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, list[int]]]:
    """``--aux NAME=PATH`` and ``--aux-bands NAME=N,N`` as mappings."""
    aux = {}
    for item in args.aux or []:
        name, _, path = item.partition("=")
        if not name or not path:
            raise MtlError(f"--aux {item!r} must look like NAME=PATH, e.g. swir=swir.tif")
        aux[name] = path
    aux_bands = {}
    for item in args.aux_bands or []:
        name, _, numbers = item.partition("=")
        try:
            aux_bands[name] = [int(n) for n in numbers.split(",")]
        except ValueError:
            raise MtlError(f"--aux-bands {item!r} must look like NAME=N,N,…, e.g. swir=5,6") from None
    return aux, aux_bands


def aux_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aux", action="append", metavar="NAME=PATH",
                   help="real raster of an auxiliary modality (repeatable), e.g. swir=swir.tif; on another grid it is "
                        "warped onto the input's (bilinear), as training does")
    p.add_argument("--aux-bands", action="append", metavar="NAME=N,N",
                   help="bands of an --aux raster holding the modality's bands, in its order (repeatable), e.g. "
                        "swir=5,6 for a 7-band stack (default: by band description, else 1..K)")


def cmd_propose_sites(args: argparse.Namespace) -> int:
    from .engine import PredictOptions
    from .engine import propose_sites

    aux, aux_bands = aux_args(args)
    opts = PredictOptions(aux_truth=aux, aux_bands=aux_bands, bands=args.bands, mask=args.mask, device=args.device,
                          extent=tuple(args.extent) if args.extent else None, threads=args.threads)
    result = propose_sites(args.model, args.raster, args.out, opts, count=args.count, min_distance_m=args.min_distance,
                           strategy=args.strategy, size=args.size, seed=args.seed, progress=not args.quiet)
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    print(f"{len(result.sites)} site(s) of {result.cells} candidate squares, ranked by {result.strategy}"
          + (f" ({result.note})" if result.note else "") + f": {result.path}")
    for site in result.sites:
        print(f"  {site.rank:>3}  {site.kind:<13} score {site.score:.3f}  predicted "
              f"{result.classes.get(site.cell.predicted, site.cell.predicted)}")
    return 0


def add_propose_sites(sub, positive, positive_float) -> None:
    """The ``propose-sites`` sub-command (``positive``, ``positive_float``: the CLI's argument types)."""
    ps = sub.add_parser("propose-sites", help="propose where to label next (a GeoPackage of sites)",
                        description="Run a segmentation model on a raster and propose COUNT square sites (the model's "
                                    "patch size) to label next, spread over the area, best first, each with its "
                                    "score, predicted class and why it was chosen. Strategies: entropy (where the "
                                    "model hesitates; needs nothing else), error (the model's stored error detector), "
                                    "flagged (confident pixels whose real auxiliary modality is unusual for the "
                                    "predicted class), mix (entropy and flagged in turn), random. error, flagged and "
                                    "mix need the real auxiliary rasters (--aux); without them entropy is used and "
                                    "the output says so. Written to a new GeoPackage with its QGIS style beside it "
                                    "(<name>.qml); its empty 'class' field is there to fill.")
    ps.add_argument("model", help="model file (segmentation)")
    ps.add_argument("raster", help="input raster holding the model's input bands")
    ps.add_argument("--out", required=True, help="GeoPackage to write (a new file, e.g. sites.gpkg)")
    aux_arguments(ps)
    ps.add_argument("--count", type=positive, default=20, help="number of sites (default: 20)")
    ps.add_argument("--min-distance", type=positive_float, metavar="METRES",
                    help="least distance between two sites' centres in metres, map units for a CRS in degrees "
                         "(default: twice the site size)")
    ps.add_argument("--size", type=positive, metavar="PX",
                    help="site size in pixels (default: the model's patch size)")
    ps.add_argument("--strategy", choices=["entropy", "error", "flagged", "mix", "random"],
                    help="how sites are ranked (default: entropy: in docs/results.md no strategy beats it "
                         "clearly, and it needs no auxiliary raster)")
    ps.add_argument("--seed", type=int, default=0, help="seed of the random strategy (default: 0)")
    ps.add_argument("--extent", type=float, nargs=4, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                    help="propose only inside this extent (the raster's CRS)")
    ps.add_argument("--mask", help="polygon layer or raster (non-zero inside): propose only inside it")
    ps.add_argument("--bands", type=positive, nargs="+", metavar="N",
                    help="raster band feeding each model input band (default: by band description, else 1..N)")
    ps.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    ps.add_argument("--threads", type=positive, help="CPU threads for the backend")
    ps.set_defaults(func=cmd_propose_sites)

"""Distributed runs: one prediction split into shards along the engine's chunk grid, run by Dask workers, merged
into exactly the outputs of a single run.

``PredictOptions.workers`` starts a ``dask.distributed`` LocalCluster of that many processes on this machine;
``PredictOptions.scheduler`` uses a running scheduler (a cluster the user runs: dask-jobqueue on Slurm, Kubernetes
…), whose workers read the model, the rasters and the output folder under the same paths. Dask does the
scheduling, the retries and the dashboard.

A shard is a run of consecutive column chunks (:meth:`~mtl_core.engine.tiling.Plan.shard`): it also runs the
batches of the chunk before it whose tiles reach into its first columns and blends what they put there exactly as
one run blends chunk seams, so every shard's columns equal the single run's. Each worker opens the model once
(ONNX Runtime or PyTorch, with the cores of its machine shared among the workers on it) and writes its shard's
layers as float32 GeoTIFFs into a scratch folder beside the outputs. The driver then copies them, in strips, into
the run's own output files, packed and with overviews as a single run writes them (one GeoTIFF or COG per layer;
the copy is one sequential pass, measured in docs/scale.md), computes the halo products from the merged layers,
merges the shards' statistics (``Sink.merge``) and renames the outputs together. With ``PredictOptions.vrt`` there
is no copy: each worker writes its shard's layers as final files (packed, compressed, with the whole run's overview
levels), they are moved into a folder ``<stem>_shards-<id>`` beside the outputs, and each layer is a VRT over them
with their overviews as its own (one shard per worker, since there is no copy to overlap). A cancelled or failed
run leaves neither outputs nor scratch files.

Errors: a shard that meets a mistake in the input (an :class:`~mtl_core.errors.MtlError`: bad bands, nodata, an
unreadable window …) fails the run with its message at once, since running it again would meet it again; any
other failure (a crash, a killed worker) is retried once by Dask, then fails the run with the shard's message.
Patch classification is sharded the same way, along chunks of whole cells (no overlap, so no seam batches).
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CancelledError, ConfigError, MtlError
from ..io.raster import Grid, open_raster
from .inputs import Truth, check_input, run_inputs
from .outputs import Outputs
from .run import PredictOptions, PredictResult, _halo_pass, chosen_layers, input_range_warnings
from .run import predict as predict_here
from .runtime import open_runner
from .tiling import Plan, extent_window, sub_grid

log = logging.getLogger(__name__)

#: Rows of the strips shards are copied into the outputs in.
MERGE_ROWS = 256
#: Seconds between a shard's progress reports (and its looks at the cancel flag).
REPORT_EVERY = 0.5
#: Shards per worker when they are copied into one file per layer (more: the copy of the first ones overlaps the
#: others, and a slow or restarted worker holds up less of the run, but each shard repeats a tile column). A ``vrt``
#: run has nothing to overlap: one shard per worker (bench/sharded.py, 2 workers: 1.13x the single run's speed,
#: 0.88x with two shards each).
SHARDS_PER_WORKER = 2
DASK_MISSING = ("--workers and --scheduler need Dask: install it into the Python that runs mtl with "
                "pip install 'dask[distributed]==2026.8.0'")


def shard_ranges(chunks: int, workers: int, per_worker: int = SHARDS_PER_WORKER) -> list[tuple[int, int]]:
    """Split ``chunks`` column chunks into at most ``per_worker`` x ``workers`` shards of consecutive chunks, as
    even as can be."""
    n = max(1, min(chunks, per_worker * workers))
    edges = [round(i * chunks / n) for i in range(n + 1)]
    return list(zip(edges, edges[1:]))


_OPENED: dict[tuple, Any] = {}  # per worker process: (model, backend, device, threads) -> (spec, runner)


def _keep_freed_memory() -> None:
    """Let glibc's malloc keep freed memory in this worker process, as it does in a plain process.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes glibc's mmap threshold at
    128 KiB: every batch-sized array is then mapped and unmapped afresh, page faults and all (a shard ran 30 %
    slower in a worker than in a plain process: 5.5 s against 4.2 s for 180 tiles). The thresholds set here are
    the largest glibc's own dynamic ones reach (32 MiB, trim at twice that). Elsewhere (not glibc) it does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _worker_threads(threads: int | None, slots: dict[str, int]) -> int:
    """The backend threads of one shard: as asked, else this machine's cores over the shards it runs at once."""
    if threads:
        return threads
    from distributed import get_worker

    host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
    return max(1, (os.cpu_count() or 1) // max(1, slots.get(host, 1)))


def _run_shard(model_path: str, raster_path: str, scratch: str, opts, chunks: tuple[int, int], run_id: str,
               slots: dict[str, int], sink) -> dict[str, Any]:
    """One shard, on a Dask worker: its layers in a fresh folder under ``scratch``, its statistics, its counts.
    A mistake in the input comes back as ``{"error": …}`` (not raised: Dask would retry it)."""
    from distributed import Event, Queue

    threads = _worker_threads(opts.threads, slots)
    key = (model_path, opts.backend, opts.device, threads)
    try:
        if key not in _OPENED:
            _keep_freed_memory()
            _OPENED[key] = open_runner(model_path, opts.backend, opts.device, threads)
        folder = Path(scratch) / uuid.uuid4().hex  # an attempt of its own: a killed one leaves only its folder
        folder.mkdir(parents=True)
        cancel, queue = Event(f"mtl-cancel-{run_id}"), Queue(f"mtl-progress-{run_id}")
        last, stop = [0.0, 0.0], [False]  # when progress was last sent and the cancel flag last read; the flag

        def progress(fraction: float) -> None:
            if fraction >= 1 or time.monotonic() - last[0] > REPORT_EVERY:
                last[0] = time.monotonic()
                queue.put((chunks[0], fraction))

        def cancelled() -> bool:  # a round trip to the scheduler: at most every REPORT_EVERY seconds
            if not stop[0] and time.monotonic() - last[1] > REPORT_EVERY:
                last[1] = time.monotonic()
                stop[0] = cancel.is_set()
            return stop[0]

        result = predict_here(model_path, raster_path, folder, dataclasses.replace(opts, threads=threads),
                              progress, cancelled, sink, _OPENED[key], shard=chunks)
    except MtlError as exc:
        return {"error": exc}
    return {"outputs": {k: str(v) for k, v in result.outputs.items()}, "sink": sink, "seen": result.seen,
            "tiles": result.tiles, "skipped": result.skipped_tiles, "seconds": result.seconds, "device": result.device,
            "warped": result.warped}


class _Cluster:
    """The Dask client of a run: a LocalCluster of ``workers`` processes, or a client of ``scheduler``."""

    def __init__(self, workers: int | None, scheduler: str | None, stack: ExitStack) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ConfigError(DASK_MISSING) from exc
        for name in ("distributed", "bokeh", "tornado"):  # Dask's start-up chatter would drown the run's own log
            if logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
                logging.getLogger(name).setLevel(logging.WARNING)
        if workers is not None and scheduler:
            raise ConfigError("give --workers (a cluster on this machine) or --scheduler (a running one), not both")
        if scheduler:
            try:
                self.client = stack.enter_context(Client(scheduler, timeout="10s"))
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); check the address "
                                  "(e.g. tcp://host:8786) and that the scheduler is running") from exc
        else:
            if not workers or workers < 1:
                raise ConfigError(f"--workers {workers} must be at least 1")
            import dask

            # Dask's statistical profiler samples every worker thread every 10 ms, holding the GIL (bench/sharded.py:
            # 14.4 -> 14.0 s without it). The workers get the configuration they are started with.
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                           dashboard_address=":0", silence_logs=logging.ERROR))
            self.client = stack.enter_context(Client(cluster))
        info = self.client.scheduler_info()["workers"]
        if not info:
            raise ConfigError(f"the Dask scheduler at {scheduler!r} has no workers; start some (dask worker "
                              f"{scheduler}) and run again")
        self.slots: dict[str, int] = {}  # host -> shards it runs at once
        for w in info.values():
            self.slots[w["host"]] = self.slots.get(w["host"], 0) + w["nthreads"]
        self.workers = sum(self.slots.values())
        log.info("running on %d Dask worker thread(s); dashboard: %s", self.workers, self.client.dashboard_link)


def predict(model_path, raster_path, out_dir, opts: PredictOptions | None = None,
            progress: bool | Callable[[float], None] = False, cancelled: Callable[[], bool] | None = None, sink=None,
            opened=None) -> PredictResult:
    """The engine's entry point (``mtl_core.engine.predict``): :func:`mtl_core.engine.run.predict` in this process,
    or sharded on Dask when ``opts.workers`` or ``opts.scheduler`` is set; same arguments, result and errors."""
    opts = opts or PredictOptions()
    if opts.vrt and not (opts.workers or opts.scheduler):
        raise ConfigError("--vrt writes a sharded run's layers as VRTs over its shards: give it with --workers N or "
                          "--scheduler ADDRESS (a single run writes one file per layer anyway)")
    if opts.workers or opts.scheduler:
        return predict_sharded(model_path, raster_path, out_dir, opts, progress, cancelled, sink, opened)
    return predict_here(model_path, raster_path, out_dir, opts, progress, cancelled, sink, opened)


def predict_sharded(model_path, raster_path, out_dir, opts, progress: bool | Callable[[float], None] = False,
                    cancelled: Callable[[], bool] | None = None, sink=None, opened=None):
    """:func:`~mtl_core.engine.run.predict` on Dask workers (see the module docstring); same arguments and result.

    Raises:
        ConfigError: Dask is missing, no scheduler answers, or both ``workers`` and ``scheduler`` are given.
        MtlError: what a shard met (the first failed shard's message), or what a single run would refuse.
        CancelledError: the run was cancelled (nothing is left behind).
    """
    start = time.perf_counter()
    model_path, raster_path = str(Path(model_path).resolve()), str(Path(raster_path).resolve())
    spec, runner = opened or open_runner(model_path, opts.backend, opts.device, opts.threads)
    chosen = chosen_layers(spec, opts)
    ds = open_raster(raster_path, "input raster")
    check_input(spec, ds, opts.bands)
    grid = Grid.of(ds)
    win = extent_window(grid, opts.extent)
    plan = Plan.of(spec, win[2], win[3], runner.divisor, opts.tile, opts.overlap, opts.chunk, opts.batch_size)

    shard_opts = _shard_options(opts)
    result = PredictResult(grid=sub_grid(grid, win), tiles=plan.tiles, spec=spec)
    Truth(spec, grid, opts.aux_truth or {}, opts.labels, opts.labels_band, opts.aux_bands,  # its mistakes, now
          opts.labels_field)
    with ExitStack() as stack:
        def forget_shards(failed, *_) -> None:  # last: after the outputs' renames, which may fail too
            if failed and result.shards:
                shutil.rmtree(result.shards, ignore_errors=True)

        stack.push(forget_shards)
        if progress is True:  # the command line's bar, over the shards' tiles
            from tqdm import tqdm

            bar = tqdm(total=100, desc="predict", bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
            stack.callback(bar.close)
            progress = lambda f: bar.update(round(100 * f) - bar.n)  # noqa: E731
        # The outputs are created (and refused if they exist) before anything is computed, as in a single run.
        outputs = Outputs([layer for _, layer in chosen], result.grid, sub_grid(grid, win, plan.cell), Path(out_dir),
                          Path(raster_path).stem, opts.cog, stack,
                          run_inputs(raster_path, opts.aux_truth, opts.labels, opts.mask), opts.overwrite,
                          mosaics=[layer.key for product, layer in chosen if opts.vrt and not product.halo])
        tick = time.perf_counter()
        cluster = _Cluster(opts.workers, opts.scheduler, stack)
        shards = shard_ranges(len(plan.spans), cluster.workers, 1 if opts.vrt else SHARDS_PER_WORKER)
        if len(shards) < cluster.workers:
            log.warning("the run has %d column chunk(s) of --chunk %d px, so %d shard(s) for %d Dask workers; a "
                        "smaller --chunk (a multiple of 256) gives more", len(plan.spans), opts.chunk, len(shards),
                        cluster.workers)
        result.timings["cluster"], tick = time.perf_counter() - tick, time.perf_counter()
        scratch = Path(tempfile.mkdtemp(prefix=f".{Path(raster_path).stem}.mtl-shards-", dir=Path(out_dir).resolve()))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        if sink is not None:
            sink.start(list(outputs.layers))
        copying = [0.0]

        def copy(i: int, part: dict[str, Any]) -> None:  # each shard as it finishes, while the others run
            if opts.vrt:
                return  # the shard's files are the outputs' own
            t = time.perf_counter()
            _copy_shard(outputs, part["outputs"], plan.bounds[shards[i][0]], plan.cell, cancelled)
            shutil.rmtree(Path(next(iter(part["outputs"].values()))).parent, ignore_errors=True)
            copying[0] += time.perf_counter() - t

        parts = _run_shards(cluster, shards, plan, model_path, raster_path, scratch, shard_opts, sink, progress,
                            cancelled, copy)
        result.timings["shards"], tick = time.perf_counter() - tick, time.perf_counter()
        if opts.vrt:
            result.shards = Path(out_dir).resolve() / f"{Path(raster_path).stem}_shards-{uuid.uuid4().hex[:8]}"
            _keep_shards(outputs, parts, result.shards)
        for part in parts:  # in shard order, so the sums are those of every run
            if sink is not None:
                sink.merge(part["sink"])
        for product, layer in chosen:
            if product.halo:
                _halo_pass(outputs, product, layer, result.grid, cancelled)
        result.outputs = outputs.finish()
        result.timings["merge"] = time.perf_counter() - tick  # what is left after the last shard
        result.timings["copy"] = copying[0]  # copying the shards into the outputs, in all
    _sum_up(result, parts, spec, out_dir, raster_path, opts)
    result.seconds = time.perf_counter() - start
    log.info("predicted %dx%d px in %d shard(s) on %d Dask workers in %.1f s (cluster %.1f s, shards %.1f s, merge "
             "%.1f s)", win[2], win[3], len(shards), cluster.workers, result.seconds, result.timings["cluster"],
             result.timings["shards"], result.timings["merge"])
    return result


def _shard_options(opts):
    """The options each shard runs with: one process, its outputs its own, every path absolute (workers may run
    elsewhere, in another folder; an OGR connection string stays as it is)."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    return dataclasses.replace(opts, workers=None, scheduler=None, overwrite=True,
                               aux_truth={k: absolute(v) for k, v in (opts.aux_truth or {}).items()} or None,
                               labels=absolute(opts.labels), mask=absolute(opts.mask))


def _sum_up(result, parts: list[dict], spec, out_dir, raster_path, opts) -> None:
    """The run's result from its shards' (in shard order): inputs seen, warnings, tiles, device, timings; and the
    shard folders of the VRTs an ``overwrite`` just replaced, removed."""
    if result.shards and opts.overwrite:  # the folders of the VRTs just replaced
        for old in Path(out_dir).glob(f"{glob.escape(Path(raster_path).stem)}_shards-" + "[0-9a-f]" * 8):
            if old != result.shards:
                shutil.rmtree(old, ignore_errors=True)
    result.seen = sum(p["seen"] for p in parts)
    result.warnings = input_range_warnings(spec, result.seen)
    for warning in result.warnings:
        log.warning("%s", warning)
    result.skipped_tiles = sum(p["skipped"] for p in parts)
    result.device, result.warped = parts[0]["device"], parts[0]["warped"]
    result.timings["shard_seconds"] = [p["seconds"] for p in parts]
    result.timings["shard_tiles"] = [p["tiles"] for p in parts]


def _run_shards(cluster: _Cluster, shards, plan: Plan, model_path: str, raster_path: str, scratch: Path, opts, sink,
                progress, cancelled, done_shard: Callable[[int, dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Submit every shard, report their progress, hand each finished one to ``done_shard`` (shard index, result),
    cancel them all on request; their results in shard order."""
    from distributed import Event, Queue, wait

    client, run_id = cluster.client, uuid.uuid4().hex
    cancel, queue = Event(f"mtl-cancel-{run_id}", client), Queue(f"mtl-progress-{run_id}", client)
    weights = {first: sum(len(b[2]) for b in plan.shard(first, end).batches) for first, end in shards}
    futures = [client.submit(_run_shard, model_path, raster_path, str(scratch / f"shard-{i:03d}"), opts, chunks,
                             run_id, cluster.slots, sink, key=f"mtl-shard-{i}-{run_id}", retries=1, pure=False)
               for i, chunks in enumerate(shards)]
    done: dict[int, float] = {}
    parts: dict[int, dict[str, Any]] = {}
    try:
        while len(parts) < len(futures):
            try:  # back as soon as a shard ends, so its copy starts at once
                wait([f for i, f in enumerate(futures) if i not in parts], REPORT_EVERY, "FIRST_COMPLETED")
            except TimeoutError:
                pass
            while queue.qsize():
                for first, fraction in queue.get(batch=True):
                    done[first] = fraction
            if callable(progress):
                progress(sum(weights[f] * done.get(f, 0.0) for f in weights) / sum(weights.values()))
            if cancelled is not None and cancelled():
                raise CancelledError("prediction cancelled; no output was written")
            for i, future in enumerate(futures):
                if i in parts or not future.done():
                    continue
                if future.status == "error":  # retried once already
                    exc = future.exception()
                    raise MtlError(f"shard {i + 1} of {len(futures)} (columns {plan.bounds[shards[i][0]]}–"
                                   f"{plan.bounds[shards[i][1]]}) failed twice: {type(exc).__name__}: {exc}") from exc
                parts[i] = future.result()
                if "error" in parts[i]:  # a mistake in the input: the shard's own message, saying which shard
                    exc = parts[i]["error"]
                    raise type(exc)(f"shard {i + 1} of {len(futures)} (columns {plan.bounds[shards[i][0]]}–"
                                    f"{plan.bounds[shards[i][1]]}): {exc}") from exc
                done_shard(i, parts[i])
        return [parts[i] for i in range(len(futures))]
    except BaseException:
        cancel.set()  # every shard stops at its next batch (a queued one at its first), writing nothing
        try:
            wait(futures, timeout=60)  # before the scratch folder is removed under them
        except Exception:  # noqa: BLE001 (a timeout or a lost worker: the run fails with its own error anyway)
            log.warning("some shards did not stop within a minute of being cancelled")
        client.cancel(futures)
        raise


def _keep_shards(outputs: Outputs, parts: list[dict[str, Any]], folder: Path) -> None:
    """A ``vrt`` run's shards, moved into ``folder`` (one sub-folder per shard) and given to the mosaic outputs."""
    folder.mkdir()
    for i, part in enumerate(parts):
        shard = folder / f"shard-{i:03d}"
        os.replace(Path(next(iter(part["outputs"].values()))).parent, shard)
        part["outputs"] = {key: str(shard / Path(path).name) for key, path in part["outputs"].items()}
    for key in outputs.mosaics:
        outputs.mosaic(key, [part["outputs"][key] for part in parts], folder)


def _copy_shard(outputs: Outputs, files: dict[str, str], col: int, cell: int, cancelled) -> None:
    """A shard's float32 layers into the run's outputs from window column ``col`` on (packed, with overviews), in
    strips of :data:`MERGE_ROWS` rows and 2048 columns (multiples of every overview level's block); one thread per
    layer (each has its own datasets; GDAL compresses outside the GIL)."""

    def copy(key: str, path: str) -> None:
        ds = open_raster(path, "shard output")
        bands, width = range(1, ds.RasterCount + 1), ds.RasterXSize
        x0 = col // cell if outputs.layers[key].cells else col  # cell layers: patch classification's cell grid
        for row in range(0, ds.RasterYSize, MERGE_ROWS):
            if cancelled is not None and cancelled():
                raise CancelledError("prediction cancelled; no output was written")
            h = min(MERGE_ROWS, ds.RasterYSize - row)
            for x in range(0, width, 2048):
                w = min(2048, width - x)
                data = np.stack([ds.GetRasterBand(i).ReadAsArray(x, row, w, h) for i in bands])
                outputs.write(key, data, row, x0 + x)

    with ThreadPoolExecutor(min(len(files), os.cpu_count() or 1), thread_name_prefix="mtl-merge") as pool:
        for done in [pool.submit(copy, key, path) for key, path in files.items()]:
            done.result()

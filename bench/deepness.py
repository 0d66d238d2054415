"""Side by side with the Deepness QGIS plugin (0.6.5): our Deepness export run by Deepness's own code, against
``mtl predict`` on the same raster, in one run.

Not a test, and Deepness is not part of this project: give the ``src`` folder of a Deepness checkout you fetched
(github.com/PUTvision/qgis-plugin-deepness, tag 0.6.5) and a Python path holding OpenCV (Deepness imports
``cv2``). Usage::

    PYTHONPATH=/path/to/opencv .venv/bin/python bench/deepness.py --deepness-src /path/to/deepness/src \\
        [--size 2048] [--batch 4] [--threads 2] [--repeats 2]

It writes ``mtl export --deepness`` of the bundled default model (or ``--model``), loads it with Deepness's
``Segmentor`` and sets the processing parameters from the model's metadata through Deepness's own getters, as
its dock does (resolution, tile size, overlap, probability threshold, small-segment filter), then runs Deepness's
``MapProcessorSegmentation`` (class map) and ``mtl predict`` (the class map alone, then the four default products)
on a SIZE^2 mosaic of the sample scene, interleaved, and prints the metadata Deepness read, the wall-clock times,
the speed ratio and the class-map agreement (Deepness writes class index + 1, the model's class values 1..7).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inference import build_mosaic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "resources" / "default_model.mtl.onnx"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deepness-src", type=Path, required=True, help="the 'src' folder of a Deepness 0.6.5 checkout")
    p.add_argument("--size", type=int, default=2048, help="side of the mosaic in pixels (default 2048)")
    p.add_argument("--batch", type=int, default=4, help="tiles per forward pass, both tools (default 4)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of our engine (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the median is printed")
    p.add_argument("--model", type=Path, default=MODEL,
                   help="an MTL Explain .onnx model (default: the bundled model; bench/inference.py caches its "
                        "U-Net/ResNet-18 depth-5 benchmark model as ~/.cache/mtl-explain/bench/"
                        "bench_unet_resnet18.onnx)")
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(args.deepness_src))

    import numpy as np
    from osgeo import gdal
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    from mtl_core.engine import PredictOptions, predict
    from mtl_core.io.raster import Grid
    from mtl_core.training.deepness import export_deepness

    gdal.UseExceptions()
    app = QgsApplication([], False)
    app.initQgis()
    from unittest.mock import MagicMock  # Deepness wants a map canvas only for the visible-part mode

    from deepness.common.channels_mapping import ChannelsMapping, ImageChannelStandaloneBand
    from deepness.common.processing_overlap import ProcessingOverlap, ProcessingOverlapOptions
    from deepness.common.processing_parameters.map_processing_parameters import ProcessedAreaType
    from deepness.common.processing_parameters.segmentation_parameters import SegmentationParameters
    from deepness.processing.map_processor.map_processor_segmentation import MapProcessorSegmentation
    from deepness.processing.models.segmentor import Segmentor

    raster = build_mosaic(args.size)
    cm = Grid.of(gdal.Open(str(raster))).pixel_size_m() * 100
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_deepness(args.model, Path(tmp) / "model.deepness.onnx", resolution=cm)
        model = Segmentor(str(onnx))
        read = {"model type": model.get_metadata_model_type(), "resolution cm/px": model.get_metadata_resolution(),
                "tile size": model.get_metadata_tile_size(), "input size": model.get_input_size_in_pixels(),
                "overlap %": model.get_metadata_tiles_overlap(),
                "threshold": model.get_metadata_segmentation_threshold(),
                "small segment": model.get_metadata_segmentation_small_segment(),
                "class names": model.outputs_names, "outputs": model.get_number_of_output_channels()}
        print(f"Deepness {args.deepness_src} read from our export: {read}")
        layer = QgsRasterLayer(str(raster), "mosaic")
        QgsProject.instance().addMapLayer(layer)
        mapping = ChannelsMapping()
        mapping.set_image_channels([ImageChannelStandaloneBand(band_number=b, name=layer.bandName(b))
                                    for b in range(1, layer.bandCount() + 1)])
        mapping.set_number_of_model_inputs_same_as_image_channels()
        threshold = read["threshold"] or 0.0
        params = SegmentationParameters(
            resolution_cm_per_px=read["resolution cm/px"], tile_size_px=read["tile size"], batch_size=args.batch,
            local_cache=False, processed_area_type=ProcessedAreaType.ENTIRE_LAYER, mask_layer_id=None,
            input_layer_id=layer.id(), input_channels_mapping=mapping,
            postprocessing_dilate_erode_size=read["small segment"] or 0,
            processing_overlap=ProcessingOverlap(ProcessingOverlapOptions.OVERLAP_IN_PERCENT,
                                                 percentage=read["overlap %"]),
            pixel_classification__probability_threshold=threshold, model=model)

        def deepness() -> tuple[float, np.ndarray]:
            processor = MapProcessorSegmentation(rlayer=layer, vlayer_mask=None, map_canvas=MagicMock(),
                                                 params=params)
            start = time.perf_counter()
            processor.run()
            return time.perf_counter() - start, processor.get_result_img()

        def ours(products: tuple[str, ...], n: int) -> tuple[float, np.ndarray]:
            out = Path(tmp) / f"ours{n}_{len(products)}"
            out.mkdir()
            opts = PredictOptions(products=products, batch_size=args.batch, threads=args.threads, device="cpu",
                                  backend="onnx")
            start = time.perf_counter()
            result = predict(args.model, raster, out, opts)
            seconds = time.perf_counter() - start
            return seconds, gdal.Open(str(result.outputs["main"])).ReadAsArray()

        times: dict[str, list[float]] = {"deepness": [], "main": [], "four": []}
        for n in range(args.repeats):
            t, theirs = deepness()
            times["deepness"].append(t)
            t, mine = ours(("main",), n)
            times["main"].append(t)
            times["four"].append(ours(("main", "confidence", "entropy", "aux"), n)[0])
    mp = args.size ** 2 / 1e6
    med = {k: float(np.median(v)) for k, v in times.items()}
    theirs = theirs.reshape(theirs.shape[-2:])
    both = (mine > 0) & (theirs > 0)
    print(f"{args.size}² px ({mp:.1f} MP), batch {args.batch}, median of {args.repeats}, wall seconds:")
    print(f"  Deepness (class map)                       {med['deepness']:7.2f} s  {mp / med['deepness']:.3f} MP/s")
    print(f"  mtl predict, class map                     {med['main']:7.2f} s  {mp / med['main']:.3f} MP/s  "
          f"{med['deepness'] / med['main']:.2f}x Deepness")
    print(f"  mtl predict, class map + confidence + entropy + reconstruction "
          f"{med['four']:7.2f} s  {mp / med['four']:.3f} MP/s  {med['deepness'] / med['four']:.2f}x Deepness")
    print(f"Class maps: same class on {(mine == theirs)[both].mean():.4f} of {both.sum()} pixels both classify "
          f"(shapes ours {mine.shape}, Deepness {theirs.shape})")


if __name__ == "__main__":
    main()

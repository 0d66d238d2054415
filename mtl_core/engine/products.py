"""The engine's products: each declares its output layers and computes their blocks from model outputs.

A product is a small object (:class:`Product`) that says which layers it writes for a model and a
run (:class:`Layer`: file name, data type, nodata, categories, style, title, one-line help), what the
engine must compute for it (reconstructions, sensitivity passes, ground truth, a halo of neighbouring
pixels) and how to turn a :class:`Block` of blended model outputs into those layers. :data:`REGISTRY`
lists them in display order; the CLI's ``--products``, the plugin's checkboxes, layer titles and
styles, the report's captions and the Processing outputs are all read from it. A new product is one
class and one entry in :data:`REGISTRY` (plus a QML template in ``resources/styles`` if no existing
style fits).

A product with a *halo* (a hillshade, a smoothed error) needs the neighbours of each pixel. It reads
the finished layer of its ``source`` product, in windows reaching ``halo`` pixels beyond each side, once
the stream of tiles is done; windows and chunk seams do not show in its output (see
:meth:`mtl_core.engine.product.Product.compute_halo`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np
from osgeo import gdal

from ..errors import ConfigError
from ..explain.scores import (AGREEMENT_CLASSES, CONFIDENT_FLAGGED_CLASSES, DETECTOR_FEATURES, MAIN_ERROR_CLASSES,
                              agreement, confident_flagged, detector_features)
from ..explain.stats import LogisticDetector
from ..norm import denormalise
from ..spec import CLASS_NODATA, ERROR_NODATA, FLOAT_NODATA, Band, Modality, ModelSpec
from .product import Available, Block, Layer, Product

#: A layer of values in 0..1 stored as Byte: 0..254 in steps of 1/254 (0.004), nodata 255.
UNIT_BYTE = dict(dtype=gdal.GDT_Byte, nodata=255, scale=(1 / 254,))


def _classes(spec: ModelSpec) -> tuple[tuple[int, str, str], ...]:
    return tuple((c.value, c.name, c.color) for c in spec.classes)


class MainProduct(Product):
    name, label, default, tickable = "main", "Main prediction", True, True
    help = "The main task's prediction: class map, class per patch, or value."
    rank = 40

    def layers(self, spec, available):
        if spec.task == "regression":
            t = spec.target
            return [Layer("main", t.name, "Prediction", f"Predicted {t.name} ({t.units}).", style="regression",
                          description=t.name, units=t.units)]
        dtype = gdal.GDT_Byte if max(c.value for c in spec.classes) < 256 else gdal.GDT_UInt16
        what = "patch of the input" if spec.task == "classification" else "pixel"
        return [Layer("main", "classes", "Prediction", f"Predicted class of each {what}.", dtype=dtype,
                      nodata=CLASS_NODATA, style="classes", range="classes", categories=_classes(spec),
                      description="class", cells=spec.task == "classification")]

    def compute(self, block):
        if not block.classes:
            return {"main": block.value[None].copy()}
        return {"main": block.for_layer(block.class_values[None])}


class ConfidenceProduct(Product):
    name, label, default, tickable = "confidence", "Confidence", True, True
    help = "Highest class probability (1 = the model puts all its weight on one class)."
    rank = 41

    def layers(self, spec, available):
        if spec.task == "regression":
            return []
        return [Layer("confidence", "confidence", "Confidence", self.help, style="confidence", range="fixed",
                      description="max class probability", cells=spec.task == "classification", **UNIT_BYTE)]

    def compute(self, block):
        return {"confidence": block.for_layer(block.confidence[None])}  # float32, as the probabilities


class EntropyProduct(Product):
    name, label, default, tickable = "entropy", "Entropy", True, True
    help = "Entropy of the class probabilities in nats (0 = certain; ln C = uniform over C classes)."
    rank = 42

    def layers(self, spec, available):
        if spec.task == "regression":
            return []
        return [Layer("entropy", "entropy", "Entropy", self.help, style="entropy",
                      description="entropy of class probabilities", cells=spec.task == "classification",
                      dtype=gdal.GDT_Byte, nodata=255, scale=(math.log(max(len(spec.classes), 2)) / 254,))]

    def compute(self, block):
        return {"entropy": block.for_layer(block.entropy[None])}


class ProbabilitiesProduct(Product):
    name, label, tickable = "probabilities", "Class probabilities", True
    help = "One band per class: the model's probability of that class."
    rank = 43

    def layers(self, spec, available):
        if spec.task == "regression":
            return []
        return [Layer("probabilities", "probabilities", "Class probabilities", self.help, bands=len(spec.classes),
                      style="probabilities", range="fixed", band_names=tuple(f"p({c.name})" for c in spec.classes),
                      cells=spec.task == "classification", **UNIT_BYTE)]

    def compute(self, block):
        return {"probabilities": block.for_layer(block.probs)}


class ReconstructionProduct(Product):
    name, label, default, tickable, reconstructions = "aux", "Reconstructed modalities", True, True, True
    help = "Auxiliary modality reconstructed from the input bands alone, in the modality's units."
    per_modality = True
    rank = 61

    def layers(self, spec, available):
        return [Layer(f"aux_{m.name}", f"{m.name}_reconstructed", f"{m.name} (reconstructed)", self.help,
                      bands=len(m.bands), style="reconstruction", units=m.units,
                      band_names=tuple(f"{b.name} (reconstructed)" for b in m.bands), dtype=gdal.GDT_Int16,
                      nodata=-32768, offset=tuple(b.mean for b in m.bands),  # steps of 0.01 training std
                      scale=tuple((b.std or 1.0) / 100 for b in m.bands)) for m in spec.aux]

    def compute(self, block):
        return {f"aux_{m.name}": denormalise(block.parts[f"aux_{m.name}"], m.bands).astype(np.float32)
                for m in block.spec.aux}


class ReconstructionErrorProduct(Product):
    name, label, default, needs_truth, reconstructions = "recon_error", "Reconstruction error", True, True, True
    help = ("|reconstruction - real auxiliary value| in normalised units (training standard deviations), "
            "mean over bands (band 1), then each band.")
    per_modality = True
    rank = 60

    def layers(self, spec, available):
        return [Layer(f"recon_error_{m.name}", f"{m.name}_recon_error", f"Reconstruction error — {m.name}", self.help,
                      bands=1 + len(m.bands), style="error",
                      band_names=(f"{m.name} mean abs error (std units)",
                                  *(f"{b.name} abs error (std units)" for b in m.bands)),
                      dtype=gdal.GDT_UInt16, nodata=65535, scale=(1 / 100,))  # 0.01 std steps, up to 655 std
                for m in spec.aux if m.name in available.truth]

    def compute(self, block):
        out = {}
        for name, err in block.recon_error.items():
            arr = np.concatenate([err.mean(0, keepdims=True), err]).astype(np.float32)
            arr[np.isnan(arr)] = FLOAT_NODATA
            out[f"recon_error_{name}"] = arr
        return out


class MainErrorProduct(Product):
    name, label, default, needs_truth = "main_error", "Main-task error", True, True
    help = "Where the prediction disagrees with the reference labels (1 = wrong), or the absolute error."
    rank = 20

    def layers(self, spec, available):
        if not available.labels:
            return []
        if spec.task == "regression":
            return [Layer("main_error", "main_error", "Main-task error", f"|predicted - reference {spec.target.name}| "
                          f"({spec.target.units}).", style="error", description="main-task error",
                          units=spec.target.units)]
        cells = spec.task == "classification"
        what = ("Where the patch's class disagrees with the majority label of its pixels (1 = wrong)." if cells
                else "Where the predicted class disagrees with the reference labels (1 = wrong).")
        return [Layer("main_error", "main_error", "Main-task error", what, dtype=gdal.GDT_Byte,
                      nodata=ERROR_NODATA, style="main_error", range="fixed", categories=tuple(MAIN_ERROR_CLASSES),
                      description="main-task error", cells=cells)]

    def compute(self, block):
        ref, labelled = block.labels
        if not block.classes:
            err = np.abs(block.value - ref).astype(np.float32)
            err[~labelled] = FLOAT_NODATA
            return {"main_error": err[None]}
        if block.cell > 1:  # per cell, against the majority label of its pixels
            ref, labelled = block.cell_labels
            out = (block.on_cells(block.pred_idx) != ref).astype(np.uint8)
        else:
            out = (block.pred_idx != ref).astype(np.uint8)
        out[~labelled] = ERROR_NODATA
        return {"main_error": out[None]}


def _has_error_model(spec: ModelSpec, available: Available) -> bool:
    return available.error_model and any(m.name in available.truth for m in spec.aux)


class ErrorScoreProduct(Product):
    name, label, default, needs_truth, reconstructions = "error_score", "Error score", True, True, True
    help = ("How unusual the reconstruction error is for the predicted class: fraction of training pixels of that "
            "class with a smaller error, worst band (0.5 typical, near 1 exceptional).")
    rank = 30

    def layers(self, spec, available):
        if not _has_error_model(spec, available):
            return []
        what = self.help if spec.task != "regression" else (
            "How unusual the reconstruction error is: fraction of training pixels with a smaller error, worst band "
            "(0.5 typical, near 1 exceptional).")
        return [Layer("error_score", "error_score", "Error score", what, style="error_score",
                      description="reconstruction error score", **UNIT_BYTE)]

    def compute(self, block):
        s = block.score.copy()
        s[block.no_truth] = FLOAT_NODATA
        return {"error_score": s[None]}


class AgreementProduct(Product):
    name, label, default, needs_truth, reconstructions = "agreement", "Error agreement", True, True, True
    help = "Main-task error crossed with 'reconstruction bad' (error score above the training threshold)."
    rank = 10

    def layers(self, spec, available):
        if spec.task == "regression" or not available.labels or not _has_error_model(spec, available):
            return []
        return [Layer("agreement", "agreement", "Error agreement", self.help, dtype=gdal.GDT_Byte, nodata=0,
                      style="agreement", range="fixed", categories=tuple(AGREEMENT_CLASSES),
                      description="error agreement")]

    def compute(self, block):
        agree = agreement(block.main_wrong, block.score, float(block.error_model["threshold"])).astype(np.uint8)
        agree[block.no_truth | ~block.labels[1]] = 0
        return {"agreement": agree[None]}


class ConfidentFlaggedProduct(Product):
    """Where the model is sure of its class but the reconstruction of the real modality is unusual for that class:
    the errors confidence cannot show, found without labels (needs the real modality and an error model)."""

    name, label, default, needs_truth, reconstructions = "confident_flagged", "Confident and flagged", True, True, \
        True
    help = ("Confident (confidence at least the training pixels' median) and flagged (error score above the training "
            "threshold): the model is sure, but the pixel's real modality is unlike what it reconstructs.")
    rank = 12

    def layers(self, spec, available):
        fitted = spec.training.get("error_model") or {}
        if spec.task != "segmentation" or not _has_error_model(spec, available) or "confident_at" not in fitted:
            return []
        return [Layer("confident_flagged", "confident_flagged", "Confident and flagged", self.help,
                      dtype=gdal.GDT_Byte, nodata=0, style="confident_flagged", range="fixed",
                      categories=tuple(CONFIDENT_FLAGGED_CLASSES), description="confident and flagged")]

    def compute(self, block):
        em = block.error_model
        out = confident_flagged(block.confidence, block.score, float(em["confident_at"]), float(em["threshold"]))
        out[block.no_truth] = 0
        return {"confident_flagged": out[None]}


class ErrorProbabilityProduct(Product):
    name, label, default, needs_truth, reconstructions = "error_probability", "Probability of being wrong", True, \
        True, True
    help = ("Probability that the prediction is wrong, from the detector fitted at training on validation blocks "
            "(entropy, confidence, error score and reconstruction error together).")
    rank = 15

    def layers(self, spec, available):
        if spec.task != "segmentation" or not _has_error_model(spec, available) or not available.detector:
            return []
        return [Layer("error_probability", "error_probability", "Probability of being wrong", self.help,
                      style="error_score", range="fixed", description="probability of being wrong", **UNIT_BYTE)]

    @staticmethod
    def _detector(block: Block) -> LogisticDetector:
        det = LogisticDetector.from_dict(block.error_model["detector"])
        if det.names != DETECTOR_FEATURES:
            raise ConfigError(f"the model's detector uses features {det.names}, this version computes "
                              f"{DETECTOR_FEATURES}; retrain the model with 'mtl train'")
        return det

    def compute(self, block):
        x = detector_features(block.probs, block.recon_error, block.score, block.entropy, block.confidence)
        p = self._detector(block).score(x).reshape(block.valid.shape).astype(np.float32)
        p[block.no_truth | ~np.isfinite(p)] = FLOAT_NODATA
        return {"error_probability": p[None]}


class SensitivityProduct(Product):
    name, label, tickable, sensitivity = "sensitivity", "Sensitivity to each input band (slower)", True, True
    help = ("Change of the class probabilities (total variation, 0..1) — or of each reconstruction (normalised "
            "units) — when one input band is replaced by its training mean; one band per input band.")
    rank = 70

    def layers(self, spec, available):
        names = tuple(f"{m.name}/{b.name}" for m in spec.inputs for b in m.bands)
        change = (f"|change| of the predicted {spec.target.name} (in training standard deviations)"
                  if spec.task == "regression" else "change of the class probabilities (total variation, 0..1)")
        main = Layer("sensitivity", "sensitivity", "Sensitivity (main task)", f"One band per input band: the {change} "
                     "when that band is replaced by its training mean.", bands=spec.in_channels,
                     style="sensitivity", band_names=names)
        return [main] + [Layer(f"sensitivity_{m.name}", f"sensitivity_{m.name}", f"Sensitivity — {m.name} "
                               "reconstruction", f"One band per input band: mean |change| of the {m.name} "
                               "reconstruction (normalised units) when that band is replaced by its training mean.",
                               bands=spec.in_channels, style="sensitivity", band_names=names) for m in spec.aux]

    def compute(self, block):
        out = {"sensitivity": block.parts["sens_main"].astype(np.float32)}
        for m in block.spec.aux:
            out[f"sensitivity_{m.name}"] = block.parts[f"sens_{m.name}"].astype(np.float32)
        return out


#: Modality names and units taken as elevation (a hillshade of their reconstruction makes sense).
ELEVATION_NAMES = ("dem", "dsm", "dtm", "elevation", "height", "ndsm")


def is_elevation(modality) -> bool:
    return len(modality.bands) == 1 and (
        modality.name.lower() in ELEVATION_NAMES or modality.units.strip().lower() in ("m", "metre", "meter", "metres"))


class HillshadeProduct(Product):
    """A hillshade of each reconstructed elevation modality (sun from the north-west, 45°): relief errors of the
    reconstruction show as shapes a user recognises. Needs one pixel of context (halo 1)."""

    name, label, tickable, reconstructions, halo, source = "hillshade", "Hillshade of reconstructed elevation", \
        True, True, 1, "aux"
    help = "Hillshade (azimuth 315°, altitude 45°) of the reconstructed elevation; 0 dark to 255 lit."
    per_modality = True
    rank = 62

    def layers(self, spec, available):
        return [Layer(f"hillshade_{m.name}", f"{m.name}_hillshade", f"Hillshade — {m.name} (reconstructed)",
                      self.help, dtype=gdal.GDT_Byte, nodata=0, style="hillshade", range="fixed",
                      description=f"hillshade of reconstructed {m.name}") for m in spec.aux if is_elevation(m)]

    def source_key(self, layer: Layer) -> str:
        return "aux_" + layer.key[len("hillshade_"):]

    def compute_halo(self, layer, source, source_layer, halo, pixel_size):
        return hillshade(source[0], source_layer.fill, halo, pixel_size)[None]


def hillshade(z: np.ndarray, nodata: float, halo: tuple[int, int, int, int], pixel_size: tuple[float, float],
              azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Hillshade of elevations ``z`` (Horn's 3 x 3 slopes, as ``gdaldem hillshade``): 1..255, 0 where a
    neighbour is nodata or missing (the raster's edge), on the pixels inside ``halo`` (top, bottom, left, right)."""
    top, bottom, left, right = halo
    padded = np.pad(z.astype(np.float64), 1, constant_values=np.nan)
    padded[padded == nodata] = np.nan
    w = lambda dy, dx: padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]  # noqa: E731
    dx, dy = pixel_size
    dzdx = ((w(-1, 1) + 2 * w(0, 1) + w(1, 1)) - (w(-1, -1) + 2 * w(0, -1) + w(1, -1))) / (8 * dx)
    dzdy = ((w(1, -1) + 2 * w(1, 0) + w(1, 1)) - (w(-1, -1) + 2 * w(-1, 0) + w(-1, 1))) / (8 * dy)
    zenith, az = math.radians(90 - altitude), math.radians(360 - azimuth + 90)
    slope = np.arctan(np.hypot(dzdx, dzdy))
    aspect = np.arctan2(dzdy, -dzdx)
    shade = np.cos(zenith) * np.cos(slope) + np.sin(zenith) * np.sin(slope) * np.cos(az - aspect)
    out = np.where(np.isfinite(shade), np.clip(1.5 + 254 * shade, 1, 255), 0).astype(np.uint8)  # rounded, as gdaldem
    return out[top:out.shape[0] - bottom, left:out.shape[1] - right]


#: Every product, in display order. Names are stable: jobs, saved Processing models and scripts use them.
REGISTRY: list[Product] = [
    MainProduct(), ConfidenceProduct(), EntropyProduct(), ProbabilitiesProduct(), ReconstructionProduct(),
    ReconstructionErrorProduct(), MainErrorProduct(), ErrorScoreProduct(), AgreementProduct(),
    ErrorProbabilityProduct(), SensitivityProduct(), HillshadeProduct(), ConfidentFlaggedProduct(),
]


def product(name: str) -> Product:
    """The registered product called ``name``.

    Raises:
        ConfigError: no product has that name (the message lists them).
    """
    for p in REGISTRY:
        if p.name == name:
            return p
    raise ConfigError(f"unknown product {name!r}; choose from {', '.join(names())}")


def names() -> list[str]:
    return [p.name for p in REGISTRY]


def default_names(with_truth: bool = True) -> tuple[str, ...]:
    """The products written when none are named (``with_truth=False``: those that need no ground truth)."""
    return tuple(p.name for p in REGISTRY if p.default and (with_truth or not p.needs_truth))


def truth_names() -> tuple[str, ...]:
    """The products that need ground truth (``mtl explain`` writes them)."""
    return tuple(p.name for p in REGISTRY if p.needs_truth)


def plan_layers(spec: ModelSpec, chosen: Iterable[str], available: Available) -> list[tuple[Product, Layer]]:
    """The (product, layer) pairs a run writes, in registry order; a halo product brings its source along.

    Raises:
        ConfigError: an unknown product name.
    """
    wanted = {product(n).name for n in chosen}
    for n in list(wanted):
        if product(n).source:
            wanted.add(product(n).source)
    return [(p, layer) for p in REGISTRY if p.name in wanted for layer in p.layers(spec, available)]


def group_rank(spec: ModelSpec) -> dict[str, int]:
    """Layer key -> place in a run's layer group (lower = nearer the top)."""
    everything = Available.everything(spec)
    return {layer.key: p.rank for p in REGISTRY for layer in p.layers(spec, everything)}


def all_layers(spec: ModelSpec) -> dict[str, Layer]:
    """Every layer a model can produce, by key (for titles, styles and captions of finished runs)."""
    everything = Available.everything(spec)
    return {layer.key: layer for p in REGISTRY for layer in p.layers(spec, everything)}


def layer_for_key(spec: ModelSpec, key: str) -> Layer | None:
    """The declaration of output ``key`` of a model of this kind; a per-modality key naming a modality the spec
    does not list (a layer of another run, loaded by hand) is declared as for a one-band modality of that name."""
    layers = all_layers(spec)
    if key in layers:
        return layers[key]
    for i, char in enumerate(key):
        if char == "_" and key[i + 1:]:
            name = key[i + 1:]
            probe = dataclasses.replace(spec, aux=[*spec.aux, Modality(name, [Band(name, 0.0, 1.0)], "")])
            if key in (found := all_layers(probe)):
                return found[key]
    return None

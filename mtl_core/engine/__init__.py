"""The streaming engine: tiling plan, readers, runtime, blending, products and outputs, wired by :func:`predict`.

The public entry points are re-exported here: :func:`predict` (in this process, or sharded on Dask with
``workers``/``scheduler``: :mod:`.distributed`), :func:`explain` and :func:`propose_sites` with their options and
results; :mod:`mtl_core.engine.products` holds the product registry and :mod:`.styles` each product's style.
"""

from .distributed import predict
from .explaining import ExplainResult, explain
from .run import DEFAULT_PRODUCTS, PredictOptions, PredictResult
from .sites import propose_sites

__all__ = ["DEFAULT_PRODUCTS", "ExplainResult", "PredictOptions", "PredictResult", "explain", "predict",
           "propose_sites"]

"""One pipeline for explaining many images, used by ``xraylens explain`` and the recipe.

- :func:`explain_images`: read and preprocess, batch, resume per (image, method), write each
  image's ``.npz`` (with the model's probabilities) and PNG atomically as soon as it is done,
  progress per chunk with an ETA, and share the batches over ``torchrun`` ranks.
- :class:`Item`, :func:`items_from_paths`: what to explain; :class:`FigureOptions`: how the
  PNGs are drawn (the shared defaults of :data:`xraylens.viz.DEFAULTS`).
- :func:`join` / :class:`Shard`: the ``torchrun`` process group (gloo on CPU, NCCL on CUDA).
"""

from xraylens.pipeline.explain import ExplainReport, explain_images, output_paths, read_probs
from xraylens.pipeline.items import FigureOptions, Item, items_from_paths
from xraylens.pipeline.shard import Shard, join, local_device

__all__ = [
    "ExplainReport",
    "FigureOptions",
    "Item",
    "Shard",
    "explain_images",
    "items_from_paths",
    "join",
    "local_device",
    "output_paths",
    "read_probs",
]

"""Model weights, kept for compatibility: the checkpoint I/O is :mod:`xraylens.core.checkpoint`.

(``core`` must not import upward, and :meth:`xraylens.Classifier.save` / ``load`` need it.)
"""

from xraylens.core.checkpoint import (
    LOCAL_SUFFIXES,
    fold_stem,
    is_local_weights,
    load_state,
    read_checkpoint,
    save_checkpoint,
)
from xraylens.errors import WeightsError

__all__ = [
    "LOCAL_SUFFIXES",
    "WeightsError",
    "fold_stem",
    "is_local_weights",
    "load_state",
    "read_checkpoint",
    "save_checkpoint",
]

"""Model surgery: small, reversible, composable changes that make attribution rules exact.

Guided backprop and deconvolution attach their rules to ReLU *modules* (DeepLIFT's rules see
every function call, :mod:`xraylens.attr._dl_mode`, and need only the speed-ups; what is ruled
comes from :mod:`xraylens.surgery.taxonomy`). Real models hide non-linearities from them:
in-place activations, one ReLU module called twice (torchvision ResNet blocks), functional
``F.relu`` / ``F.max_pool2d`` calls (torchvision DenseNet and InceptionV3). The steps here fix
that on a model (the attributors always pass a deep copy):

>>> from xraylens.surgery import Surgery
>>> surgery = Surgery("guided")        # or a list of step names
>>> surgery.apply(model_copy)          # in place
>>> surgery.remove()                   # back to the original structure

Max pooling additionally needs an exact DeepLIFT rule (:mod:`xraylens.surgery.maxpool`).
:func:`snapshot` proves that a model was left untouched.
"""

from xraylens.surgery import batchnorm as _batchnorm  # noqa: F401  (registers its step)
from xraylens.surgery import modularize as _modularize  # noqa: F401  (registers its steps)
from xraylens.surgery import taxonomy
from xraylens.surgery.maxpool import (
    PoolGeometry,
    adaptive_geometry,
    fold_multipliers,
    pool_geometry,
    window_multipliers,
)
from xraylens.surgery.snapshot import ModelSnapshot, snapshot
from xraylens.surgery.steps import (
    ACTIVATION_TYPES,
    MAXPOOL_TYPES,
    PIPELINES,
    RULED_TYPES,
    STEPS,
    Step,
    Surgery,
    get_step,
    is_ruled,
    list_steps,
    register_step,
)

__all__ = [
    "ACTIVATION_TYPES",
    "MAXPOOL_TYPES",
    "PIPELINES",
    "RULED_TYPES",
    "STEPS",
    "ModelSnapshot",
    "PoolGeometry",
    "Step",
    "Surgery",
    "adaptive_geometry",
    "fold_multipliers",
    "get_step",
    "is_ruled",
    "list_steps",
    "pool_geometry",
    "register_step",
    "snapshot",
    "taxonomy",
    "window_multipliers",
]

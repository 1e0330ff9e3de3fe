"""One taxonomy of module types and functions (in the spirit of Zennit's ``types.py``).

Every rule-based method derives what it does from here:

- :data:`ACTIVATIONS`: elementwise non-linearities, each with its module type, its functions
  and Tensor methods (in-place variants too) and a module factory. DeepLIFT applies the
  rescale rule to every listed function; ``functional_to_modules`` turns the functions into
  modules (guided backprop hooks ReLU modules); adding an activation is one line here.
- :data:`FUNCTION_KINDS`: every function DeepLIFT knows, by kind (see the ``*`` constants):
  ``linear`` (affine in its input-dependent tensors; autograd's gradient is exact),
  ``neutral`` (no input-dependent tensor output), ``elementwise``, ``product`` (bilinear in two
  tensors: ``mul``, ``matmul``, ``bmm``, ``einsum``), ``division``, ``normalisation``,
  ``softmax``, ``attention``, ``pooling`` (max pooling). A function not listed is refused when
  it touches an input-dependent tensor.
- module types by kind (:data:`MODULE_KINDS`), for the surgery steps and the docs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

LINEAR, NEUTRAL, ELEMENTWISE, PRODUCT, DIVISION = (
    "linear", "neutral", "elementwise", "product", "division")  # fmt: skip
NORMALISATION, SOFTMAX, ATTENTION, POOLING = "normalisation", "softmax", "attention", "pooling"
MULTILINEAR = "multilinear"
T = torch.Tensor


def _no_inplace(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def make(*args, inplace=False, **kwargs):
        return factory(*args, **kwargs)

    return make


@attrs.frozen
class Activation:
    """An elementwise non-linearity: ``module`` type, its ``functions`` (functions and Tensor
    methods), the method names that ``functional_to_modules`` rewrites, and ``factory``
    (a module from the call's constant arguments)."""

    module: type[nn.Module]
    functions: tuple[Any, ...]
    methods: tuple[str, ...]
    factory: Callable[..., nn.Module]


# fmt: off
ACTIVATIONS: tuple[Activation, ...] = (
    Activation(nn.ReLU, (F.relu, F.relu_, torch.relu, torch.relu_, T.relu, T.relu_),
               ("relu", "relu_"), _no_inplace(nn.ReLU)),
    Activation(nn.ReLU6, (F.relu6,), (), _no_inplace(nn.ReLU6)),
    Activation(nn.LeakyReLU, (F.leaky_relu, F.leaky_relu_), (),
               _no_inplace(lambda negative_slope=0.01: nn.LeakyReLU(negative_slope))),
    Activation(nn.ELU, (F.elu, F.elu_), (), _no_inplace(lambda alpha=1.0: nn.ELU(alpha))),
    Activation(nn.SELU, (F.selu, torch.selu, torch.selu_), (), _no_inplace(nn.SELU)),
    Activation(nn.CELU, (F.celu, torch.celu, torch.celu_), (),
               _no_inplace(lambda alpha=1.0: nn.CELU(alpha))),
    Activation(nn.GELU, (F.gelu,), (), lambda approximate="none": nn.GELU(approximate)),
    Activation(nn.SiLU, (F.silu,), (), _no_inplace(nn.SiLU)),
    Activation(nn.Mish, (F.mish,), (), _no_inplace(nn.Mish)),
    Activation(nn.Sigmoid, (torch.sigmoid, F.sigmoid, T.sigmoid, T.sigmoid_, torch.sigmoid_),
               ("sigmoid", "sigmoid_"), nn.Sigmoid),
    Activation(nn.Tanh, (torch.tanh, F.tanh, T.tanh, T.tanh_, torch.tanh_),
               ("tanh", "tanh_"), nn.Tanh),
    Activation(nn.Softplus, (F.softplus,), (),
               lambda beta=1.0, threshold=20.0: nn.Softplus(beta, threshold)),
    Activation(nn.Hardtanh, (F.hardtanh, F.hardtanh_), (),
               _no_inplace(lambda min_val=-1.0, max_val=1.0: nn.Hardtanh(min_val, max_val))),
    Activation(nn.Hardswish, (F.hardswish,), (), _no_inplace(nn.Hardswish)),
    Activation(nn.Hardsigmoid, (F.hardsigmoid,), (), _no_inplace(nn.Hardsigmoid)),
    Activation(nn.Softsign, (F.softsign,), (), nn.Softsign),
    Activation(nn.Tanhshrink, (F.tanhshrink,), (), nn.Tanhshrink),
    Activation(nn.LogSigmoid, (F.logsigmoid,), (), nn.LogSigmoid),
)

#: Elementwise mathematical functions without a module of their own (rescale rule too; the
#: other arguments must not depend on the input).
MATH_ELEMENTWISE: tuple[Any, ...] = (
    torch.exp, T.exp, T.exp_, torch.log, T.log, torch.log1p, T.log1p, torch.expm1,
    torch.sqrt, T.sqrt, torch.rsqrt, T.rsqrt, torch.reciprocal, T.reciprocal,
    torch.pow, T.pow, T.__pow__, torch.square, T.square, torch.abs, T.abs, T.__abs__,
    torch.erf, T.erf, torch.erfc, torch.sin, torch.cos, T.sin, T.cos, torch.atan, torch.arctan,
    torch.clamp, T.clamp, T.clamp_, torch.clip, T.clip, torch.clamp_min, T.clamp_min,
    T.clamp_min_, torch.clamp_max, T.clamp_max, T.clamp_max_, F.threshold, F.softshrink,
    F.hardshrink, F.rrelu, torch.special.expit,
    torch.special.erf, torch.special.ndtr,
)

PRODUCTS: tuple[Any, ...] = (
    torch.mul, T.mul, T.mul_, T.__mul__, T.__rmul__, T.__imul__, torch.multiply, T.multiply,
    torch.matmul, T.matmul, T.__matmul__, T.__rmatmul__, torch.mm, T.mm, torch.bmm, T.bmm,
    torch.einsum,
)
DIVISIONS: tuple[Any, ...] = (
    torch.div, T.div, T.div_, T.__truediv__, T.__rtruediv__, T.__itruediv__, torch.true_divide,
    T.true_divide, torch.divide, T.divide,
)
NORMALISATIONS: tuple[Any, ...] = (F.layer_norm, F.group_norm, F.rms_norm, F.batch_norm)
SOFTMAXES: tuple[Any, ...] = (
    F.softmax, torch.softmax, T.softmax, F.log_softmax, torch.log_softmax, T.log_softmax,
)
ATTENTIONS: tuple[Any, ...] = (F.scaled_dot_product_attention, F.multi_head_attention_forward)
MAX_POOLS: tuple[Any, ...] = (F.max_pool2d, torch.max_pool2d, F.adaptive_max_pool2d)

#: Affine in every input-dependent tensor argument (shape, copy, sum, linear layers with
#: constant weights, ...): autograd's own gradient is DeepLIFT's multiplier.
LINEARS: tuple[Any, ...] = (
    # arithmetic
    torch.add, T.add, T.add_, T.__add__, T.__radd__, T.__iadd__, torch.sub, T.sub, T.sub_,
    T.__sub__, T.__rsub__, T.__isub__, torch.subtract, torch.neg, T.neg, T.__neg__, T.__pos__,
    torch.sum, T.sum, torch.mean, T.mean, torch.cumsum, T.cumsum, torch.diff, torch.trace,
    # shape, layout, copies, dtype
    T.view, T.view_as, T.reshape, T.reshape_as, torch.reshape, T.flatten, torch.flatten,
    T.unflatten, torch.unflatten, T.permute, torch.permute, T.transpose, torch.transpose,
    T.transpose_, T.t, torch.t, T.swapaxes, torch.swapaxes, T.movedim, torch.movedim,
    T.squeeze, torch.squeeze, T.squeeze_, T.unsqueeze, torch.unsqueeze, T.unsqueeze_,
    T.expand, T.expand_as, T.repeat, T.repeat_interleave, torch.repeat_interleave, T.tile,
    torch.tile, T.contiguous, T.clone, torch.clone, T.to, T.float, T.double, T.half,
    T.bfloat16, T.type, T.type_as, T.cpu, T.cuda, T.chunk, torch.chunk, T.split, torch.split,
    T.tensor_split, torch.tensor_split, T.unbind, torch.unbind, T.narrow, torch.narrow,
    T.select, torch.select, T.index_select, torch.index_select, T.gather, torch.gather,
    T.__getitem__, T.__setitem__, T.copy_, T.masked_fill, T.masked_fill_, torch.masked_fill,
    torch.where, T.flip, torch.flip, torch.roll, T.roll, torch.cat, torch.concat,
    torch.concatenate, torch.stack, torch.hstack, torch.vstack, T.unfold, T.diagonal,
    torch.diagonal, T.tril, T.triu, torch.tril, torch.triu, T.__iter__, T.split_with_sizes,
    T.fill_diagonal_, T.zero_, T.as_strided, T.resolve_conj, T.resolve_neg,
    # layers (multilinear: see MULTILINEARS)
    F.pad, F.interpolate, F.upsample, F.pixel_shuffle, F.pixel_unshuffle, F.unfold, F.fold,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, torch.avg_pool1d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.adaptive_avg_pool1d, F.dropout,
    F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    torch.dropout,
)
#: Linear in each tensor argument, multilinear jointly (layers and their weights): linear
#: while at most one tensor argument depends on the input, refused otherwise.
MULTILINEARS: tuple[Any, ...] = (
    F.linear, F.bilinear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
    F.conv_transpose3d, torch.conv2d, torch.addmm, torch.baddbmm, F.embedding,
)
#: No input-dependent floating-point output: shape/dtype queries, constructors, ``*_like``.
NEUTRALS: tuple[Any, ...] = (
    T.size, T.dim, T.ndimension, T.numel, T.nelement, T.stride, T.storage_offset,
    T.is_contiguous, T.is_floating_point, T.is_complex, T.element_size, T.data_ptr,
    T.__len__, T.get_device, T.__hash__, T.__format__, T.__repr__,
    torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
    torch.randn_like, T.new_zeros, T.new_ones, T.new_empty, T.new_full, T.new_tensor,
    torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.tensor,
    torch.as_tensor, torch.linspace, torch.meshgrid, torch.broadcast_tensors,
    torch.is_tensor, torch.is_floating_point, torch.result_type, torch.is_grad_enabled,
    torch._C._set_grad_enabled, T.requires_grad_,
)
# fmt: on

ACTIVATION_FUNCTIONS: dict[Any, Activation] = {f: a for a in ACTIVATIONS for f in a.functions}


def _table() -> dict[Any, str]:
    kinds: dict[Any, str] = {}
    for kind, funcs in (
        (NEUTRAL, NEUTRALS),
        (LINEAR, LINEARS),
        (MULTILINEAR, MULTILINEARS),
        (ELEMENTWISE, tuple(ACTIVATION_FUNCTIONS) + MATH_ELEMENTWISE),
        (PRODUCT, PRODUCTS),
        (DIVISION, DIVISIONS),
        (NORMALISATION, NORMALISATIONS),
        (SOFTMAX, SOFTMAXES),
        (ATTENTION, ATTENTIONS),
        (POOLING, MAX_POOLS),
    ):
        for f in funcs:
            kinds[f] = kind
    return kinds


#: function -> kind (one of the constants above); anything else is refused.
FUNCTION_KINDS: dict[Any, str] = _table()


def function_kind(func: Any) -> str | None:
    """The kind of ``func`` (None: unknown). Attribute reads (``x.shape``, ``x.T``) count as
    linear."""
    kind = FUNCTION_KINDS.get(func)
    if kind is None and type(func).__name__ == "method-wrapper" and func.__name__ == "__get__":
        return LINEAR
    return kind


#: Module types by kind (max pooling has its exact window rule, see ``surgery.maxpool``).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = tuple(a.module for a in ACTIVATIONS)
MAXPOOL_TYPES: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)
MODULE_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    ELEMENTWISE: ACTIVATION_TYPES,
    POOLING: MAXPOOL_TYPES,
    NORMALISATION: (
        nn.LayerNorm,
        nn.GroupNorm,
        nn.RMSNorm,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
    ),  # fmt: skip
    ATTENTION: (nn.MultiheadAttention,),
    SOFTMAX: (nn.Softmax, nn.LogSoftmax),
    LINEAR: (
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.Dropout,
        nn.Identity,
        nn.Flatten,
        nn.Upsample,
    ),  # fmt: skip
}

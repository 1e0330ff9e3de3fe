"""Normalisations and attention as ruled primitives, for DeepLIFT (:mod:`._dl_mode`).

Each function here recomputes one op from primitives, every one of them through
``rules.call`` (so each gets its exact rule and is recorded in the reference pass the same
way): ``layer_norm = (x - mean) * rsqrt(mean((x - mean)^2) + eps) * w + b`` (the square by
the product rule), group and RMS norm likewise, ``scaled_dot_product_attention =
softmax(q k^T * scale + mask) v``, and ``multi_head_attention_forward`` as projections, that
attention and the output projection. Values equal the fused ops up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xraylens.errors import InputError

T = torch.Tensor


def decompose(rules, func, args, kwargs):
    """The call ``func(*args, **kwargs)`` of a normalisation or attention, decomposed."""

    def call(f, *a, **k):
        return rules.call(f, a, k)

    if func is F.batch_norm:
        return _batch_norm(rules, func, args, kwargs)
    impl = _IMPLS[func]
    try:
        return impl(call, *args, **kwargs)
    except _Unsupported as exc:
        raise rules.refuse(f"{func.__name__} with {exc}") from None


class _Unsupported(Exception):
    pass


def _batch_norm(rules, func, args, kwargs):
    names = ("input", "running_mean", "running_var", "weight", "bias", "training")
    bound = dict(zip(names, args, strict=False)) | kwargs
    stats = bound.get("running_mean") is None or bound.get("training", False)
    if stats and rules.dependent(bound["input"]):
        raise rules.refuse("batch_norm with batch statistics (training mode)")
    return func(*args, **kwargs)  # eval mode: affine per channel


def _normalise(call, x, dims, eps):
    """(x - mean) / sqrt(var + eps) over ``dims``."""
    d = call(T.sub, x, call(torch.mean, x, dims, keepdim=True))
    var = call(torch.mean, call(torch.mul, d, d), dims, keepdim=True)
    return call(torch.mul, d, call(torch.rsqrt, call(torch.add, var, eps)))


def _layer_norm(call, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    y = _normalise(call, input, dims, eps)
    if weight is not None:
        y = call(torch.mul, y, weight)
    return y if bias is None else call(torch.add, y, bias)


def _group_norm(call, input, num_groups, weight=None, bias=None, eps=1e-5):
    n, c = input.shape[:2]
    g = call(T.reshape, input, (n, num_groups, -1))
    y = call(T.reshape, _normalise(call, g, (-1,), eps), tuple(input.shape))
    shape = (1, c) + (1,) * (input.dim() - 2)
    if weight is not None:
        y = call(torch.mul, y, call(T.reshape, weight, shape))
    return y if bias is None else call(torch.add, y, call(T.reshape, bias, shape))


def _rms_norm(call, input, normalized_shape, weight=None, eps=None):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    eps = torch.finfo(input.dtype).eps if eps is None else eps
    ms = call(torch.mean, call(torch.mul, input, input), dims, keepdim=True)
    y = call(torch.mul, input, call(torch.rsqrt, call(torch.add, ms, eps)))
    return y if weight is None else call(torch.mul, y, weight)


def _attention(call, q, k, v, mask=None, causal=False, scale=None):
    """softmax(q k^T * scale + mask) v; q [..., L, E], k [..., S, E], v [..., S, Ev]; a bool
    ``mask`` is True where attention is allowed. Returns (output, weights [..., L, S])."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    a = call(torch.mul, call(torch.matmul, q, call(T.transpose, k, -2, -1)), scale)
    n_q, n_k = q.shape[-2], k.shape[-2]
    if causal:
        allowed = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        a = call(T.masked_fill, a, ~allowed, float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            a = call(T.masked_fill, a, ~mask, float("-inf"))
        else:
            a = call(torch.add, a, mask)
    p = call(torch.softmax, a, -1)
    return call(torch.matmul, p, v), p


def _sdpa(call, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):  # fmt: skip
    if dropout_p:
        raise _Unsupported(f"dropout_p={dropout_p} (random)")
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key = call(T.repeat_interleave, key, rep, -3)
        value = call(T.repeat_interleave, value, rep, -3)
    return _attention(call, query, key, value, attn_mask, is_causal, scale)[0]


def _mha(call, query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
         bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
         training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
         use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
         v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
         is_causal=False):  # fmt: skip
    """``F.multi_head_attention_forward`` (inputs [L, N, E] or [L, E])."""
    for name, bad in (("bias_k/bias_v", bias_k is not None or bias_v is not None),
                      ("add_zero_attn", add_zero_attn),
                      ("static_k/static_v", static_k is not None or static_v is not None),
                      ("dropout in training", training and dropout_p > 0)):  # fmt: skip
        if bad:
            raise _Unsupported(name)
    batched = query.dim() == 3
    if not batched:
        query, key, value = (call(T.unsqueeze, t, 1) for t in (query, key, value))
    n_q, n, e = query.shape
    n_k, h = key.shape[0], num_heads
    if e != embed_dim_to_check or e % h:
        raise InputError(f"multi_head_attention_forward: embed dim {e} vs {embed_dim_to_check}")
    if use_separate_proj_weight:
        w = (q_proj_weight, k_proj_weight, v_proj_weight)
    else:
        w = in_proj_weight.chunk(3)
    b = (None,) * 3 if in_proj_bias is None else in_proj_bias.chunk(3)

    def heads(t, length):  # [length, N, E] -> [N, H, length, E/H]
        return call(T.permute, call(T.reshape, t, (length, n, h, e // h)), (1, 2, 0, 3))

    q = heads(call(F.linear, query, w[0], b[0]), n_q)
    k = heads(call(F.linear, key, w[1], b[1]), n_k)
    v = heads(call(F.linear, value, w[2], b[2]), n_k)
    mask = _mha_mask(attn_mask, key_padding_mask, n, h, n_q, n_k, q.dtype)
    causal = is_causal and attn_mask is None
    out, p = _attention(call, q, k, v, mask, causal)
    out = call(T.reshape, call(T.permute, out, (2, 0, 1, 3)), (n_q, n, e))
    out = call(F.linear, out, out_proj_weight, out_proj_bias)
    weights = None
    if need_weights:
        weights = call(torch.mean, p, 1) if average_attn_weights else p
        if not batched:
            weights = call(T.squeeze, weights, 0)
    return (out if batched else call(T.squeeze, out, 1)), weights


def _mha_mask(attn_mask, key_padding_mask, n, h, n_q, n_k, dtype):
    """An additive float mask [N, H, L, S] (MHA's bool masks are True where *not* allowed)."""
    mask = None
    for m, shape in ((attn_mask, None), (key_padding_mask, (n, 1, 1, n_k))):
        if m is None:
            continue
        if m.requires_grad:
            raise _Unsupported("an input-dependent mask")
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
        m = m.to(dtype)
        if shape is not None:
            m = m.reshape(shape)
        elif m.dim() == 3:
            m = m.reshape(n, h, n_q, n_k)
        mask = m if mask is None else mask + m
    return mask


_IMPLS = {
    F.layer_norm: _layer_norm,
    F.group_norm: _group_norm,
    F.rms_norm: _rms_norm,
    F.scaled_dot_product_attention: _sdpa,
    F.multi_head_attention_forward: _mha,
}

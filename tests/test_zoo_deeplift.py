"""DeepLIFT and DeepLiftShap are exact on models xraylens did not write, and refuse what they
cannot do exactly.

Zoo (tests/zoo.py: SE gates, Hardswish, SiLU, GELU, LayerNorm, ViTs with fused and unfused
attention, Swin, DenseNet with in-place functional ReLUs, every activation as module and
function) plus the five registry backbones, float64, random weights, every label, a random
baseline: relative completeness error ``|Σ attribution - (f(x) - f(x0))| / |f(x) - f(x0)|``
<= 1e-6 (measured ~1e-13 .. 1e-8) for the float64 sum inside (``delta``); the returned float32
maps, summed, agree with the model's own ``f(x) - f(x0)`` to float32 rounding. The backbones
run DeepLiftShap here; their DeepLIFT is in ``test_attr_deeplift.py`` (same bound).
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from model_guard import assert_untouched, backbone, tiny_input
from torch import nn
from zoo import ZOO, ActivationZoo, zoo_input, zoo_model

import xraylens as xl
from xraylens.attr.deeplift import CompletenessWarning
from xraylens.errors import InputError
from xraylens.surgery import taxonomy as tx

TOL = 1e-6
CASES = [("zoo", n) for n in ZOO] + [("backbone", n) for n in xl.list_classifiers()]


@functools.cache
def _activations() -> xl.Classifier:
    """The zoo's activation chain with 3x the mixers' weights: at the default init its 27
    activations flatten the output (|f(x) - f(x0)| ~ 1e-16), too flat to measure."""
    torch.manual_seed(0)
    net = ActivationZoo().double().eval()
    with torch.no_grad():
        for conv in net.mixers:
            conv.weight.mul_(3)
    labels = [f"l{i}" for i in range(5)]
    return xl.Classifier(net, labels=labels, in_channels=3, min_input_size=16)


def _case(kind: str, name: str):
    if kind == "zoo":
        clf = _activations() if name == "activations" else zoo_model(name, torch.float64)
        return clf, zoo_input(clf, n=1, seed=3), zoo_input(clf, n=2, seed=4)
    clf = backbone(name, torch.float64)
    return clf, tiny_input(clf, n=1, seed=3), tiny_input(clf, n=2, seed=4)


def _relative(values: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    total = values.double().flatten(2).sum(2)
    return (total - diff).abs() / diff.abs().clamp_min(1e-3 * diff.abs().max())


@pytest.mark.parametrize("kind, name", CASES, ids=[n for _, n in CASES])
def test_deeplift_and_shap_are_exact(kind, name):
    clf, x, refs = _case(kind, name)
    with torch.no_grad():
        fx, fr = clf(x), clf(refs)
    runs = [("deeplift_shap", {"baselines": refs}, fx - fr.mean(0, keepdim=True))]
    if kind == "zoo":  # backbones: DeepLIFT in test_attr_deeplift.py (same bound)
        runs.append(("deeplift", {"baseline": refs[:1]}, fx - fr[:1]))
    for method, params, diff in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompletenessWarning)
            with assert_untouched(clf.module):
                res = xl.get_attributor(method, **params).attribute(clf, x, "all")
        assert diff.abs().max() > 1e-5  # the model is not flat between input and baseline
        # the maps are stored in float32: their sum agrees to float32 rounding ...
        total = res.values.double().flatten(2).sum(2)
        assert (total - diff).abs().max() <= 1e-5 * diff.abs().max()
        # ... and the float64 sum inside (delta) to TOL
        err = res.delta.reshape(diff.shape).abs() / diff.abs().clamp_min(1e-3 * diff.abs().max())
        assert err.max() <= TOL, f"{name}: {method} completeness error {err.max():.1e}"


# --- refused ------------------------------------------------------------------------------
class _Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _Sort(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=-1)[0]


class _Custom(nn.Module):
    def forward(self, x):
        return _Relu.apply(x)


class _Argmax(nn.Module):
    def forward(self, x):  # a data-dependent selection: no gradient to carry it
        return x * (x == x.amax(1, keepdim=True))


def _net(inner: nn.Module) -> xl.Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(inner), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 3),
    ).double()  # fmt: skip
    return xl.Classifier(net, labels=["a", "b", "c"], in_channels=1, min_input_size=8)


class _Dropout(nn.Module):
    def forward(self, x):  # random in both passes: no exact rule
        return F.dropout(x, 0.5, training=True)


@pytest.mark.parametrize(
    "inner, message",
    [
        (_Dropout(), r"dropout in training mode \(random\) inside module '1\.0' \(_Dropout\)"),
        (_Sort(), r"torch\.sort inside module '1\.0' \(_Sort\)"),
        (_Custom(), r"autograd\.Function _Relu inside module '1\.0' \(_Custom\)"),
        (_Argmax(), r"amax inside module '1\.0' \(_Argmax\)"),
    ],
    ids=["dropout", "sort", "custom_function", "amax"],
)
@pytest.mark.parametrize("method", ["deeplift", "deeplift_shap"])
def test_op_without_rule_is_refused(inner, message, method):
    clf = _net(inner)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    with assert_untouched(clf.module), pytest.raises(InputError, match=message):
        xl.get_attributor(method).attribute(clf, x, "all")


def test_without_the_product_rule_the_result_warns(monkeypatch):
    """What the product rule prevents: SE gates treated as linear give a silently wrong map;
    the completeness check after the work names the labels."""
    for f in tx.PRODUCTS:
        monkeypatch.setitem(tx.FUNCTION_KINDS, f, tx.LINEAR)
    clf, x, refs = _case("zoo", "mobilenet_v3_small")
    with pytest.warns(CompletenessWarning, match=r"image 0 label '.+'"):
        xl.get_attributor("deeplift", baseline=refs[:1]).attribute(clf, x, "all")


# --- in-place ops, methods, functions, products, division ---------------------------------
class _Tricky(nn.Module):
    """In-place activations, ``*=`` gates, division by an input-dependent tensor, einsum and
    bmm of two input-dependent tensors, a reused module, ``+=`` residuals."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        a = F.relu(self.c1(x), inplace=True)
        b = self.c2(a).relu_()
        b += a  # in-place residual
        g = self.c2(a).sigmoid()
        b *= g  # in-place gate
        q = b.flatten(2)  # [N, 4, 64]
        att = torch.bmm(q, a.flatten(2).transpose(1, 2)).softmax(-1)  # [N, 4, 4]
        mix = torch.einsum("nij,njk->nik", att, q)
        d = mix / (1.5 + self.act(q).pow(2))
        e = 2.0 / (1 + torch.exp(-mix))
        return (self.act(d) + self.act(e)).mean(-1)[:, :3]


def test_inplace_products_and_division_are_exact():
    torch.manual_seed(1)
    clf = xl.Classifier(_Tricky().double(), labels=["a", "b", "c"], in_channels=1, min_input_size=8)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=g)
    x0 = torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=g)
    with assert_untouched(clf.module):
        res = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x, "all")
    with torch.no_grad():
        diff = clf(x) - clf(x0)
    assert _relative(res.values, diff).max() <= 1e-5
    assert (res.delta.reshape(diff.shape).abs() / diff.abs()).max() <= TOL


def test_taxonomy_is_the_single_source():
    from xraylens.surgery import ACTIVATION_TYPES, modularize

    assert ACTIVATION_TYPES == tx.ACTIVATION_TYPES
    for act in tx.ACTIVATIONS:
        for f in act.functions:
            assert tx.function_kind(f) == tx.ELEMENTWISE
            if f in modularize._ELEMENTWISE:
                assert isinstance(modularize._ELEMENTWISE[f][1](), act.module)
    assert tx.function_kind(torch.sort) is None and tx.function_kind(torch.mul) == tx.PRODUCT


class _Tokens(nn.Module):
    """[N, 1, 8, 8] -> conv (-> ``spatial``) -> 16 tokens of 8 (-> ``op``) -> 3 logits."""

    def __init__(self, op=None, spatial=None):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 2, stride=2)
        self.spatial, self.op = spatial, op
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = self.conv(x)
        if self.spatial is not None:
            y = self.spatial(y)
        t = y.flatten(2).transpose(1, 2)  # [N, 16, 8]
        if self.op is not None:
            t = self.op(t)
        return self.head(F.gelu(t).mean(1))


class _MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.register_buffer("mask", torch.ones(16, 16, dtype=torch.bool).triu(1))

    def forward(self, t):
        pad = torch.zeros(t.shape[0], 16, dtype=torch.bool, device=t.device)
        pad[:, -3:] = True
        out, w = self.mha(t, t, t, attn_mask=self.mask, key_padding_mask=pad)
        return out + w.sum(-1, keepdim=True)  # the averaged weights too


class _SDPA(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.register_buffer("bias", torch.randn(16, 16))

    def forward(self, t):
        q, k, v = self.qkv(t).reshape(t.shape[0], 16, 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        b = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias, scale=0.3)
        return (a + b).transpose(1, 2).reshape(t.shape)


@pytest.mark.parametrize(
    "make",
    [
        lambda: _Tokens(nn.LayerNorm(8)),
        lambda: _Tokens(nn.RMSNorm(8)),
        lambda: _Tokens(lambda t: F.rms_norm(t, (8,), eps=None)),
        lambda: _Tokens(spatial=nn.GroupNorm(2, 8)),
        lambda: _Tokens(nn.LogSoftmax(-1)),
        lambda: _Tokens(lambda t: t * t.softmax(1)),
        lambda: _Tokens(_MHA()),
        lambda: _Tokens(_SDPA()),
    ],
    ids=[
        "layernorm",
        "rmsnorm",
        "f_rms_norm",
        "groupnorm",
        "log_softmax",
        "softmax_gate",
        "mha_masks_weights",
        "sdpa_causal_float_mask",
    ],  # fmt: skip
)
def test_normalisation_softmax_attention_are_exact(make):
    torch.manual_seed(2)
    net = make().double()
    for m in net.modules():  # non-trivial affine parameters
        for name in ("weight", "bias"):
            p = getattr(m, name, None)
            if isinstance(p, nn.Parameter) and isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                p.data.normal_()
    clf = xl.Classifier(net, labels=["a", "b", "c"], in_channels=1, min_input_size=8)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=g) * 4
    x0 = torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=g) * 4
    with torch.no_grad():
        diff = clf(x) - clf(x0)
    with assert_untouched(clf.module):
        res = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x, "all")
    assert diff.abs().max() > 1e-3
    assert (res.delta.reshape(diff.shape).abs() / diff.abs()).max() <= TOL

"""Properties every registered attributor must have (occlusion and third-party ones included).

Parametrised over ``xl.list_attributors()``; a method is skipped only where a property does not
apply, with the reason. Small inputs; cheap parameters for the built-in methods.
"""

from __future__ import annotations

import pytest
import torch
from model_guard import assert_untouched, backbone, small_classifier, tiny_input

import xraylens as xl
from xraylens.attr import _pairs
from xraylens.errors import InputError

METHODS = xl.list_attributors()
BACKBONES = xl.list_classifiers()

#: cheap parameters for the built-in methods (unknown methods run with their defaults)
CHEAP = {
    "integrated_gradients": {"n_steps": 3},
    "deeplift_shap": {"n_baselines": 2},
    "gradient_shap": {"n_baselines": 2, "n_samples": 2},
    "occlusion": {"window": 0.5, "stride": 0.5},
    "feature_ablation": {"features": "grid", "n_features": 4},
    "lime": {"n_samples": 16, "features": "grid", "n_features": 4, "alpha": 1e-4},
    "kernel_shap": {"n_samples": 16, "features": "grid", "n_features": 4},
    "rise": {"n_masks": 8, "grid": 2},
    "score_cam": {"max_channels": 4},
}
#: methods whose map of a 1 x 1 layer (resnet18's layer4 at 32 px) is identically 0
ZERO_ON_ONE_PIXEL = {"eigen_cam"}
#: methods whose map does not depend on the model's output (the activations' PCA)
OUTPUT_FREE = {"eigen_cam"}


def _attributor(method: str, **extra) -> xl.Attributor:
    return xl.get_attributor(method, **(CHEAP.get(method, {}) | extra))


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_callers_model_untouched(method, name):
    """Same parameters, module objects, inplace flags, train/eval flags, hooks afterwards.
    Half of the (method, backbone) cases start in train mode, half in eval mode, so that every
    method and every backbone sees both."""
    clf = backbone(name)
    train = (METHODS.index(method) + BACKBONES.index(name)) % 2 == 0
    clf.module.train(train)
    try:
        x = tiny_input(clf, n=1)
        with assert_untouched(clf.module):
            res = _attributor(method).attribute(clf, x, [clf.labels[3]])
        assert res.values.shape == (1, 1, *x.shape[1:])
        assert torch.isfinite(res.values).all()
    finally:
        clf.module.eval()


@pytest.mark.parametrize("method", METHODS)
def test_float64_model_gives_float32_values(method):
    clf = backbone("resnet18", torch.float64)
    res = _attributor(method).attribute(clf, tiny_input(clf, n=2), [0, 2])
    assert res.values.dtype == torch.float32 and res.values.device.type == "cpu"
    assert torch.isfinite(res.values).all()
    assert method in ZERO_ON_ONE_PIXEL or res.values.abs().sum() > 0
    assert res.delta is None or res.delta.shape == (2, 2)


@pytest.mark.parametrize("method", METHODS)
def test_target_forms_agree(method):
    """A pair's map does not depend on which other pairs are in the same call."""
    clf = small_classifier(dtype=torch.float64)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    att = _attributor(method)
    full = att.attribute(clf, x, "all")
    assert full.values.shape == (3, 5, 1, 8, 8) and full.labels == clf.labels
    per_image = att.attribute(clf, x, [["l4", "l0"], [2], ["l1", "l2", "l3"]])
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 4] = mask[2, 1] = True
    masked = att.attribute(clf, x, mask)
    for i, row in enumerate([[4, 0], [2], [1, 2, 3]]):
        for slot, label in enumerate(row):
            torch.testing.assert_close(per_image.values[i, slot], full.values[i, label],
                                       rtol=1e-5, atol=1e-7)  # fmt: skip
    torch.testing.assert_close(masked.values[0, 0], full.values[0, 4], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(masked.values[2, 0], full.values[2, 1], rtol=1e-5, atol=1e-7)
    assert masked.mask.tolist() == [[True], [False], [True]]
    if full.delta is not None:
        assert per_image.delta.shape == (3, 3) and (per_image.delta[~per_image.mask] == 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_chunks_of_one_give_the_same_maps(method):
    clf = small_classifier(dtype=torch.float64)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    whole = _attributor(method).attribute(clf, x, [0, 3])
    att = _attributor(method)
    att.engine.chunk = 1
    pieces = att.attribute(clf, x, [0, 3])
    torch.testing.assert_close(pieces.values, whole.values, rtol=1e-5, atol=1e-7)
    if whole.delta is not None:
        torch.testing.assert_close(pieces.delta, whole.delta, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_out_of_memory_retry_counts_every_chunk_once(method, monkeypatch):
    if not isinstance(xl.get_attributor(method), _pairs.GradientAttributor):
        pytest.skip(f"{method} does not use the pair machinery (its own retry is its tests')")
    clf = small_classifier(dtype=torch.float64)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = _attributor(method).attribute(clf, x, [1, 2])
    run = _pairs.GradientAttributor._run_chunk
    failed = []

    def flaky(self, ctx, start, stop):
        if stop - start > 1 and not failed:
            failed.append((start, stop))
            out = run(self, ctx, start, stop)  # work done, then the failure: must not count
            raise RuntimeError(f"CUDA out of memory (simulated; {len(out)} results dropped)")
        return run(self, ctx, start, stop)

    monkeypatch.setattr(_pairs.GradientAttributor, "_run_chunk", flaky)
    got = _attributor(method).attribute(clf, x, [1, 2])
    assert failed
    torch.testing.assert_close(got.values, expected.values, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_probability_output(method):
    if method in OUTPUT_FREE:
        pytest.skip(f"{method} does not use the output: logits and probs give the same map")
    clf = small_classifier(dtype=torch.float64)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    logits = _attributor(method).attribute(clf, x, [0])
    probs = _attributor(method).attribute(clf, x, [0], output="probs")
    assert probs.output == "probs" and logits.output == "logits"
    assert torch.isfinite(probs.values).all()
    assert not torch.allclose(probs.values, logits.values)


@pytest.mark.parametrize("method", METHODS)
def test_unknown_parameter_is_an_input_error(method):
    with pytest.raises(InputError, match="unknown parameter"):
        xl.get_attributor(method, no_such_parameter=1)


@pytest.mark.parametrize(
    "method, params, match",
    [
        ("integrated_gradients", {"n_steps": 0}, "n_steps"),
        ("integrated_gradients", {"method": "simpson"}, "method"),
        ("integrated_gradients", {"baseline": "zero"}, "baseline"),
        ("saliency", {"noise_tunnel": "smooth"}, "noise_tunnel"),
        ("saliency", {"nt_samples": 0}, "nt_samples"),
        ("deeplift_shap", {"baselines": "gaussian"}, "baselines"),
        ("gradient_shap", {"stdevs": -1.0}, "stdevs"),
        ("grad_cam", {"interpolate": "cubic"}, "interpolate"),
    ],
)
def test_bad_values_are_input_errors(method, params, match):
    with pytest.raises(InputError, match=match):
        xl.get_attributor(method, **params)


def test_bad_inputs_are_input_errors():
    clf = small_classifier(dtype=torch.float64)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(InputError, match="baseline"):
        xl.get_attributor("deeplift", baseline=torch.zeros(3, 1, 8, 8)).attribute(clf, x)
    with pytest.raises(InputError, match="layer"):
        xl.get_attributor("grad_cam", layer="nope").attribute(clf, x)
    with pytest.raises(InputError, match="baselines"):
        xl.get_attributor("gradient_shap", baselines=torch.zeros(2, 1, 5, 5)).attribute(clf, x)


def test_paper_presets():
    ig = xl.get_attributor("integrated_gradients", preset="paper")
    assert (ig.config.baseline, ig.config.n_steps, ig.config.method) == (0.0, 50, "gausslegendre")
    assert xl.get_attributor("deeplift", preset="paper").config.baseline == 0.0
    assert (
        xl.get_attributor("integrated_gradients", n_steps=50, baseline=0.0).params["n_steps"] == 50
    )
    assert xl.get_attributor("saliency", abs=True).config.abs is True


def test_explicit_device_computes_on_a_copy_there():
    clf = small_classifier(dtype=torch.float64)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    with assert_untouched(clf.module):
        res = xl.get_attributor("saliency", device="cpu").attribute(clf, x, [0])
    assert res.values.shape == (1, 1, 1, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_leaves_a_cpu_model_on_the_cpu():
    clf = backbone("resnet18")
    x = tiny_input(clf, n=1)
    ref = xl.get_attributor("deeplift").attribute(clf, x, [0, 1])
    with assert_untouched(clf.module):
        res = xl.get_attributor("deeplift", device="cuda").attribute(clf, x, [0, 1])
    torch.testing.assert_close(res.values, ref.values, rtol=1e-3, atol=1e-5)


def test_result_round_trips_with_its_parameters(tmp_path):
    clf = small_classifier(dtype=torch.float64)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    baseline = torch.full((1, 8, 8), 0.5, dtype=torch.float64)
    res = xl.get_attributor("integrated_gradients", n_steps=4, baseline=baseline).attribute(
        clf, x, [["l1"], ["l0", "l3"]]
    )
    back = xl.Attribution.load(res.save(tmp_path / "ig.npz"))
    assert back.method == "integrated_gradients" and back.labels == res.labels
    torch.testing.assert_close(back.values, res.values)
    torch.testing.assert_close(back.delta, res.delta)
    torch.testing.assert_close(back.params["baseline"], baseline)
    assert back.params["n_steps"] == 4 and back.mask.tolist() == res.mask.tolist()


def test_patched_forward_runs_on_the_copy():
    """A model whose forward was patched on the instance (a bound method in its __dict__)."""
    import types

    clf = small_classifier(dtype=torch.float64)
    net = clf.module

    def forward(self, x):  # the same function, written out
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))

    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    expected = xl.get_attributor("deeplift").attribute(clf, x, [0, 1])
    net.forward = types.MethodType(forward, net)
    try:
        with assert_untouched(net):
            got = xl.get_attributor("deeplift").attribute(clf, x, [0, 1])
    finally:
        del net.forward
    torch.testing.assert_close(got.values, expected.values)

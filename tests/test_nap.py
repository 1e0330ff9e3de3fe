"""The ``nap`` profiler: exactness against brute force, streaming, hooks, errors, backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xraylens as xl
from xraylens.profile import NAPProfiler, NAPResult, UnknownLayerError

GROUPS = ("a", "b", "c")


class Pair(nn.Module):
    """A layer returning a tuple (like Inception's named tuples): NAPs use the first tensor."""

    def forward(self, x):
        return x * 2.0, x


class Tiny(nn.Module):
    """Small CNN with known dead maps: after ``relu2`` channel 0 is constant 0.5 for every input
    and channel 1 is zero for every input; ``fc`` gives [N, C] vectors."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.pair = Pair()
        self.shared = nn.ReLU()
        self.squeeze = nn.AdaptiveAvgPool2d(4)  # any input size >= 8 px works
        self.fc = nn.Linear(6 * 4 * 4, 3)
        with torch.no_grad():
            self.conv2.weight[:2] = 0.0
            self.conv2.bias[0] = 0.5
            self.conv2.bias[1] = -1.0

    def forward(self, x):
        h = self.pool(self.relu1(self.conv1(x)))
        h = self.relu2(self.conv2(h))
        h, _ = self.pair(h)
        h = self.shared(self.shared(h))  # one module used twice: not profileable
        return self.fc(self.squeeze(h).flatten(1))


LAYERS = ("input", "conv1", "pool", "conv2", "relu2", "pair", "fc")


def tiny_classifier(dtype=torch.float32) -> xl.Classifier:
    torch.manual_seed(1)
    return xl.Classifier(
        Tiny().to(dtype),
        labels=GROUPS,
        nap_layers=("pool", "relu2"),
        name="tiny",
        min_input_size=8,
    )


def memberships(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """[n, 3] membership patterns: disjoint, overlapping, some images in no group, one empty."""
    if kind == "disjoint":
        return nn.functional.one_hot(torch.arange(n) % 3, 3).bool()
    m = torch.rand(n, 3, generator=gen) < 0.5
    if kind == "overlap":
        m[:, 0] = True  # group a holds everything, b and c overlap it and each other
    elif kind == "empty":
        m[:, 2] = False
    return m


def brute_force(clf, x, m, layers, batch=5):
    """Every activation stored, then float64 numpy means, NAPs and extremes per layer.

    The forward runs in the profiler's batches: float32 convolutions may round differently for
    another batch size, and the comparison is about the accumulation, to float64 tolerance."""
    store = {layer: [] for layer in layers}
    handles = []
    for layer in layers:
        if layer == "input":
            continue
        mod = clf.module.get_submodule(layer)

        def hook(_m, _i, out, _layer=layer):
            out = out[0] if isinstance(out, tuple) else out
            store[_layer].append(out.detach().clone())

        handles.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for start in range(0, len(x), batch):
            store["input"].append(x[start : start + batch].to(clf.dtype))
            clf.module(x[start : start + batch].to(clf.dtype))
    for h in handles:
        h.remove()
    out = {}
    mm = m.numpy()
    for layer in layers:
        acts = torch.cat(store[layer]).double().numpy()
        means = {
            g: acts[mm[:, i]].mean(axis=0) if mm[:, i].any() else None for i, g in enumerate(GROUPS)
        }
        seen = [g for g in GROUPS if means[g] is not None]
        uniform = np.mean([means[g] for g in seen], axis=0)
        size = sum(acts[mm[:, i]].sum(axis=0) for i, g in enumerate(GROUPS) if g in seen)
        size = size / mm[:, [GROUPS.index(g) for g in seen]].sum()
        flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
        lo, hi = flat.min(axis=(0, 2)), flat.max(axis=(0, 2))
        out[layer] = dict(means=means, uniform=uniform, size=size, lo=lo, hi=hi)
    return out


def run(clf, x, m, batch, layers=LAYERS, **kw) -> NAPResult:
    prof = xl.get_profiler("nap", layers=layers, groups=GROUPS, **kw)
    for start in range(0, len(x), batch):
        prof.update(clf, x[start : start + batch], m[start : start + batch])
    return prof.result()


@pytest.mark.parametrize("kind", ["disjoint", "overlap", "none", "empty"])
@pytest.mark.parametrize("batch", [1, 4, 7, 23])
def test_equals_brute_force(kind, batch):
    gen = torch.Generator().manual_seed(len(kind) * 100 + batch)
    clf = tiny_classifier()
    x = torch.rand(23, 1, 16, 16, generator=gen)
    m = memberships(kind, 23, gen)
    if kind == "none":
        m[:5] = False  # five images in no group: they count only for the extremes
    res = run(clf, x, m, batch)
    ref = brute_force(clf, x, m, LAYERS, batch)
    assert res.counts == {g: int(m[:, i].sum()) for i, g in enumerate(GROUPS)}
    assert res.n_images == 23
    for layer in LAYERS:
        r = ref[layer]
        for g in GROUPS:
            if r["means"][g] is None:
                assert np.isnan(res.mean[layer][g]).all() and np.isnan(res.nap[layer][g]).all()
                continue
            assert res.mean[layer][g].dtype == np.float64
            np.testing.assert_allclose(res.mean[layer][g], r["means"][g], rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(
                res.nap[layer][g], r["means"][g] - r["uniform"], rtol=1e-10, atol=1e-12
            )
            np.testing.assert_allclose(
                res.naps("size")[layer][g], r["means"][g] - r["size"], rtol=1e-10, atol=1e-12
            )
        np.testing.assert_array_equal(res.minimum[layer], r["lo"])
        np.testing.assert_array_equal(res.maximum[layer], r["hi"])
        assert res.inactive_fraction[layer] == np.mean(r["lo"] == r["hi"])


def test_shapes_and_known_inactive_maps():
    clf = tiny_classifier()
    x = torch.rand(10, 1, 16, 16)
    res = run(clf, x, memberships("disjoint", 10, None), 4)
    assert res.mean["conv2"]["a"].shape == (6, 8, 8)
    assert res.mean["fc"]["b"].shape == (3,)  # vector layer
    assert res.mean["pair"]["a"].shape == (6, 8, 8)  # first tensor of a tuple output
    np.testing.assert_array_equal(res.mean["pair"]["a"], 2 * res.mean["relu2"]["a"])
    # relu2: channel 0 constant 0.5, channel 1 zero, for every input
    assert res.inactive_maps("relu2")[:2].all() and not res.inactive_maps("relu2")[2:].any()
    assert res.zero_maps("relu2").tolist() == [False, True, False, False, False, False]
    assert res.inactive_fraction["relu2"] == pytest.approx(2 / 6)
    assert res.zero_fraction["relu2"] == pytest.approx(1 / 6)
    assert res.zero_fraction["conv2"] == 0.0  # before the ReLU channel 1 is constant -1
    assert res.inactive_fraction["conv2"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("split", [(5,), (1, 9), (3, 3, 4)])
def test_merged_shards_equal_whole(split):
    clf = tiny_classifier()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(17, 1, 16, 16, generator=gen)
    m = memberships("overlap", 17, gen)
    # batches of one image: float32 convolutions round alike whatever the shard boundaries
    whole = run(clf, x, m, 1)
    bounds = np.cumsum((0, *split, 17 - sum(split)))
    parts = [run(clf, x[a:b], m[a:b], 1) for a, b in zip(bounds[:-1], bounds[1:])]
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    assert merged.counts == whole.counts and merged.n_images == whole.n_images
    assert merged.inactive_fraction == whole.inactive_fraction
    assert merged.zero_fraction == whole.zero_fraction
    for layer in LAYERS:
        np.testing.assert_allclose(merged.sums[layer], whole.sums[layer], rtol=1e-13, atol=1e-12)
        np.testing.assert_array_equal(merged.minimum[layer], whole.minimum[layer])
        np.testing.assert_array_equal(merged.maximum[layer], whole.maximum[layer])


def test_float64_model_end_to_end():
    clf = tiny_classifier(torch.float64)
    x = torch.rand(6, 1, 16, 16, dtype=torch.float64)
    m = memberships("disjoint", 6, None)
    res = run(clf, x, m, 4)
    ref = brute_force(clf, x, m, LAYERS, 4)
    np.testing.assert_allclose(res.mean["conv2"]["a"], ref["conv2"]["means"]["a"], rtol=1e-13)


def test_model_left_untouched_and_hooks_removed():
    clf = tiny_classifier()
    clf.module.train()
    flags = [m.training for m in clf.module.modules()]
    params = {k: v.clone() for k, v in clf.module.state_dict().items()}
    x = torch.rand(4, 1, 16, 16)
    run(clf, x, memberships("disjoint", 4, None), 2)
    with pytest.raises(xl.InputError, match="more than once"):
        run(clf, x, memberships("disjoint", 4, None), 2, layers=("conv1", "shared"))
    assert [m.training for m in clf.module.modules()] == flags
    assert all(not m._forward_hooks for m in clf.module.modules())
    for k, v in clf.module.state_dict().items():
        assert torch.equal(v, params[k])


def test_eval_mode_used():
    """Dropout/batch-norm in train mode would make the profile random: eval mode is forced."""
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(0.9), nn.Flatten(), nn.LazyLinear(2))
    clf = xl.Classifier(module, labels=("p", "q"), min_input_size=8)
    clf(torch.rand(1, 1, 8, 8))  # materialise the lazy layer
    module.train()
    x = torch.rand(3, 1, 8, 8)
    p = xl.get_profiler("nap", layers=["0", "1"])
    p.update(clf, x, torch.ones(3, 2, dtype=torch.bool))
    res = p.result()
    assert res.groups == ("p", "q")  # groups None: the classifier's labels
    np.testing.assert_array_equal(res.mean["1"]["p"], res.mean["0"]["p"])
    assert module.training


def test_default_layers_and_profile_loop():
    clf = tiny_classifier()
    prof = NAPProfiler(groups=GROUPS, progress=True)
    assert isinstance(prof, xl.Profiler) and xl.list_profilers() == ["nap"]
    batches = [(torch.rand(3, 1, 16, 16), memberships("disjoint", 3, None)) for _ in range(4)]
    res = prof.profile(clf, batches)
    assert res.layers == ("input", "pool", "relu2") and res.model == "tiny"
    assert res.n_images == 12 and res.counts == {"a": 4, "b": 4, "c": 4}
    triples = [(x, m.float(), None) for x, m in batches]  # e.g. (images, targets, records)
    again = NAPProfiler(groups=GROUPS).profile(clf, triples, membership=lambda b: b[1])
    assert again == res
    # memory is fixed by the first batch: more images do not grow the state
    size = prof.state_bytes
    expected = 8 * 3 * (1 * 16 * 16 + 4 * 8 * 8 + 6 * 8 * 8) + 8 * 2 * (1 + 4 + 6) + 8 * 3
    assert size == expected
    prof.update(clf, torch.rand(30, 1, 16, 16), memberships("disjoint", 30, None))
    assert prof.state_bytes == size and prof.n_images == 42
    prof.reset()
    assert prof.n_images == 0 and prof.state_bytes == 0
    with pytest.raises(xl.InputError, match="no batch"):
        prof.result()


def test_membership_as_ints_and_numpy():
    clf = tiny_classifier()
    x = torch.rand(4, 1, 16, 16)
    m = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]])
    a = run(clf, x, torch.as_tensor(m).bool(), 4)
    p = xl.get_profiler("nap", layers=LAYERS, groups=GROUPS)
    p.update(clf, x, m)
    assert p.result() == a


def test_errors_and_failed_batch_leaves_state():
    clf = tiny_classifier()
    x = torch.rand(4, 1, 16, 16)
    m = memberships("disjoint", 4, None)
    with pytest.raises(UnknownLayerError, match="conv2") as err:
        run(clf, x, m, 4, layers=("conv_2",))
    assert isinstance(err.value, KeyError) and isinstance(err.value, xl.InputError)
    with pytest.raises(xl.InputError, match="rows"):
        run(clf, x, m[:3], 4)
    with pytest.raises(xl.InputError, match="columns"):
        run(clf, x, m[:, :2], 4)
    with pytest.raises(xl.InputError, match="0/1"):
        run(clf, x, m.float() * 0.5, 4)
    with pytest.raises(xl.InputError, match="weighting"):
        xl.get_profiler("nap", weighting="equal")
    with pytest.raises(xl.InputError, match="unique"):
        xl.get_profiler("nap", layers=["conv1", "conv1"])
    with pytest.raises(xl.InputError, match="empty"):
        xl.get_profiler("nap", layers=[])
    with pytest.raises(xl.InputError, match="channels"):
        run(clf, torch.rand(4, 3, 16, 16), m, 4)
    prof = xl.get_profiler("nap", layers=LAYERS, groups=GROUPS)
    prof.update(clf, x, m)
    before = prof.result()
    with pytest.raises(xl.InputError, match="same size"):
        prof.update(clf, torch.rand(4, 1, 24, 24), m)
    other = xl.Classifier(Tiny(), labels=GROUPS, name="other", min_input_size=8)
    with pytest.raises(xl.InputError, match="model"):
        prof.update(other, x, m)
    assert prof.result() == before  # nothing of the failed batches was added


class Partial(nn.Module):
    """``unused`` never runs; ``forward`` fails for images wider than 12 px."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.unused = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        if x.shape[-1] > 12:
            raise RuntimeError("boom")
        return self.conv(x).mean(dim=(2, 3))


def test_layer_that_does_not_run_and_failing_forward():
    clf = xl.Classifier(Partial(), labels=("p", "q"), min_input_size=8, name="partial")
    m = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(xl.InputError, match="did not run"):
        run(clf, torch.rand(2, 1, 8, 8), m, 2, layers=("conv", "unused"))
    with pytest.raises(xl.InputError, match="partial.*boom"):
        run(clf, torch.rand(2, 1, 16, 16), m, 2, layers=("conv",))
    # the input alone needs no forward pass (so the failing model is never called)
    assert run(clf, torch.rand(2, 1, 16, 16), m, 2, layers=("input",)).n_images == 2
    assert all(not mod._forward_hooks for mod in clf.module.modules())


@pytest.mark.parametrize("name", xl.list_classifiers())
def test_every_backbone_default_layers(name):
    clf = xl.get_classifier(name, num_classes=3, labels=GROUPS)
    size = clf.min_input_size
    prof = xl.get_profiler("nap", groups=GROUPS)
    prof.update(clf, torch.rand(2, 1, size, size), torch.tensor([[1, 0, 1], [0, 1, 1]]))
    res = prof.result()
    assert res.layers == ("input", *clf.nap_layers)
    for layer in res.layers:
        assert res.mean[layer]["c"].ndim == 3 and np.isfinite(res.nap[layer]["a"]).all()
        assert 0.0 <= res.inactive_fraction[layer] <= 1.0

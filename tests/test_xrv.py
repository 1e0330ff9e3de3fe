"""The TorchXRayVision plugin (extra ``xrv``): registration, equality with TorchXRayVision's own
forward, published-weight loading from files written here (no download), exact DeepLIFT.

Tests that need ``torchxrayvision`` skip cleanly where it is not installed.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from model_guard import randomize_batchnorm

import xraylens as xl
from xraylens.models import xrv as plugin

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def xrv():
    pytest.importorskip("torchxrayvision")
    return plugin.import_xrv()


@pytest.fixture
def registry(xrv):
    """The xrv classifiers in the registry: through the entry point once xraylens is installed
    from this pyproject, else registered here."""
    if "xrv_densenet121" in xl.list_classifiers():
        yield
        return
    name = xl.register_plugin(plugin, name="xrv-under-test")
    yield
    xl.unregister_plugin(name)


def _x(n=2, size=64, seed=0, dtype=torch.float32):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _scaled(x):
    return x * 2048 - 1024


def test_pyproject_declares_the_extra_and_the_entry_point():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["xraylens"]["xrv"] == "xraylens.models.xrv"
    extras = project["optional-dependencies"]
    assert any(d.replace(" ", "").startswith("torchxrayvision>=1.2") for d in extras["xrv"])
    assert any(d.startswith("torchxrayvision") for d in extras["dev"])


def test_registers_nothing_quietly_without_torchxrayvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchxrayvision", None)  # import fails
    names = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugin.register_classifiers(register=lambda name, factory: names.append(name))
    assert names == []
    with pytest.raises(xl.InputError, match=r'pip install "xraylens\[xrv\]"'):
        plugin.build_xrv("densenet121")


def test_registers_both_architectures(registry):
    assert {"xrv_densenet121", "xrv_resnet50"} <= set(xl.list_classifiers())
    before = list(warnings.filters)
    clf = xl.get_classifier("xrv_densenet121")
    assert warnings.filters == before  # torchxrayvision's filterwarnings("ignore") is undone
    assert clf.labels == tuple(plugin.import_xrv().models.DenseNet.targets)
    assert clf.input_size == 224 and clf.cam_layer == "features"
    assert clf.module.resolution is None  # inputs as given unless resize=True
    small = xl.get_classifier("xrv_resnet50", num_classes=3, labels=["a", "", "c"])
    assert small.labels == ("a", "c") and small(_x(1, 32)).shape == (1, 2)
    with pytest.raises(xl.InputError, match="fixes the labels"):
        xl.get_classifier("xrv_densenet121", weights="densenet121-res224-all", num_classes=3)
    with pytest.raises(xl.InputError, match="1 input channel"):
        xl.get_classifier("xrv_densenet121", in_channels=3)


def test_densenet_logits_equal_torchxrayvision(xrv):
    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None).double()
    randomize_batchnorm(net, 0, _scaled(_x(4, dtype=torch.float64)))
    slots = list(net.targets)
    slots[2] = slots[5] = ""  # empty slots are dropped
    clf = plugin.from_xrv(net, slots=slots, resize=False)
    x = _x(dtype=torch.float64)
    keep = [i for i, s in enumerate(slots) if s]
    with torch.no_grad():
        ref = net(_scaled(x))[:, keep]
    assert clf.labels == tuple(s for s in slots if s) and len(clf.labels) == 16
    torch.testing.assert_close(clf(x), ref, rtol=0, atol=1e-10 * float(ref.abs().max()))
    # resized to the native resolution inside the model, as TorchXRayVision does
    net.input_resolution = 224
    resized = plugin.from_xrv(net, slots=slots, resize=True)
    with torch.no_grad():
        ref = net(_scaled(x))[:, keep]
    torch.testing.assert_close(resized(x), ref, rtol=0, atol=1e-10 * float(ref.abs().max()))


def test_deeplift_is_exact_on_the_densenet(xrv):
    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None).double()
    randomize_batchnorm(net, 1, _scaled(_x(4, dtype=torch.float64)))
    clf = plugin.from_xrv(net, resize=False)
    x, x0 = _x(1, 48, dtype=torch.float64), _x(1, 48, seed=3, dtype=torch.float64)
    res = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x, ["Effusion", "Mass"])
    with torch.no_grad():
        diff = (clf(x) - clf(x0))[:, [clf.label_index("Effusion"), clf.label_index("Mass")]]
    total = res.values.double().sum(dim=(2, 3, 4))
    assert float(diff.abs().max()) > 0
    assert float((total - diff).abs().max()) <= 1e-6 * float(diff.abs().max())
    cam = xl.get_attributor("grad_cam", relu=False).attribute(clf, x, ["Effusion"])  # default layer
    assert cam.values.shape == (1, 1, 1, 48, 48) and cam.values.abs().sum() > 0


def test_published_densenet_weights_load_from_the_cache(xrv, registry, tmp_path):
    """TorchXRayVision's own loader, fed a file written here where it would download it."""
    name = "densenet121-res224-rsna"  # two pathologies, 16 empty slots
    torch.manual_seed(1)
    saved = xrv.models.DenseNet(weights=None)
    randomize_batchnorm(saved, 2, _scaled(_x(4, size=96)))
    url = xrv.models.model_urls[name]["weights_url"]
    torch.save(saved, tmp_path / os.path.basename(url))
    clf = xl.get_classifier("xrv_densenet121", weights=name, cache_dir=tmp_path, resize=True)
    assert clf.labels == ("Pneumonia", "Lung Opacity") and clf.weights == name
    assert len(clf.slots) == 18
    x = _x(1)
    with torch.no_grad():
        ref = saved.eval()(_scaled(torch.nn.functional.interpolate(
            x, size=(224, 224), mode="bilinear", antialias=True)))[:, [8, 16]]  # fmt: skip
    torch.testing.assert_close(clf(x), ref, rtol=0, atol=1e-4 * float(ref.abs().max()))
    # a local state_dict (clf.save) gives the same classifier
    clf.save(tmp_path / "mine.pt")
    again = xl.get_classifier(
        "xrv_densenet121", weights=tmp_path / "mine.pt", labels=clf.slots, resize=True
    )
    assert again.labels == clf.labels
    torch.testing.assert_close(again(x), clf(x), rtol=0, atol=0)
    with pytest.raises(xl.WeightsError, match="unknown TorchXRayVision weights.*res224-all"):
        xl.get_classifier("xrv_densenet121", weights="densenet121-res224-everything")


def test_resnet50_builds_offline_with_torchxrayvisions_architecture(xrv, registry, tmp_path):
    torch.manual_seed(2)
    clf = xl.get_classifier("xrv_resnet50")
    assert clf.weights is None and clf.input_size == 512 and len(clf.labels) == 18
    assert clf.module.model.conv1.in_channels == 1
    # TorchXRayVision's ResNet loads our random state_dict strictly: the same architecture
    name = "resnet50-res512-all"
    url = xrv.models.model_urls[name]["weights_url"]
    torch.save(clf.module.model.state_dict(), tmp_path / os.path.basename(url))
    theirs = xrv.models.ResNet(weights=name, cache_dir=str(tmp_path))
    published = xl.get_classifier("xrv_resnet50", weights=name, cache_dir=tmp_path, resize=False)
    x = _x(1, size=64)
    with torch.no_grad():
        ref = theirs.model(_scaled(x))  # its raw logits: no sigmoid, no op_threshs
    torch.testing.assert_close(published(x), ref, rtol=1e-5, atol=1e-4)
    assert published.labels == tuple(xrv.models.model_urls[name]["labels"])


def test_readme_example_runs_offline_from_the_cache(xrv, registry, tmp_path, monkeypatch):
    """The README's TorchXRayVision block (a ``py`` fence: it names published weights, so
    test_docs does not run it) runs as written with the weights file where TorchXRayVision
    keeps its downloads."""
    import re

    from PIL import Image

    text = (REPO / "README.md").read_text(encoding="utf-8")
    (code,) = [c for c in re.findall(r"```py\n(.*?)```", text, re.S) if "xrv_densenet121" in c]
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    url = xrv.models.model_urls["densenet121-res224-all"]["weights_url"]
    cache = tmp_path / ".torchxrayvision" / "models_data"
    cache.mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(xrv.models.DenseNet(weights=None), cache / os.path.basename(url))
    pixels = (torch.rand(256, 256, generator=torch.Generator().manual_seed(0)) * 255).byte()
    Image.fromarray(pixels.numpy()).save(tmp_path / "cxr.png")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    res = scope["res"]
    assert res.values.shape == (1, 2, 1, 224, 224) and res.labels == ("Effusion", "Pneumonia")
    assert float(res.delta.abs().max()) <= 1e-3 * float(res.values.abs().sum(dim=(2, 3, 4)).max())

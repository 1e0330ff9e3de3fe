"""The five backbone classifiers, parametrised over the registry."""

from __future__ import annotations

import urllib.error

import pytest
import torch

import xraylens as xl
from xraylens.data import PAPER_LABELS
from xraylens.models import published
from xraylens.models.backbones import BACKBONES

# Table 1 of the paper: trainable parameters with 14 classes and a 3-channel stem.
PAPER_PARAMETERS = {
    "resnet18": 11_183_694,
    "resnet34": 21_291_854,
    "inception_v3": 24_382_716,
    "densenet161": 26_502_926,
    "inception_resnet_v2": 54_327_982,
}

CLASSIFIERS = [n for n in xl.list_classifiers() if n in BACKBONES]


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.fixture(scope="module", params=CLASSIFIERS)
def grey(request) -> xl.Classifier:
    torch.manual_seed(0)
    return xl.get_classifier(request.param, num_classes=14, in_channels=1, weights=None)


def small_input(clf, n=2, channels=None):
    side = max(clf.min_input_size, 32)
    return torch.rand(n, channels or clf.in_channels, side, side)


def test_paper_parameter_counts():
    assert set(PAPER_PARAMETERS) == set(CLASSIFIERS)
    for name, expected in PAPER_PARAMETERS.items():
        clf = xl.get_classifier(name, num_classes=14, in_channels=3)
        assert trainable(clf.module) == expected, name


def test_greyscale_stem_has_one_channel(grey):
    stem = BACKBONES[grey.name].stem
    kernel = grey.module.state_dict()[stem]
    assert kernel.shape[1] == 1
    # the grey stem removes exactly two input channels' worth of kernel weights
    assert trainable(grey.module) == PAPER_PARAMETERS[grey.name] - 2 * kernel[:, 0].numel()


def test_defaults(grey):
    assert grey.labels == PAPER_LABELS and grey.num_classes == 14
    assert grey.in_channels == 1 and grey.input_size == 512
    assert grey.input_mean is None  # random weights: inputs in [0, 1] go in as they are
    names = dict(grey.module.named_modules())
    assert grey.cam_layer in names
    assert all(layer in names for layer in grey.nap_layers)


def test_forward_shape_and_eval_mode(grey):
    x = small_input(grey)
    grey.module.train()
    out = grey(x)
    assert out.shape == (2, 14) and out.dtype == torch.float32
    assert grey.module.training, "the caller's train flag is restored after the call"
    grey.module.eval()
    assert torch.allclose(out, grey(x)), "the classifier always computes in eval mode"


def test_inputs_are_validated(grey):
    side = grey.min_input_size
    with pytest.raises(xl.InputError, match="batch dimension"):
        grey(torch.rand(1, side, side))
    with pytest.raises(xl.InputError, match="3 channels.*expects 1"):
        grey(torch.rand(1, 3, side, side))
    with pytest.raises(xl.InputError, match=f"at least {side} px"):
        grey(torch.rand(1, 1, side - 1, side))
    with pytest.raises(xl.InputError, match="must be a torch.Tensor"):
        grey([[0.0]])


def test_float64_model(grey):
    clf = xl.get_classifier(grey.name, dtype=torch.float64)
    out = clf(small_input(clf, n=1))  # float32 input is cast to the model's dtype
    assert out.dtype == torch.float64


def test_weights_round_trip(grey, tmp_path):
    path = grey.save(tmp_path / "model.pt")
    again = xl.get_classifier(grey.name, weights=path)
    x = small_input(grey)
    assert torch.equal(grey(x), again(x))
    assert again.labels == grey.labels and again.weights == str(path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_round_trip_formats(tmp_path, suffix):
    clf = xl.get_classifier("resnet18", labels=["x", "y"], in_channels=3, normalize="imagenet")
    path = clf.save(tmp_path / f"model{suffix}")
    again = xl.get_classifier("resnet18", weights=path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(clf(x), again(x))
    assert (again.labels, again.in_channels) == (("x", "y"), 3)
    assert again.input_mean == clf.input_mean and again.input_std == clf.input_std


def test_checkpoint_layouts_are_understood(tmp_path):
    clf = xl.get_classifier("resnet18", labels=["a", "b", "c"])
    state = clf.module.state_dict()
    x = torch.rand(1, 1, 32, 32)
    layouts = {
        "bare.pt": state,
        "ckpt.pth": {"state_dict": state, "epoch": 3},
        "model.pt": {"model": state, "optimizer": {}},
        "ddp.pt": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        again = xl.get_classifier("resnet18", num_classes=3, weights=tmp_path / name)
        assert torch.equal(clf(x), again(x)), name


def test_labels_come_from_the_checkpoint(tmp_path):
    clf = xl.get_classifier("resnet18", labels=["COVID-19", "No Finding"])
    path = clf.save(tmp_path / "two.pt")
    assert xl.get_classifier("resnet18", weights=path).labels == ("COVID-19", "No Finding")


def test_rgb_weights_fold_into_a_grey_stem(tmp_path):
    rgb = xl.get_classifier("resnet18", in_channels=3)
    torch.save(rgb.module.state_dict(), tmp_path / "rgb.pt")
    grey = xl.get_classifier("resnet18", in_channels=1, weights=tmp_path / "rgb.pt")
    x = torch.rand(2, 1, 40, 40, dtype=torch.float64)
    rgb.module.double()
    grey.module.double()
    # folding the kernel is exactly feeding the grey image three times
    assert torch.allclose(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-10)


def test_shape_mismatch_names_the_keys(tmp_path):
    other = xl.get_classifier("resnet18", num_classes=5)
    torch.save(other.module.state_dict(), tmp_path / "five.pt")
    with pytest.raises(xl.WeightsError, match=r"fc\.weight.*\(5, 512\).*\(14, 512\)"):
        xl.get_classifier("resnet18", num_classes=14, weights=tmp_path / "five.pt")
    with pytest.raises(xl.WeightsError, match="missing: .*layer1"):
        xl.get_classifier("resnet34", num_classes=5, weights=tmp_path / "five.pt")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty"),
        (b"not a checkpoint at all", "cannot read weights file"),
        (None, "not found"),
    ],
)
def test_bad_weight_files(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(xl.WeightsError, match=match) as info:
        xl.get_classifier("resnet18", weights=path)
    assert "bad.pt" in str(info.value)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_published_names_resolve_offline(name):
    spec = BACKBONES[name]
    weights = spec.published("imagenet")
    assert weights.url.startswith("https://")
    assert len(weights.mean) == 3 and len(weights.std) == 3
    with pytest.raises(xl.WeightsError, match="unknown weights 'nonsense'.*imagenet"):
        spec.published("nonsense")


def test_torchvision_names_in_every_spelling():
    a = published.torchvision_weights("resnet18", "IMAGENET1K_V1")
    b = published.torchvision_weights("resnet18", "ResNet18_Weights.IMAGENET1K_V1")
    c = published.torchvision_weights("resnet18", "imagenet")
    assert a.name == b.name == c.name == "torchvision:ResNet18_Weights.IMAGENET1K_V1"


def test_offline_download_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(xl.WeightsError) as info:
        xl.get_classifier("resnet18", weights="imagenet")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "name resolution" in message
    assert "weights=" in message  # says how to use a local copy instead


def test_published_weights_are_adapted(monkeypatch):
    """With a published state dict (faked, no internet), the grey stem is folded, the head is
    fresh for 14 labels, and the ImageNet statistics become grey normalisation."""
    source = xl.get_classifier("resnet18", num_classes=1000, in_channels=3)
    state = source.module.state_dict()
    monkeypatch.setattr(published.PublishedWeights, "download", lambda self: dict(state))
    clf = xl.get_classifier("resnet18", weights="imagenet")
    assert clf.weights == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    assert torch.equal(clf.module.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(clf.module.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert clf.module.fc.weight.shape == (14, 512)
    assert clf.input_mean == pytest.approx((0.449,), abs=1e-3)
    x = torch.rand(1, 1, 32, 32)
    expected = clf.module((x - clf.input_mean[0]) / clf.input_std[0])
    assert torch.allclose(clf(x), expected)


def test_wrapping_your_own_module():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    clf = xl.Classifier(net, labels=["a", "b"], min_input_size=8)
    assert clf(torch.rand(3, 1, 8, 8)).shape == (3, 2)
    with pytest.raises(xl.InputError, match="unique"):
        xl.Classifier(net, labels=["a", "a"])
    with pytest.raises(xl.InputError, match="'nope'"):
        xl.Classifier(net, labels=["a", "b"], nap_layers=["nope"])

"""Classifier checkpoints and the classifier-plugin contract: what the CLI and get_classifier
pass to factories, classifier_factory, Classifier.load / load_weights, weights-file errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import xraylens as xl
from xraylens.cli import main

LABELS = ("COVID-19", "No Finding")


def _module():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 2),
    )


def _build(labels=LABELS):
    return xl.Classifier(_module(), labels, input_size=32, name="io_tiny")


@pytest.fixture
def recorded():
    """Registers ``io_record`` (remembers its kwargs) and ``io_tiny`` (classifier_factory)."""
    calls: list[dict] = []

    def record(**kwargs):
        calls.append(kwargs)
        return _build()

    class Plugin:
        @xl.hookimpl
        def register_classifiers(self, register):
            register("io_record", record)
            register("io_tiny", xl.classifier_factory(_build))
            register("io_plain", lambda: _build())  # takes no keyword at all

    xl.register_plugin(Plugin(), name="io-plugin")
    yield calls
    xl.unregister_plugin("io-plugin")


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype("uint8")).save(path)
    return path


def _explain(scan, out, *extra):
    argv = ["explain", str(scan), "--method", "saliency", "--out", str(out), "-q", *extra]
    return main(argv)


def test_the_cli_passes_weights_only_when_given_and_nothing_else(recorded, scan, tmp_path):
    assert _explain(scan, tmp_path / "a", "--model", "io_record") == 0
    weights = _build().save(tmp_path / "w.pt")
    assert _explain(scan, tmp_path / "b", "--model", "io_record", "--weights", str(weights)) == 0
    assert _explain(scan, tmp_path / "c", "--model", "io_record", "--device", "cpu") == 0
    assert recorded == [{}, {"weights": str(weights)}, {}]
    xl.get_classifier("io_record", num_classes=2, anything="x")
    assert recorded[-1] == {"num_classes": 2, "anything": "x"}  # get_classifier adds nothing


def test_a_factory_without_the_keyword_fails_naming_the_plugin(recorded, scan, tmp_path, capsys):
    weights = _build().save(tmp_path / "w.pt")
    assert _explain(scan, tmp_path / "o", "--model", "io_plain", "--weights", str(weights)) == 1
    err = capsys.readouterr().err
    assert "io_plain" in err and "weights" in err


def test_classifier_factory_loads_weights_and_checks_them(recorded, tmp_path):
    trained = _build()
    with torch.no_grad():
        trained.module[0].weight.fill_(0.25)
    path = trained.save(tmp_path / "t.safetensors")
    clf = xl.get_classifier("io_tiny", weights=path)
    assert torch.equal(clf.module[0].weight, trained.module[0].weight)
    other = _build(labels=("a", "b")).save(tmp_path / "other.pt")
    with pytest.raises(xl.WeightsError, match="saved for labels"):
        xl.get_classifier("io_tiny", weights=other)
    with pytest.raises(xl.WeightsError, match="local files only"):
        xl.get_classifier("io_tiny", weights="imagenet")
    bigger = xl.Classifier(torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3)), LABELS)
    wrong = bigger.save(tmp_path / "wrong.pt")
    with pytest.raises(xl.WeightsError, match="do not fit"):
        xl.get_classifier("io_tiny", weights=wrong)


def test_classifier_load_plain_and_registered(tmp_path):
    clf = xl.Classifier(
        _module(), LABELS, input_size=48, input_mean=(0.5,), input_std=(0.25,), name="custom"
    )
    path = clf.save(tmp_path / "c.pt")
    again = xl.Classifier.load(path, _module())
    assert again.labels == LABELS and again.input_size == 48 and again.input_std == (0.25,)
    x = torch.rand(2, 1, 48, 48)
    torch.testing.assert_close(again(x), clf(x))
    with pytest.raises(xl.InputError, match="module="):
        xl.Classifier.load(path)  # a custom module: the file cannot rebuild it
    net = xl.get_classifier("resnet18", labels=LABELS)
    loaded = xl.Classifier.load(net.save(tmp_path / "r.pt"))
    assert loaded.name == "resnet18" and loaded.labels == LABELS
    torch.testing.assert_close(loaded(x[:, :, :40, :40]), net(x[:, :, :40, :40]))


def test_an_image_given_as_weights_names_the_file_and_the_cause(scan, tmp_path, capsys):
    jpeg = tmp_path / "xray.jpg"
    Image.open(scan).convert("L").save(jpeg)
    for path in (jpeg, tmp_path / "xray.pt"):
        if path.suffix == ".pt":
            path.write_bytes(jpeg.read_bytes())  # a JPEG with a weights suffix
        with pytest.raises(xl.WeightsError) as info:
            xl.get_classifier("resnet18", weights=path)
        message = str(info.value)
        assert str(path) in message and "JPEG image" in message
        assert "weights_only" not in message
    garbage = tmp_path / "junk.pt"
    garbage.write_bytes(b"\x80\x02not really a pickle" * 10)
    with pytest.raises(xl.WeightsError) as info:
        xl.get_classifier("resnet18", weights=garbage)
    assert str(garbage) in str(info.value) and "weights_only=False" not in str(info.value)
    assert _explain(scan, tmp_path / "o", "--weights", str(jpeg)) == 1
    err = capsys.readouterr().err
    assert "JPEG image" in err and "weights_only" not in err and "Traceback" not in err

"""``xraylens report`` over explain + evaluate outputs, and commands as plugins."""

from __future__ import annotations

import argparse
import html
import math
import warnings

import numpy as np
import pytest
from PIL import Image

import xraylens as xl
from xraylens.cli import build_parser, main
from xraylens.evaluate import Summary

HOSTILE = "<script>alert(1)<b onmouseover=alert(2)>"  # a file name: no slash


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_cli")
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    (root / "masks").mkdir()
    for name in ("im0", f"im1{HOSTILE}"):
        img = (rng.random((64, 64)) * 120).astype(np.uint8)
        img[3:8, 4:14] = 255  # a burnt-in marker near the top-left corner
        Image.fromarray(img).save(root / "imgs" / f"{name}.png")
        m = np.zeros((64, 64), np.uint8)
        m[12:56, 8:56] = 255
        Image.fromarray(m).save(root / "masks" / f"{name}.png")
    for model in ("resnet18", "resnet34"):
        code = main(["explain", str(root / "imgs"), "--model", model, "--method",
                     "saliency,grad_cam", "--labels", "COVID-19,Pneumonia", "--size", "64",
                     "--out", str(root / model), "--no-png", "-q"])  # fmt: skip
        assert code == 0
        code = main(["evaluate", str(root / model), "--masks", str(root / "masks"), "--metrics",
                     "region_share,sparseness", "--n-boot", "50", "--out",
                     str(root / f"ev_{model}"), "-q"])  # fmt: skip
        assert code == 0
    return root


def test_report_from_outputs(outputs, capsys):
    out = outputs / "rep"
    argv = ["report", "--out", str(out), "--masks", str(outputs / "masks"), "-q"]
    for model in ("resnet18", "resnet34"):
        argv += ["--explain", str(outputs / model), "--evaluate", str(outputs / f"ev_{model}")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed and (out / "report.md").is_file()
    page = (out / "report.html").read_text()
    assert HOSTILE not in page and html.escape(HOSTILE) in page
    assert "Shortcut audit" in page and "Attribution quality" in page and "Provenance" in page
    # the numbers are the evaluate tables' own (mean [ci_low, ci_high])
    checked = 0
    for model in ("resnet18", "resnet34"):
        for row in Summary.read(outputs / f"ev_{model}" / "summary.json"):
            if math.isnan(row["mean"]):  # e.g. Grad-CAM of a random model: no positive mass
                cell = "n/a"
            elif math.isnan(row["ci_low"]):
                cell = f"{row['mean']:.3f}"
            else:
                cell = f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            assert f"<td>{cell}</td>" in page, (model, row)
            checked += 1
    assert checked >= 8
    # the marker is found and measured in both images, for both models and methods
    md = (out / "report.md").read_text()
    assert md.count("| markers |") == 2 * 2 * 2  # models x methods x labels
    assert "lungs" in md


def test_report_usage_errors(outputs, tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "--explain" in capsys.readouterr().err
    assert main(["report", "--explain", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", "--explain", str(outputs / "resnet18"), "--format", "pdf"]) == 2
    assert main(["report", "--explain", str(outputs / "imgs"), "--out", str(tmp_path)]) == 1
    assert "summary.json" in capsys.readouterr().err


class _Hello:
    """A plugin adding one subcommand through the ``register_commands`` hook."""

    @staticmethod
    def add_parser(sub, parents=()):
        p = sub.add_parser("hello", parents=list(parents), help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)
        return p

    @xl.hookimpl
    def register_commands(self, register):
        register("hello", self.add_parser)


class _Broken:
    @xl.hookimpl
    def register_commands(self, register):
        register("broken", lambda sub, parents=(): sub.add_parser("other"))


def test_a_plugin_adds_a_subcommand(capsys):
    xl.register_plugin(_Hello(), name="hello-plugin")
    try:
        assert main(["hello", "--name", "you"]) == 0
        assert capsys.readouterr().out == "hello you\n"
        assert main(["list", "--kind", "command"]) == 0
        assert "hello-plugin" in capsys.readouterr().out
    finally:
        xl.unregister_plugin("hello-plugin")
    assert main(["hello"]) == 2  # gone again


def test_a_broken_plugin_command_is_left_out_with_a_warning():
    xl.register_plugin(_Broken(), name="broken-plugin")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert "broken" not in sub.choices and "report" in sub.choices
        assert any("broken" in str(w.message) for w in caught)
    finally:
        xl.unregister_plugin("broken-plugin")


def test_report_predict_shows_each_labels_probability(outputs, tmp_path):
    """--predict runs the explain run's model (its recorded weights) once per image; without
    recorded weights (random init) it says so instead of showing another draw's numbers."""
    import torch

    clf = xl.get_classifier("resnet18")
    weights = tmp_path / "r18.pt"
    torch.save(clf.module.state_dict(), weights)
    code = main(["explain", str(outputs / "imgs"), "--weights", str(weights), "--method",
                 "saliency", "--labels", "COVID-19", "--size", "64", "--out",
                 str(tmp_path / "maps"), "--no-png", "-q"])  # fmt: skip
    assert code == 0
    out = tmp_path / "rep"
    argv = ["report", "--predict", "--format", "html", "--out", str(out), "-q"]
    assert main([*argv, "--explain", str(tmp_path / "maps")]) == 0
    page = (out / "report.html").read_text()
    img = xl.data.preprocess(xl.data.read_image(outputs / "imgs" / "im0.png"), size=64)
    with torch.no_grad():
        p = xl.get_classifier("resnet18", weights=str(weights)).predict_proba(img[None])[0]
    expected = f"P(COVID-19) {float(p[clf.label_index('COVID-19')]):.2f}"
    assert expected in page and "cannot be reproduced" not in page
    assert main([*argv, "--explain", str(outputs / "resnet18")]) == 0  # random weights
    page = (out / "report.html").read_text()
    assert "cannot be reproduced" in page and "P(COVID-19)" not in page

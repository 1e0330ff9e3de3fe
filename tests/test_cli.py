"""The ``xraylens`` command line: every subcommand, exit codes, one-line errors, resumption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

import xraylens as xl
from xraylens import plugins
from xraylens.cli import build_parser, main
from xraylens.core.classifier import eval_mode

SUBCOMMANDS = ("list", "explain", "profile", "demo", "evaluate", "report")


# --------------------------------------------------------------------------- fixtures
@attrs.define
class _ScaleConfig:
    scale: float = 1.0


class _InputGradient(xl.Attributor):
    """A fast test attributor: ``scale * d output[label] / d x``."""

    name = "cli_test_gradient"
    Config = _ScaleConfig

    def attribute_pairs(self, clf, x, plan, *, output):
        module = self.output_module(clf, output)
        inputs = x[plan.image].clone().requires_grad_(True)
        with eval_mode(clf.module):
            score = module(inputs).gather(1, plan.label.to(x.device)[:, None]).sum()
        (grad,) = torch.autograd.grad(score, inputs)
        return self.config.scale * grad, None


class _Plugin:
    @xl.hookimpl
    def register_attributors(self, register):
        register("cli_test_gradient", _InputGradient)


@pytest.fixture
def test_method():
    plugins.reset()
    xl.register_plugin(_Plugin(), name="cli-test-plugin")
    yield "cli_test_gradient"
    xl.unregister_plugin("cli-test-plugin")
    plugins.reset()


def _png(path: Path, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Two good images (one in a sub-folder) and three bad files."""
    root = tmp_path / "images"
    _png(root / "a.png", 0)
    _png(root / "sub" / "b.png", 1)
    (root / "garbage.png").write_bytes(b"this is not an image")
    (root / "empty.jpg").write_bytes(b"")
    good = (root / "a.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- parser and help
@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_everywhere(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert "usage: xraylens" in out
    assert "``" not in out  # reST markup is stripped from the help text


def test_version_and_missing_command(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and xl.__version__ in out
    code, _, err = _run([], capsys)
    assert code == 2 and "required" in err


def test_every_subcommand_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(SUBCOMMANDS)


# --------------------------------------------------------------------------- list
def test_list_shows_every_plugin_with_its_source(test_method, capsys):
    code, out, _ = _run(["list"], capsys)
    assert code == 0
    for kind in plugins.KINDS:
        assert f"{kind}s:" in out
        for name, entry in plugins.entries(kind).items():
            line = next(line for line in out.splitlines() if line.split()[:1] == [name])
            assert entry.plugin in line
    assert "cli_test_gradient" in out and "cli-test-plugin" in out


def test_list_json_and_long(test_method, capsys):
    code, out, _ = _run(["list", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert sorted(data["classifiers"]) == xl.list_classifiers()
    assert sorted(data["attributors"]) == xl.list_attributors()
    assert data["attributors"]["cli_test_gradient"]["parameters"] == "scale=1.0"
    code, out, _ = _run(["list", "-l", "--kind", "attributor"], capsys)
    assert code == 0 and "parameters: scale=1.0" in out and "classifiers:" not in out


# --------------------------------------------------------------------------- explain
def test_explain_finishes_good_files_and_lists_bad_ones(
    image_folder, tmp_path, test_method, capsys
):
    out_dir = tmp_path / "out"
    argv = ["explain", image_folder, "--method", test_method, "--size", 32, "--out", out_dir]
    code, out, err = _run([*argv, "--labels", "COVID-19,No Finding"], capsys)
    assert code == 1
    for bad in ("garbage.png", "empty.jpg", "truncated.png"):
        assert bad in err
    assert "Traceback" not in err
    for key in ("a", "sub/b"):
        res = xl.Attribution.load(out_dir / key / f"{test_method}.npz")
        assert res.values.shape == (1, 2, 1, 32, 32)
        assert res.labels == ("COVID-19", "No Finding") and res.method == test_method
        assert (out_dir / key / f"{test_method}.png").stat().st_size > 0
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["explained"] == 2 and len(summary["failed"]) == 3
    assert "2 explained" in out and "3 failed" in out


def test_explain_resumes_and_redraws_missing_pngs(image_folder, tmp_path, test_method, capsys):
    out_dir = tmp_path / "out"
    argv = ["explain", image_folder / "a.png", image_folder / "sub", "--method", test_method]
    argv += ["--size", 32, "--out", out_dir, "--labels", "Pneumonia"]
    assert _run(argv, capsys)[0] == 0
    npz = out_dir / "a" / f"{test_method}.npz"
    png = out_dir / "a" / f"{test_method}.png"
    stamp = npz.stat().st_mtime_ns
    png.unlink()
    code, out, _ = _run(argv, capsys)
    assert code == 0 and "1 already done" in out
    assert png.exists() and npz.stat().st_mtime_ns == stamp  # redrawn from the .npz
    code, out, _ = _run([*argv, "--force"], capsys)
    assert code == 0 and "2 explained" in out and npz.stat().st_mtime_ns != stamp
    assert not list(out_dir.rglob(".*.tmp"))  # atomic writes leave no temporary files


def test_explain_predicted_labels_weights_and_params(image_folder, tmp_path, test_method, capsys):
    clf = xl.get_classifier("resnet18", labels=("cat", "dog", "owl"))
    weights = clf.save(tmp_path / "model.pt")
    out_dir = tmp_path / "out"
    argv = ["explain", image_folder / "a.png", image_folder / "sub/b.png", "--weights", weights]
    argv += ["--method", test_method, "--size", 32, "--out", out_dir, "--labels", "predicted"]
    argv += ["--threshold", 0.99, "-p", "scale=3", "--output", "probs", "--no-png"]
    code, _, _ = _run(argv, capsys)
    assert code == 0
    res = xl.Attribution.load(out_dir / "a" / f"{test_method}.npz")
    assert res.per_image and len(res.labels[0]) == 1 and res.labels[0][0] in clf.labels
    assert res.params == {"scale": 3} and res.output == "probs"
    assert not (out_dir / "a" / f"{test_method}.png").exists()


def test_explain_glob_and_colliding_names(tmp_path, test_method, capsys):
    _png(tmp_path / "x" / "scan.png", 0)
    _png(tmp_path / "y" / "scan.png", 1)
    _png(tmp_path / "y" / "scan.jpg", 2)
    out_dir = tmp_path / "out"
    pattern = str(tmp_path / "*" / "scan.*")
    argv = ["explain", pattern, "--method", test_method, "--size", 32, "--out", out_dir]
    code, _, _ = _run([*argv, "--labels", "ARDS", "--no-png"], capsys)
    assert code == 0
    found = sorted(p.parent.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.npz"))
    assert found == ["x/scan", "y/scan_jpg", "y/scan_png"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "salincy"], "unknown attributor"),
        (["--method", "{m}", "--labels", "Covid"], "unknown label 'Covid'"),
        (["--method", "{m}", "-p", "steps=3"], "no chosen method has a parameter"),
        (["--method", "{m}", "-p", "{m}.scale"], "expected [METHOD.]KEY=VALUE"),
        (["--method", "{m}", "--preset", "nope"], "none of"),
        (["--method", "{m}", "--max-memory", "lots"], "--max-memory"),
        (["--method", "{m}", "--batch-size", "0"], "--batch-size"),
        (["--method", "{m}", "--model", "resnet19"], "did you mean 'resnet18'"),
        (["--method", "{m}", "--device", "tpu"], "--device"),
    ],
)
def test_explain_usage_errors_are_one_line_exit_2(
    extra, message, image_folder, tmp_path, test_method, capsys
):
    argv = ["explain", image_folder / "a.png", "--out", tmp_path / "out", "--size", 32]
    code, _, err = _run([*argv, *[e.format(m=test_method) for e in extra]], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold", "1.5"], "--threshold: must be in (0, 1)"),
        (["--threshold", "0"], "--threshold: must be in (0, 1)"),
        (["--clip", "100"], "--clip: must be in [0, 100)"),
        (["--alpha", "2"], "--alpha: must be in [0, 1]"),
        (["--sign", "both"], "--sign: invalid choice"),
        (["--size", "16"], "--size 16: resnet18 needs at least 32 px"),
        (["--labels", "covid19"], "did you mean ['COVID-19']"),
    ],
)
def test_explain_bad_values_are_usage_errors(
    extra, message, image_folder, tmp_path, test_method, capsys
):
    argv = ["explain", image_folder / "a.png", "--out", tmp_path / "out", "--method", test_method]
    code, _, err = _run([*argv, *extra], capsys)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()


def test_explain_quiet_keeps_the_final_summary_and_labels_ignore_case(
    image_folder, tmp_path, test_method, capsys
):
    argv = ["explain", image_folder / "a.png", "--out", tmp_path / "out", "--method", test_method]
    code, out, err = _run([*argv, "--size", 32, "--labels", "covid-19,no finding", "-q"], capsys)
    assert code == 0
    assert out.splitlines() == [line for line in out.splitlines() if line.startswith("explain: 1")]
    assert len(out.splitlines()) == 1 and "1 explained" in out and not err
    res = xl.Attribution.load(tmp_path / "out" / "a" / f"{test_method}.npz")
    assert res.labels == ("COVID-19", "No Finding")


def test_explain_glob_without_match_is_a_usage_error(tmp_path, test_method, capsys):
    code, _, err = _run(
        ["explain", tmp_path / "*.png", "--method", test_method, "--out", tmp_path], capsys
    )
    assert code == 2 and "no file matches" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_explain_cuda_without_cuda_is_a_usage_error(image_folder, tmp_path, test_method, capsys):
    argv = ["explain", image_folder / "a.png", "--method", test_method, "--device", "cuda"]
    code, _, err = _run([*argv, "--out", tmp_path], capsys)
    assert code == 2 and "CUDA is not available" in err


def test_explain_runs_every_registered_method(image_folder, tmp_path, capsys):
    """``--method all``: every registered attributor through the command line, one call."""
    out_dir = tmp_path / "out"
    argv = ["explain", image_folder / "a.png", "--method", "all", "--size", 32, "--out", out_dir]
    code, _, err = _run([*argv, "--labels", "COVID-19", "--no-png", "-q"], capsys)
    assert code == 0, err
    for method in xl.list_attributors():
        res = xl.Attribution.load(out_dir / "a" / f"{method}.npz")
        assert res.method == method and res.values.shape == (1, 1, 1, 32, 32)
        assert torch.isfinite(res.values).all()


def test_unexpected_errors_are_one_line_and_verbose_shows_the_traceback(monkeypatch, capsys):
    from xraylens.commands import profile

    def boom(args):
        raise RuntimeError("something deep inside\nwith a second line")

    monkeypatch.setattr(profile, "run", boom)
    code, _, err = _run(["profile", "somewhere", "--out", "x"], capsys)
    assert code == 1
    assert err.strip() == (
        "xraylens profile: error: RuntimeError: something deep inside "
        "(run with -v for the traceback)"
    )
    code, _, err = _run(["profile", "somewhere", "--out", "x", "-v"], capsys)
    assert code == 1 and "Traceback" in err


# --------------------------------------------------------------------------- profile
def _group_folder(root: Path, n: int = 3) -> Path:
    for g, group in enumerate(("healthy", "sick")):
        for i in range(n):
            _png(root / group / f"{group}{i}.png", 10 * g + i)
    return root


def test_profile_plain_folder_with_group_subfolders(tmp_path, capsys):
    data = _group_folder(tmp_path / "data")
    (data / "sick" / "broken.png").write_bytes(b"nope")
    out_dir = tmp_path / "nap"
    argv = ["profile", data, "--out", out_dir, "--size", 32, "--layers", "input,layer1"]
    code, out, err = _run([*argv, "--batch-size", 4], capsys)
    assert code == 1 and "broken.png" in err  # the bad file is skipped and listed
    from xraylens.profile import NAPResult

    nap = NAPResult.load(out_dir / "nap.npz")
    assert nap.counts == {"healthy": 3, "sick": 3} and list(nap.layers) == ["input", "layer1"]
    for name in ("input.png", "nap_layer1.png", "inactive.png", "summary.json"):
        assert (out_dir / name).stat().st_size > 0
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["n_images"] == 6 and len(summary["failed"]) == 1
    assert "inactive feature maps" in out
    (out_dir / "input.png").unlink()
    code, out, _ = _run(argv, capsys)  # resumes: reuses nap.npz, redraws the plots
    assert code == 0 and "exists" in out and (out_dir / "input.png").exists()


def test_profile_groups_csv(tmp_path, capsys):
    data = tmp_path / "flat"
    for i in range(4):
        _png(data / f"img{i}.png", i)
    table = tmp_path / "groups.csv"
    table.write_text("path,group\nimg0.png,A\nimg1.png,A;B\nimg2.png,B\n")
    out_dir = tmp_path / "nap"
    argv = ["profile", data, "--groups-csv", table, "--out", out_dir, "--size", 32]
    code, _, err = _run([*argv, "--layers", "input", "-q"], capsys)
    assert code == 0, err
    from xraylens.profile import NAPResult

    nap = NAPResult.load(out_dir / "nap.npz")
    assert nap.counts == {"A": 2, "B": 2} and nap.n_images == 4  # img3: no group, still seen


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layers", "layer9"], "--layers"),
        (["--groups", "sick,elderly"], "--groups"),
        (["--size", "0"], "--size"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_profile_usage_errors(extra, message, tmp_path, capsys):
    data = _group_folder(tmp_path / "data", n=1)
    code, _, err = _run(["profile", data, "--out", tmp_path / "o", "--size", 32, *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_profile_missing_folder_is_a_usage_error(tmp_path, capsys):
    code, _, err = _run(["profile", tmp_path / "nowhere", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "not a folder" in err


@pytest.mark.realdata
def test_profile_on_the_real_data_root(shared_data, tmp_path, capsys):
    out_dir = tmp_path / "nap"
    argv = ["profile", shared_data, "--out", out_dir, "--size", 64, "--limit", 24]
    code, out, err = _run([*argv, "--layers", "input,maxpool", "-q"], capsys)
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["n_images"] == 24
    assert set(summary["groups"]) == {"COVID-19", "Pneumonia", "No Finding"}
    code, _, err = _run([*argv, "--group-by", "source", "--force", "--layers", "input"], capsys)
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert set(summary["groups"]) == {"covid-chestxray", "kermany"}


# --------------------------------------------------------------------------- demo arguments
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "16"], "--size"),
        (["--steps", "0"], "--steps"),
        (["--data", "/nowhere"], "--data"),
    ],
)
def test_demo_usage_errors(extra, message, tmp_path, capsys):
    code, _, err = _run(["demo", "--out", tmp_path / "d", *extra], capsys)
    assert code == 2 and message in err and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("checks", "cut", "code"),
    [
        ({"lesions": True, "shortcut": True}, False, 0),
        ({"lesions": False, "shortcut": True}, False, 1),
        ({"lesions": False, "shortcut": True}, True, 0),  # under-trained: a warning, not a fail
    ],
)
def test_demo_exit_status_follows_the_checks(checks, cut, code, monkeypatch, tmp_path, capsys):
    import xraylens.demo as demo

    seen = {}

    def fake_run_demo(out, *, data, config, log):
        seen["config"] = config
        report = out / "report.md"
        return {"checks": checks, "train": {"stopped_early": cut, "steps": 3}, "report": report}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    got, out, err = _run(["demo", "--out", tmp_path, "--quick", "--seed", 3, "--steps", 7], capsys)
    assert got == code
    assert seen["config"] == attrs.evolve(demo.PRESETS["quick"], seed=3, steps=7)
    assert ("FAILED" in out) == (not all(checks.values()))
    assert ("under-trained" in err) == (cut and not all(checks.values()))


# --------------------------------------------------------------------------- console script
def _console_script() -> str:
    script = Path(sys.executable).with_name("xraylens")
    if not script.exists():
        pytest.skip("the xraylens console script is not installed next to this Python")
    return str(script)


def test_console_script(tmp_path):
    """One real run of the installed console script (the rest runs ``main`` in-process)."""
    env = {**os.environ, "XRAYLENS_NO_PLUGINS": "1"}
    done = subprocess.run(
        [_console_script(), "list"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "resnet18" in done.stdout and "xraylens.models.backbones" in done.stdout

"""xraylens.pipeline: batching, resume per (image, method), probabilities in every output,
Ctrl-C keeps finished images, torchrun shards give the same files as one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xraylens as xl
from xraylens import pipeline

SRC = Path(__file__).resolve().parents[1] / "src"


def _images(folder: Path, n: int, size: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = (np.random.default_rng(i).random((size, size + 3)) * 255).astype("uint8")
        paths.append(folder / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _tiny() -> xl.Classifier:
    """A random-init torchvision SqueezeNet (a model this project did not write), 1 channel."""
    import torchvision

    torch.manual_seed(0)
    module = torchvision.models.squeezenet1_1(weights=None, num_classes=3)
    module.features[0] = torch.nn.Conv2d(1, 64, 3, stride=2)
    return xl.Classifier(module, ("a", "b", "c"), input_size=40, min_input_size=32)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", XRAYLENS_NO_PLUGINS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def test_probabilities_in_every_npz_and_resume_per_image_and_method(tmp_path):
    clf = _tiny()
    paths = _images(tmp_path / "in", 3)
    items = pipeline.items_from_paths(paths, [p.stem for p in paths])
    sal = {"saliency": xl.get_attributor("saliency")}
    out = tmp_path / "out"
    first = pipeline.explain_images(clf, sal, items, out, batch_size=2, progress=False)
    assert first.written == 3 and first.skipped == 0 and not first.failed
    x = torch.stack([xl.data.preprocess(xl.data.read_image(p), size=40) for p in paths])
    want = clf.predict_proba(x)
    for i, p in enumerate(paths):
        res = xl.Attribution.load(out / p.stem / "saliency.npz")
        assert res.classes == clf.labels
        torch.testing.assert_close(res.probs[0], want[i], rtol=1e-5, atol=1e-6)
        assert first.predictions[p.stem]["b"] == pytest.approx(float(want[i, 1]), abs=1e-6)
    stamp = (out / "img0" / "saliency.npz").stat().st_mtime_ns
    both = {**sal, "input_x_gradient": xl.get_attributor("input_x_gradient")}
    again = pipeline.explain_images(clf, both, items, out, batch_size=2, progress=False)
    assert again.written == 3 and again.skipped == 3  # only the new method ran
    assert (out / "img0" / "saliency.npz").stat().st_mtime_ns == stamp
    assert set(again.predictions) == {"img0", "img1", "img2"}


def test_per_image_targets_callable_and_bad_arguments(tmp_path):
    clf = _tiny()
    paths = _images(tmp_path / "in", 2)
    items = pipeline.items_from_paths(paths, ["x", "y"])
    att = {"saliency": xl.get_attributor("saliency")}

    def top(probs, its):
        return [[clf.labels[int(row.argmax())]] for row in probs]

    rep = pipeline.explain_images(clf, att, items, tmp_path / "o", targets=top, progress=False)
    res = xl.Attribution.load(tmp_path / "o" / "x" / "saliency.npz")
    assert res.labels_of(0) == (max(res.classes, key=lambda c: res.prob(0, c)),)
    assert rep.targets["x"] == list(res.labels_of(0))
    with pytest.raises(xl.InputError, match="threshold"):
        pipeline.explain_images(clf, att, items, tmp_path / "o", threshold=1.5)
    with pytest.raises(xl.InputError, match="sign"):
        pipeline.explain_images(
            clf, att, items, tmp_path / "o", figure=pipeline.FigureOptions(sign="both")
        )
    with pytest.raises(xl.InputError, match="relative"):
        pipeline.Item(key="../escape", path="a.png")


def test_summary_json_holds_every_images_probabilities(tmp_path):
    from xraylens.cli import main

    paths = _images(tmp_path / "in", 2, size=32)
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "in"), "--method", "saliency", "--size", "32"]
    assert main([*argv, "--labels", "covid-19", "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for p in paths:
        res = xl.Attribution.load(out / p.stem / "saliency.npz")
        assert res.labels == ("COVID-19",)  # --labels is case-insensitive
        probs = summary["predictions"][p.stem]
        assert list(probs) == list(res.classes) and len(probs) == 14
        assert probs["COVID-19"] == pytest.approx(res.prob(0, "COVID-19"), abs=1e-6)


def _outputs(folder: Path) -> dict[str, object]:
    """Every output below ``folder``: npz as arrays + metadata, PNG as bytes."""
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".npz":
            with np.load(path) as data:
                found[rel] = {k: data[k].tobytes() for k in sorted(data.files)}
        elif path.suffix == ".png":
            found[rel] = path.read_bytes()
    return found


@pytest.mark.slow
def test_sigint_mid_batch_keeps_finished_images_and_a_rerun_completes(tmp_path):
    _images(tmp_path / "in", 4, size=48)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "xraylens.cli", "explain", str(tmp_path / "in"), "--out"]
    cmd += [str(out), "--method", "saliency,integrated_gradients", "-p", "n_steps=24"]
    cmd += ["--size", "48", "--labels", "Pneumonia", "--batch-size", "2", "-q"]
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    first = out / "img0" / "saliency.png"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # batch 1: saliency written, integrated gradients running
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: kept" in err and "rerun" in err
    kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert "img0/saliency.npz" in kept and len(kept) < 8
    for rel in kept:  # every kept file is whole (atomic writes)
        assert xl.Attribution.load(out / rel).probs is not None
    assert not list(out.rglob(".*.tmp"))
    before = {rel: (out / rel).stat().st_mtime_ns for rel in kept}
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list(out.rglob("*.npz"))) == 8 and len(list(out.rglob("*.png"))) == 8
    assert all((out / rel).stat().st_mtime_ns == t for rel, t in before.items())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["maps_skipped_existing"] == len(kept) and not summary["interrupted"]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
    reason="torchrun not installed",
)
def test_torchrun_two_processes_write_the_files_of_one(tmp_path):
    _images(tmp_path / "in", 5, size=32)
    weights = xl.get_classifier("resnet18", labels=("COVID-19", "ARDS", "other")).save(
        tmp_path / "w.pt"
    )
    torchrun = str(Path(sys.executable).parent / "torchrun")
    args = ["explain", str(tmp_path / "in"), "--method", "saliency,grad_cam", "--size", "32"]
    args += ["--weights", str(weights)]
    args += ["--labels", "COVID-19,ARDS", "--batch-size", "2", "-q"]
    one = subprocess.run(
        [sys.executable, "-m", "xraylens.cli", *args, "--out", str(tmp_path / "one")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "xraylens.cli",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stdout + two.stderr
    assert "on 2 processes" in two.stdout
    a, b = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert len(a) == 5 * 2 * 2 and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert sb.pop("processes") == 2 and sa.pop("processes") == 1
    for s in (sa, sb):
        s.pop("seconds")
        s["inputs"] = {k: Path(v).name for k, v in s["inputs"].items()}
    assert sa == sb


def test_shards_take_whole_batches_so_every_batch_is_the_one_process_batch():
    items = list(range(7))
    one = pipeline.Shard().blocks(items, 2)
    parts = [pipeline.Shard(rank=r, world=2).blocks(items, 2) for r in (0, 1)]
    assert one == [[0, 1], [2, 3], [4, 5], [6]]
    assert parts == [[[0, 1], [4, 5]], [[2, 3], [6]]]
    assert sorted(b for p in parts for b in p) == sorted(one)  # disjoint, complete

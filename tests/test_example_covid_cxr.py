"""examples/covid_cxr: the recipe end to end (phantoms always; a real 24-image slice when
../shared/data is present), kill-and-resume of train and explain, 2-process gloo == 1 process."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # plain `pytest` does not put the repository root on sys.path
    sys.path.insert(0, str(REPO))

import xraylens as xl  # noqa: E402
from examples.covid_cxr import cli, config  # noqa: E402
from examples.covid_cxr.context import KILL_ENV  # noqa: E402
from examples.covid_cxr.metrics import mean_std, multilabel_metrics, summarize_folds  # noqa: E402
from examples.covid_cxr.profile import exclusive_membership  # noqa: E402
from examples.covid_cxr.train import compute_loss, plan_steps  # noqa: E402
from xraylens.evaluate import Results  # noqa: E402
from xraylens.profile import NAPResult  # noqa: E402

PREPARED = ("run.json", "dataset.json", "splits.json", "cache")


def run_cli(*args: str) -> None:
    assert cli.main([*args, "--no-progress"]) == 0


def run_subprocess(args: list[str], env: dict[str, str] | None = None, torchrun: bool = False):
    import os

    prefix = [sys.executable, "-m"]
    if torchrun:
        prefix += ["torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    return subprocess.run(
        [*prefix, "examples.covid_cxr", *args, "--no-progress"],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def copy_prepared(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in PREPARED:
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, dst / name)
    return dst


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def files_of(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory) -> Path:
    """`all` with the smoke profile on phantoms: needs no data, so CI always runs the recipe."""
    out = tmp_path_factory.mktemp("covid_cxr") / "phantoms"
    run_cli("all", "--profile", "smoke", "--data", "phantoms", "--out", str(out))
    return out


# ---------------------------------------------------------------------------- end to end
def test_all_on_phantoms_writes_every_output(phantom_run):
    out = phantom_run
    meta = json.loads((out / "run.json").read_text())
    profile = config.get_profile("smoke")
    assert meta["data"] == "phantoms" and meta["images"] == profile.limit
    ds = xl.data.Phantoms(
        profile.limit,
        profile.size,
        seed=profile.seed,
        classes=("No Finding", "COVID-19", "Bacterial Pneumonia", "Viral Pneumonia"),
    )
    for split in xl.data.load_splits(out / "splits.json"):
        xl.data.check_split(split, ds)  # no patient in two parts
        assert split.val and split.test and split.train
    # training: best.pt is the epoch with the lowest validation loss, judged on validation only
    summary = json.loads((out / "models/resnet18/fold0/train.json").read_text())
    losses = [h["val_loss"] for h in summary["history"]]
    assert summary["best_epoch"] == 1 + int(np.argmin(losses))
    assert len(summary["history"]) == profile.epochs
    # evaluation: the stored figures are those of the stored predictions
    pred = np.load(out / "predictions/resnet18/fold0.npz")
    again = multilabel_metrics(pred["targets"], pred["probs"], xl.data.PAPER_LABELS, 0.5)
    stored = json.loads((out / "metrics/resnet18/fold0.json").read_text())
    assert stored["micro"] == pytest.approx(again["micro"])
    assert len(pred["ids"]) == len(xl.data.load_splits(out / "splits.json")[0].test)
    ens = np.load(out / "predictions/ensemble/fold0.npz")
    np.testing.assert_allclose(ens["probs"], pred["probs"], rtol=1e-6)  # one member: itself
    # explanations: every method for every explained image, a paper figure per explained label
    index = json.loads((out / "explain/fold0/index.json").read_text())
    assert len(index["images"]) == profile.explain_images
    for entry in index["images"]:
        folder = out / "explain/fold0" / entry["folder"]
        targets = entry["models"]["resnet18"]["targets"]
        assert set(entry["truth"]) <= set(targets)
        for method in profile.methods:
            res = xl.Attribution.load(folder / "resnet18" / f"{method}.npz")
            assert res.labels_of(0) == tuple(targets) and res.method == method
            assert (folder / "resnet18" / f"{method}.png").stat().st_size > 0
        assert {f"figure_{t.replace('-', '_').replace(' ', '_')}.png" for t in targets} == set(
            entry["figures"]
        )
    nap = NAPResult.load(out / "naps/resnet18/fold0/nap.npz")
    assert sum(nap.counts.values()) == nap.n_images == len(pred["ids"])  # exclusive groups
    report = (out / "report.md").read_text()
    for heading in (
        "## Run",
        "## Data",
        "## Training",
        "## Results on the test splits",
        "## Explanations (fold 0)",
        "## Neuron Activation Profiles",
    ):
        assert heading in report
    assert "](explain/fold0/" in report and "](naps/resnet18/fold0/input.png)" in report
    timings = json.loads((out / "timings.json").read_text())
    assert set(cli.STEPS) <= set(timings)
    assert not list(out.rglob("*.tmp"))


def test_rerun_skips_finished_work(phantom_run):
    before = {
        k: p.stat().st_mtime_ns
        for k, p in files_of(phantom_run).items()
        if k.startswith(("models/", "explain/", "naps/", "predictions/resnet18"))
    }
    timings = json.loads((phantom_run / "timings.json").read_text())
    run_cli("all", "--out", str(phantom_run))
    after = {k: (phantom_run / k).stat().st_mtime_ns for k in before}
    assert after == before
    again = json.loads((phantom_run / "timings.json").read_text())
    for step in ("prepare", "train", "explain", "profile", "evaluate"):
        assert again[step] == timings[step]  # nothing redone, so no new time recorded


def test_all_on_a_real_slice(shared_data, tmp_path):
    out = tmp_path / "real"
    run_cli("all", "--profile", "smoke", "--data", str(shared_data), "--out", str(out))
    info = json.loads((out / "dataset.json").read_text())
    assert info["images"] == 24 and set(info["sources"]) == {"covid-chestxray", "kermany"}
    groups = json.loads((out / "splits.json").read_text())["groups"]
    for split in xl.data.load_splits(out / "splits.json"):
        parts = {p: {groups[i] for i in getattr(split, p)} for p in ("train", "val", "test")}
        assert not (
            parts["train"] & parts["test"]
            or parts["val"] & parts["test"]
            or parts["train"] & parts["val"]
        )
    models = json.loads((out / "metrics/models.json").read_text())["models"]
    assert set(models["resnet18"]["per_label"]) == set(xl.data.PAPER_LABELS)
    assert (out / "report.md").read_text().count("![") >= 3


# ---------------------------------------------------------------------------- interruptions
def test_killed_train_resumes_to_identical_weights(phantom_run, tmp_path):
    out = copy_prepared(phantom_run, tmp_path / "resume")
    # 12 training images in batches of 4: 3 steps per epoch; die in the middle of epoch 2
    done = run_subprocess(["train", "--out", str(out)], env={KILL_ENV: "train:4"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    folder = out / "models/resnet18/fold0"
    assert (folder / "checkpoint.pt").is_file() and not (folder / "train.json").exists()
    run_cli("train", "--out", str(out))
    summary = json.loads((folder / "train.json").read_text())
    assert summary["resumed_from_epoch"] == 1
    reference = phantom_run / "models/resnet18/fold0"
    for name in ("last.pt", "best.pt"):
        a, b = state_dict(folder / name), state_dict(reference / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name  # bitwise on a CPU
    ref = json.loads((reference / "train.json").read_text())
    drop = {"seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in summary["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in ref["history"]
    ]


def test_killed_explain_resumes_to_identical_files(phantom_run, tmp_path):
    out = tmp_path / "explain"
    shutil.copytree(phantom_run, out, ignore=shutil.ignore_patterns("explain"))
    done = run_subprocess(["explain", "--out", str(out)], env={KILL_ENV: "explain:3"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    partial = files_of(out / "explain")
    assert 0 < len(partial) < len(files_of(phantom_run / "explain"))
    assert not [k for k in partial if k.endswith(".tmp")]  # atomic writes: no half files
    run_cli("explain", "--out", str(out))
    got, want = files_of(out / "explain"), files_of(phantom_run / "explain")
    assert got.keys() == want.keys()
    for key, path in want.items():
        if key.endswith(".npz"):  # zip members carry timestamps: compare the contents
            a, b = xl.Attribution.load(got[key]), xl.Attribution.load(path)
            assert torch.equal(a.values, b.values) and a.labels == b.labels, key
        else:
            assert got[key].read_bytes() == path.read_bytes(), key


def test_the_ensemble_is_saved_profiled_and_scored_like_a_model(phantom_run):
    out = phantom_run
    manifest = out / "models/ensemble/fold0/ensemble.json"
    ens = xl.Ensemble.load(manifest)
    assert (
        json.loads(manifest.read_text())["members"][0]["weights"] == "../../resnet18/fold0/best.pt"
    )
    assert ens.combine == "mean_probs" and [m.name for m in ens.members] == ["resnet18"]
    summary = json.loads((out / "naps/ensemble/fold0/summary.json").read_text())
    assert summary["members"] == ["resnet18"] and "members.0.layer4" in summary["layers"]
    own = NAPResult.load(out / "naps/resnet18/fold0/nap.npz")
    nap = NAPResult.load(out / "naps/ensemble/fold0/nap.npz")
    np.testing.assert_array_equal(nap.sums["members.0.layer4"], own.sums["layer4"])
    assert (out / "naps/ensemble/fold0/nap_members_0_layer4.png").stat().st_size > 0
    rows = Results.read(out / "evaluate_maps/results.csv")
    # one backbone: its one-member ensemble gives its maps (tests/test_ensemble.py), not rescored
    assert {"resnet18/fold0"} == set(rows.column("model"))
    scored = config.get_profile("smoke").evaluate_images
    assert len(set(rows.filter(model="resnet18/fold0").column("image_id"))) <= scored
    timing = json.loads((out / "timings.json").read_text())["evaluate-maps"]
    assert timing["images"]["fold0"]["scored"] == scored


def test_killed_evaluate_maps_resumes_to_identical_results(phantom_run, tmp_path):
    # all 9 test phantoms (each has lung masks): 2 batches (8 + 1) of the one backbone
    step = ["evaluate-maps", "--evaluate-images", "9"]
    whole, out = tmp_path / "whole", tmp_path / "maps"
    for folder in (whole, out):
        shutil.copytree(phantom_run, folder, ignore=shutil.ignore_patterns("evaluate_maps"))
    run_cli(*step, "--out", str(whole))
    done = run_subprocess([*step, "--out", str(out)], env={KILL_ENV: "evaluate_maps:1"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not (out / "evaluate_maps/results.csv").exists()
    parts = list((out / "evaluate_maps/parts").rglob("*.csv"))
    assert len(parts) == 1 and not list((out / "evaluate_maps").rglob("*.tmp"))
    run_cli(*step, "--out", str(out))
    timing = json.loads((out / "timings.json").read_text())["evaluate-maps"]
    assert timing["resumed_batches"] == 1 and timing["batches"] == 2
    assert timing["images"]["fold0"]["scored"] == 9
    for name in ("results.csv", "summary.csv", "summary_labels.csv", "summary.md"):
        got = (out / "evaluate_maps" / name).read_bytes()
        assert got == (whole / "evaluate_maps" / name).read_bytes(), name


# ---------------------------------------------------------------------------- distributed
def test_torchrun_two_gloo_processes_equal_one(phantom_run, tmp_path):
    """2 ranks x 1 micro-batch vs 1 rank x 2 micro-batches (float64): same data order, same
    mean gradient, same BatchNorm statistics (micro-batch 0's): every tensor of the final
    weights equal to 1e-12 (bitwise in practice). Explain shards the images over the ranks. NAPs
    sharded over 2 ranks and all-reduced equal one process's to float64 rounding."""
    ddp = copy_prepared(phantom_run, tmp_path / "ddp")
    one = copy_prepared(phantom_run, tmp_path / "one")
    done = run_subprocess(
        ["train,explain,profile", "--out", str(ddp), "--dtype", "float64"], torchrun=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert json.loads((ddp / "models/resnet18/fold0/train.json").read_text())["world_size"] == 2
    # explain: the 2 ranks shared the images; rank 0's index lists every one, all outputs exist
    index = json.loads((ddp / "explain/fold0/index.json").read_text())
    assert len(index["images"]) == config.get_profile("smoke").explain_images
    for entry in index["images"]:
        for method in index["methods"]:
            res = xl.Attribution.load(
                ddp / "explain/fold0" / entry["folder"] / "resnet18" / f"{method}.npz"
            )
            assert res.labels_of(0) == tuple(entry["models"]["resnet18"]["targets"])
    run_cli("train", "--out", str(one), "--dtype", "float64", "--accumulate", "2")
    a = state_dict(ddp / "models/resnet18/fold0/last.pt")
    b = state_dict(one / "models/resnet18/fold0/last.pt")
    assert a["conv1.weight"].dtype == torch.float64
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12, msg=key)
    # the same (DDP-trained) model profiled by one process
    shutil.rmtree(one / "models")
    shutil.copytree(ddp / "models", one / "models")
    run_cli("profile", "--out", str(one), "--dtype", "float64")
    sharded = NAPResult.load(ddp / "naps/resnet18/fold0/nap.npz")
    single = NAPResult.load(one / "naps/resnet18/fold0/nap.npz")
    assert sharded.counts == single.counts and sharded.n_images == single.n_images
    for layer in single.layers:
        np.testing.assert_allclose(sharded.sums[layer], single.sums[layer], rtol=1e-12, atol=0)
        np.testing.assert_array_equal(sharded.minimum[layer], single.minimum[layer])
        np.testing.assert_array_equal(sharded.maximum[layer], single.maximum[layer])


# ---------------------------------------------------------------------------- units
def test_metrics_handle_absent_labels_explicitly():
    labels = ("a", "b", "c")
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    probs = np.array([[0.9, 0.1, 0.7], [0.2, 0.8, 0.1], [0.6, 0.4, 0.2]])
    m = multilabel_metrics(targets, probs, labels, threshold=0.5)
    assert m["per_label"]["a"] == pytest.approx(
        {
            "support": 2,
            "predicted": 2,
            "tp": 1,
            "fp": 1,
            "fn": 1,
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
        }
    )
    assert m["per_label"]["c"]["f1"] is None and m["per_label"]["c"]["fp"] == 1
    assert m["absent_labels"] == ["c"] and m["macro_labels"] == ["a", "b"]
    assert m["macro"]["f1"] == pytest.approx((0.5 + 2 / 3) / 2)  # c left out, not NaN
    # micro: tp 2, fp 2 (c's false positive counts), fn 2
    assert m["micro"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    s = summarize_folds([m, m], labels)
    assert s["per_label"]["c"]["f1"] == {"mean": None, "std": None, "n": 0}
    assert s["micro"]["f1"] == {"mean": 0.5, "std": 0.0, "n": 2}
    assert mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1}


def test_plan_steps_is_sampler_order_by_seed_epoch_and_shards():
    from torch.utils.data.distributed import DistributedSampler

    steps = plan_steps(10, seed=3, epoch=0, shards=2, batch=4)
    for q in range(2):
        sampler = DistributedSampler(range(10), num_replicas=2, rank=q, shuffle=True, seed=3)
        sampler.set_epoch(0)
        assert [i for step in steps for i in step[q]] == list(sampler)
    assert sorted(i for step in steps for chunk in step for i in chunk) == list(range(10))
    assert steps == plan_steps(10, seed=3, epoch=0, shards=2, batch=4)
    assert steps != plan_steps(10, seed=3, epoch=1, shards=2, batch=4)
    # 9 images in batches of 4: the last single image joins the batch before it
    assert [len(s[0]) for s in plan_steps(9, seed=0, epoch=0, shards=1, batch=4)] == [4, 5]
    with pytest.raises(xl.InputError, match="micro-batches"):
        plan_steps(10, seed=0, epoch=0, shards=3, batch=4)


def test_inception_aux_loss_weighted_by_profile():
    # what torchvision's Inception3 returns in train mode (building one takes ~20 s on 2 cores)
    from torchvision.models import InceptionOutputs

    logits, aux = torch.randn(2, 3), torch.randn(2, 3)
    out = InceptionOutputs(logits, aux)
    y = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    torch.testing.assert_close(compute_loss(out, y, 0.4), bce(logits, y) + 0.4 * bce(aux, y))
    torch.testing.assert_close(compute_loss(logits, y, 0.4), bce(logits, y))


def test_exclusive_nap_groups():
    labels = xl.data.PAPER_LABELS
    space = xl.data.LabelSpace()
    y = torch.stack(
        [space.encode(f) for f in ("COVID-19", "Bacterial Pneumonia", "No Finding", "ARDS")]
    )
    m = exclusive_membership(y, labels, config.NAP_GROUPS)
    assert m.tolist() == [
        [True, False, False],
        [False, True, False],
        [False, False, True],
        [False, False, False],
    ]


def test_profiles_validate_their_settings():
    assert config.get_profile("quick").backbones == ("resnet18",)
    paper = config.get_profile("paper")
    assert (paper.size, paper.folds, paper.batch_size, len(paper.backbones)) == (512, 5, 8, 5)
    with pytest.raises(xl.InputError, match="299"):
        config.get_profile("quick", backbones="inception_v3")
    with pytest.raises(xl.InputError, match="unknown profile"):
        config.get_profile("fast")
    with pytest.raises(xl.InputError, match="unknown profile field"):
        config.get_profile("quick").replace(epoch=3)
    assert (
        config.get_profile("smoke").train_fingerprint()
        != config.get_profile("smoke", lr=1e-4).train_fingerprint()
    )


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys, monkeypatch):
    assert cli.main(["nonsense", "--data", "phantoms", "--out", str(tmp_path)]) == 2
    assert "unknown step" in capsys.readouterr().err
    assert cli.main(["prepare", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "covid-chestxray" in capsys.readouterr().err
    code = cli.main(
        [
            "explain",
            "--profile",
            "smoke",
            "--data",
            "phantoms",
            "--out",
            str(tmp_path / "o"),
            "--methods",
            "no_such_method",
            "--no-progress",
        ]
    )
    assert code == 2
    assert "no_such_method" in capsys.readouterr().err
    from examples.covid_cxr import data

    monkeypatch.setattr(data, "default_data_root", lambda: None)
    assert cli.main(["prepare", "--out", str(tmp_path / "p")]) == 2
    assert "pass --data" in capsys.readouterr().err

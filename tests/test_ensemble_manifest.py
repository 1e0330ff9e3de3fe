"""``Ensemble.save`` / ``xl.Ensemble.load``: a JSON manifest of registered members and their
weights files (relative paths, sha256), rebuilt through the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_guard import SmallNet

import xraylens as xl

LABELS = ("a", "b", "c")


def _members():
    torch.manual_seed(0)
    res = xl.get_classifier("resnet18", labels=LABELS)
    dense = xl.get_classifier("resnet34", labels=("c", "B", "a"))
    return res, dense


def _ensemble():
    res, other = _members()
    return xl.Ensemble([res, other], "mean_probs", [1, 3], label_map=[None, {"b": "B"}])


def test_a_saved_ensemble_loads_with_the_same_outputs(tmp_path):
    ens = _ensemble()
    path = ens.save(tmp_path / "models" / "ens.json")
    manifest = json.loads(path.read_text())
    assert manifest["combine"] == "mean_probs" and manifest["labels"] == list(LABELS)
    assert [m["classifier"] for m in manifest["members"]] == ["resnet18", "resnet34"]
    assert manifest["members"][1]["weights"] == "ens.member1.pt"  # relative to the manifest
    assert manifest["label_map"][1] == {"b": "B"}
    moved = tmp_path / "elsewhere"
    (tmp_path / "models").rename(moved)  # relative paths: the folder can move
    back = xl.Ensemble.load(moved / "ens.json")
    assert back.weights == pytest.approx(ens.weights) and back.labels == ens.labels
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(x), ens(x), rtol=0, atol=1e-5)


def test_existing_weights_files_are_referenced_not_copied(tmp_path):
    res, other = _members()
    files = [res.save(tmp_path / "ckpt" / "res.pt"), other.save(tmp_path / "ckpt" / "r34.pt")]
    ens = xl.Ensemble([res, other], label_map=[None, {"b": "B"}])
    path = ens.save(tmp_path / "ens" / "manifest.json", member_weights=files)
    manifest = json.loads(path.read_text())
    assert [m["weights"] for m in manifest["members"]] == ["../ckpt/res.pt", "../ckpt/r34.pt"]
    assert not list((tmp_path / "ens").glob("*.pt"))
    assert xl.Ensemble.load(path).combine == "mean_logits"


def test_missing_changed_or_unknown_members_are_named(tmp_path):
    path = _ensemble().save(tmp_path / "ens.json")
    member = tmp_path / "ens.member1.pt"
    data = member.read_bytes()
    member.write_bytes(data + b"\0")
    with pytest.raises(xl.WeightsError, match=r"member 1 \(resnet34\).*ens.member1.pt changed"):
        xl.Ensemble.load(path)
    assert xl.Ensemble.load(path, check_hash=False).labels == LABELS  # the trailing byte: no harm
    member.unlink()
    with pytest.raises(xl.WeightsError, match=r"ens.json, member 1 .*does not exist"):
        xl.Ensemble.load(path)
    member.write_bytes(data)
    manifest = json.loads(path.read_text())
    manifest["members"][0]["classifier"] = "resnet181"
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        xl.InputError, match=r"ens.json, member 0 \(resnet181\): unknown classifier"
    ):
        xl.Ensemble.load(path)
    with pytest.raises(xl.InputError, match="is no ensemble manifest"):
        xl.Ensemble.load(member.with_name("x.json")) if (tmp_path / "x.json").write_text(
            "{}"
        ) else 0
    custom = xl.Classifier(SmallNet(1, 3), LABELS, min_input_size=8, name="mine")
    with pytest.raises(xl.InputError, match=r"member 1 \(mine\) is no registered classifier"):
        xl.Ensemble([_members()[0], custom]).save(tmp_path / "bad.json")


def test_the_command_line_explains_a_saved_ensemble(tmp_path, capsys):
    from PIL import Image

    from xraylens.cli import main

    path = _ensemble().save(tmp_path / "ens.json")
    image = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "out"
    argv = ["explain", str(image), "--weights", str(path), "--method", "saliency", "--size", "32"]
    assert main([*argv, "--labels", "b", "--out", str(out)]) == 0
    res = xl.Attribution.load(out / "a" / "saliency.npz")
    assert res.labels == ("b",) and res.values.shape == (1, 1, 1, 32, 32)
    (tmp_path / "ens.member0.pt").unlink()
    assert main([*argv, "--out", str(tmp_path / "out2")]) != 0
    assert "ens.member0.pt does not exist" in capsys.readouterr().err

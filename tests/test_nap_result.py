"""NAPResult: derived statistics, ranking, merging, tensors for all-reduce, save/load."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens.profile import NAPResult, UnknownLayerError


def make(sums_a, sums_b, counts, n_images=None, lo=None, hi=None, **kw) -> NAPResult:
    """Two layers: "conv" [G, C=3, 2, 2] and "vec" [G, C=2]."""
    counts = np.asarray(counts)
    g = len(counts)
    groups = tuple("xyz"[:g])
    return NAPResult(
        ("conv", "vec"),
        groups,
        {"conv": np.asarray(sums_a, float), "vec": np.asarray(sums_b, float)},
        counts,
        int(counts.sum()) if n_images is None else n_images,
        lo if lo is not None else {"conv": np.zeros(3), "vec": np.array([-1.0, 0.0])},
        hi if hi is not None else {"conv": np.array([0.0, 1.0, 2.0]), "vec": np.zeros(2)},
        **kw,
    )


@pytest.fixture
def res() -> NAPResult:
    rng = np.random.default_rng(0)
    return make(rng.normal(size=(3, 3, 2, 2)), rng.normal(size=(3, 2)), [2, 5, 1])


def test_means_and_both_weightings(res):
    counts = np.array([2, 5, 1], float)
    means = res.sums["conv"] / counts[:, None, None, None]
    for i, g in enumerate(res.groups):
        np.testing.assert_allclose(res.mean["conv"][g], means[i], rtol=1e-15)
        np.testing.assert_allclose(res.nap["conv"][g], means[i] - means.mean(axis=0), rtol=1e-14)
        size_ref = res.sums["conv"].sum(axis=0) / counts.sum()
        np.testing.assert_allclose(res.naps("size")["conv"][g], means[i] - size_ref, rtol=1e-14)
    # NAPs of the uniform weighting sum to zero over groups; size-weighted NAPs weighted by n
    total = sum(res.nap["vec"][g] for g in res.groups)
    np.testing.assert_allclose(total, 0, atol=1e-14)
    weighted = sum(c * res.naps("size")["vec"][g] for c, g in zip(counts, res.groups))
    np.testing.assert_allclose(weighted, 0, atol=1e-13)
    assert res.counts == {"x": 2, "y": 5, "z": 1}
    assert res.shape("conv") == (3, 2, 2) and res.shape("vec") == (2,)
    assert "NAPResult" in repr(res) and "conv" in repr(res.mean)


def test_size_weighting_as_default():
    rng = np.random.default_rng(1)
    r = make(rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 2)), [1, 3], weighting="size")
    np.testing.assert_array_equal(r.nap["conv"]["x"], r.naps("size")["conv"]["x"])
    assert not np.allclose(r.nap["conv"]["x"], r.naps("uniform")["conv"]["x"])
    with pytest.raises(xl.InputError, match="weighting"):
        r.naps("median")


def test_empty_group_is_nan_and_left_out(res):
    r = make(
        res.sums["conv"] * [[[[1]]], [[[1]]], [[[0]]]], res.sums["vec"] * [[1], [1], [0]], [2, 5, 0]
    )
    assert np.isnan(r.mean["conv"]["z"]).all() and np.isnan(r.nap["conv"]["z"]).all()
    two = (r.mean["conv"]["x"] + r.mean["conv"]["y"]) / 2
    np.testing.assert_allclose(r.nap["conv"]["x"], r.mean["conv"]["x"] - two)
    assert np.isfinite(r.map_scores("conv")).all()


def test_ranking_by_mean_abs_nap():
    # three maps; map 2 differs most between groups, then map 0; map 1 not at all
    a = np.zeros((2, 3, 2, 2))
    a[0, 0], a[1, 0] = 1.0, -1.0
    a[0, 2], a[1, 2] = 3.0, 1.0
    a[:, 2, 0, 0] = 0.0  # map 2: mean |NAP| = 0.75 over its positions
    r = make(a, np.zeros((2, 2)), [1, 1])
    np.testing.assert_allclose(r.map_scores("conv"), [1.0, 0.0, 0.75])
    assert r.top_maps("conv", 2).tolist() == [0, 2]
    assert r.top_maps("conv", 10).tolist() == [0, 2, 1]
    assert r.top_maps("conv", 1, group="y").tolist() == [0]
    with pytest.raises(xl.InputError, match="group"):
        r.top_maps("conv", 1, group="w")
    with pytest.raises(xl.InputError, match="k must"):
        r.top_maps("conv", 0)


def test_inactive_and_zero_fractions(res):
    # conv: map 0 is min=max=0 (zero), maps 1, 2 vary; vec: map 1 is 0..0 (zero), map 0 varies
    assert res.inactive_maps("conv").tolist() == [True, False, False]
    assert res.inactive_fraction == {"conv": pytest.approx(1 / 3), "vec": 0.5}
    assert res.zero_fraction == {"conv": pytest.approx(1 / 3), "vec": 0.5}
    r = make(
        res.sums["conv"],
        res.sums["vec"],
        [2, 5, 1],
        lo={"conv": np.array([2.0, 0, 0]), "vec": np.array([3.0, 0])},
        hi={"conv": np.array([2.0, 1, 1]), "vec": np.array([3.0, 1])},
    )
    assert r.inactive_fraction == {"conv": pytest.approx(1 / 3), "vec": 0.5}  # constant 2, 3
    assert r.zero_fraction == {"conv": 0.0, "vec": 0.0}


def test_unknown_layer_lists_close_matches(res):
    with pytest.raises(UnknownLayerError, match="conv") as err:
        res.mean["con"]
    assert isinstance(err.value, KeyError)
    assert "con" not in res.nap and "vec" in res.nap and list(res.nap) == ["conv", "vec"]
    with pytest.raises(KeyError):
        res.top_maps("vek")


def test_merge_checks_and_is_exact_on_state(res):
    merged = res.merge(res)
    np.testing.assert_array_equal(merged.sums["conv"], 2 * res.sums["conv"])
    assert merged.counts == {"x": 4, "y": 10, "z": 2} and merged.n_images == 16
    np.testing.assert_array_equal(merged.mean["conv"]["y"], res.mean["conv"]["y"])
    other = make(res.sums["conv"][:2], res.sums["vec"][:2], [1, 1])
    with pytest.raises(xl.InputError, match="different layers/groups"):
        res.merge(other)
    with pytest.raises(xl.InputError, match="models"):
        make(res.sums["conv"], res.sums["vec"], [1, 1, 1], model="m1").merge(
            make(res.sums["conv"], res.sums["vec"], [1, 1, 1], model="m2")
        )
    with pytest.raises(xl.InputError, match="merge a NAPResult"):
        res.merge({"conv": 1})


def test_tensors_round_trip_and_manual_reduction(res):
    rng = np.random.default_rng(5)
    b = make(
        rng.normal(size=(3, 3, 2, 2)),
        rng.normal(size=(3, 2)),
        [1, 0, 4],
        n_images=7,
        lo={"conv": np.array([-3.0, 0, 0]), "vec": np.array([-1.0, -2.0])},
        hi={"conv": np.array([0.0, 5, 1]), "vec": np.array([0.0, 0.0])},
    )
    ta, tb = res.to_tensors(), b.to_tensors()
    assert list(ta)[:2] == ["n_images", "counts"] and ta["sum:conv"].dtype == torch.float64
    reduced = {}
    for key in ta:
        op = NAPResult.reduce_op(key)
        fn = {"sum": torch.add, "min": torch.minimum, "max": torch.maximum}[op]
        reduced[key] = fn(ta[key], tb[key])
    assert NAPResult.from_tensors(reduced, res.groups) == res.merge(b)
    assert NAPResult.from_tensors(ta, res.groups) == res
    with pytest.raises(xl.InputError, match="missing"):
        NAPResult.from_tensors({"sum:conv": ta["sum:conv"]}, res.groups)
    with pytest.raises(xl.InputError):
        NAPResult.reduce_op("mean:conv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, path):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        rng = np.random.default_rng(rank)
        r = make(
            rng.normal(size=(3, 3, 2, 2)),
            rng.normal(size=(3, 2)),
            [rank, 1, 2],
            lo={"conv": np.full(3, -rank - 1.0), "vec": np.full(2, -rank - 1.0)},
            hi={"conv": np.full(3, rank + 1.0), "vec": np.full(2, rank + 1.0)},
        )
        r.all_reduce().save(f"{path}/rank{rank}.npz")
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_ranks(tmp_path):
    """Two gloo processes each profile a shard; all_reduce gives both the merged result."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    shards = []
    for rank in range(2):
        rng = np.random.default_rng(rank)
        shards.append(
            make(
                rng.normal(size=(3, 3, 2, 2)),
                rng.normal(size=(3, 2)),
                [rank, 1, 2],
                lo={"conv": np.full(3, -rank - 1.0), "vec": np.full(2, -rank - 1.0)},
                hi={"conv": np.full(3, rank + 1.0), "vec": np.full(2, rank + 1.0)},
            )
        )
    expected = shards[0].merge(shards[1])
    for rank in range(2):
        got = NAPResult.load(tmp_path / f"rank{rank}.npz")
        assert got.counts == expected.counts and got.n_images == expected.n_images
        np.testing.assert_allclose(got.sums["conv"], expected.sums["conv"], rtol=1e-15)
        np.testing.assert_array_equal(got.minimum["vec"], [-2.0, -2.0])
        np.testing.assert_array_equal(got.maximum["conv"], [2.0, 2.0, 2.0])


def test_all_reduce_needs_a_process_group(res):
    with pytest.raises(xl.InputError, match="torch.distributed"):
        res.all_reduce()


def test_save_load_lossless_and_atomic(res, tmp_path):
    r = make(res.sums["conv"], res.sums["vec"], [2, 5, 1], model="resnet18", weighting="size")
    path = r.save(tmp_path / "nap")  # suffix added
    assert path.name == "nap.npz" and os.listdir(tmp_path) == ["nap.npz"]
    back = NAPResult.load(path)
    assert back == r and back.weighting == "size" and back.model == "resnet18"
    for layer in r.layers:
        assert back.sums[layer].tobytes() == r.sums[layer].tobytes()
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["groups"] == ["x", "y", "z"] and meta["counts"] == {"x": 2, "y": 5, "z": 1}
    assert meta["layers"] == ["conv", "vec"] and meta["shapes"]["conv"] == [3, 2, 2]
    assert meta["model"] == "resnet18" and meta["weighting"] == "size"


def test_load_errors(tmp_path, res):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(xl.InputError, match="bad.npz"):
        NAPResult.load(bad)
    np.savez(tmp_path / "other.npz", meta=np.array(json.dumps({"format": "x"})))
    with pytest.raises(xl.InputError, match="not an xraylens NAPResult"):
        NAPResult.load(tmp_path / "other.npz")
    with pytest.raises(xl.InputError):
        NAPResult.load(tmp_path / "missing.npz")


def test_constructor_validates():
    with pytest.raises(xl.InputError, match="3 counts for 2 groups"):
        NAPResult(
            ("conv",),
            ("x", "y"),
            {"conv": np.zeros((2, 3))},
            [1, 1, 1],
            3,
            {"conv": np.zeros(3)},
            {"conv": np.zeros(3)},
        )
    with pytest.raises(xl.InputError, match="layer 'conv'"):
        NAPResult(
            ("conv",),
            ("x",),
            {"conv": np.zeros((1, 3))},
            [1],
            1,
            {"conv": np.zeros(2)},
            {"conv": np.zeros(2)},
        )

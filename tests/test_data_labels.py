"""LabelSpace: the paper's labels and hierarchy, parsing of upstream findings, custom spaces."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens.data.labels import PAPER_HIERARCHY, PAPER_LABELS, LabelSpace

PAPER = LabelSpace()


def names(vector) -> set[str]:
    return set(PAPER.decode(vector))


def test_paper_labels_order_and_hierarchy():
    assert PAPER.labels == PAPER_LABELS
    assert len(PAPER) == 14
    assert PAPER.labels[0] == "ARDS" and PAPER.labels[-1] == "Viral Pneumonia"
    for child, parent in PAPER_HIERARCHY.items():
        assert PAPER.parents(child) == (parent,)
    assert set(PAPER.children("Viral Pneumonia")) == {"COVID-19", "SARS", "MERS"}
    assert set(PAPER.children("Bacterial Pneumonia")) == {
        "Streptococcus",
        "Klebsiella",
        "Chlamydophila",
        "Legionella",
    }
    assert PAPER.children("Fungal Pneumonia") == ("Pneumocystis",)
    assert PAPER.ancestors("COVID-19") == ("Pneumonia", "Viral Pneumonia")
    assert PAPER.ancestors("ARDS") == () and PAPER.ancestors("No Finding") == ()
    assert len(PAPER.descendants("Pneumonia")) == 11
    assert xl.data.LabelSpace is LabelSpace and xl.data.PAPER_LABELS is PAPER_LABELS


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        ("Pneumonia/Viral/COVID-19", {"COVID-19", "Viral Pneumonia", "Pneumonia"}),
        ("COVID-19", {"COVID-19", "Viral Pneumonia", "Pneumonia"}),
        ("Pneumonia/Viral/COVID-19, ARDS", {"COVID-19", "Viral Pneumonia", "Pneumonia", "ARDS"}),
        ("COVID-19, ARDS", {"COVID-19", "Viral Pneumonia", "Pneumonia", "ARDS"}),
        (["COVID-19", "ARDS"], {"COVID-19", "Viral Pneumonia", "Pneumonia", "ARDS"}),
        (
            "Pneumonia/Bacterial/Streptococcus",
            {"Streptococcus", "Bacterial Pneumonia", "Pneumonia"},
        ),
        ("Klebsiella", {"Klebsiella", "Bacterial Pneumonia", "Pneumonia"}),
        ("Pneumonia/Fungal/Pneumocystis", {"Pneumocystis", "Fungal Pneumonia", "Pneumonia"}),
        ("No Finding", {"No Finding"}),
        ("ARDS", {"ARDS"}),
        # outside the 14: nearest ancestor
        ("Pneumonia/Bacterial/E.Coli", {"Bacterial Pneumonia", "Pneumonia"}),
        ("E.Coli", {"Bacterial Pneumonia", "Pneumonia"}),
        ("Mycoplasma", {"Bacterial Pneumonia", "Pneumonia"}),
        ("Pneumonia/Bacterial", {"Bacterial Pneumonia", "Pneumonia"}),
        ("Pneumonia/Viral/Influenza", {"Viral Pneumonia", "Pneumonia"}),
        ("Varicella", {"Viral Pneumonia", "Pneumonia"}),
        ("Pneumonia/Lipoid", {"Pneumonia"}),
        ("Pneumonia", {"Pneumonia"}),
        ("MERS-CoV", {"MERS", "Viral Pneumonia", "Pneumonia"}),
        ("Pneumonia/Bacterial/Staphylococcus/MRSA", {"Bacterial Pneumonia", "Pneumonia"}),
        ("  pneumonia/viral/covid-19 ;ards ", {"COVID-19", "Viral Pneumonia", "Pneumonia", "ARDS"}),
        # an unknown leaf under a known path maps to the path's nearest label
        ("Pneumonia/Viral/Something New", {"Viral Pneumonia", "Pneumonia"}),
    ],
)
def test_parse_expands_up_the_hierarchy(finding, expected):
    assert set(PAPER.parse(finding)) == expected
    vector = PAPER.encode(finding)
    assert vector.dtype == torch.float32 and vector.shape == (14,)
    assert names(vector) == expected
    assert set(torch.unique(vector).tolist()) <= {0.0, 1.0}


def test_every_finding_in_the_real_metadata_maps_to_labels(shared_data):
    with open(shared_data / "covid-chestxray" / "metadata.csv", newline="") as fh:
        findings = {row["finding"] for row in csv.DictReader(fh)}
    assert len(findings) >= 10
    for finding in findings:
        vector = PAPER.encode(finding)
        assert vector.sum() >= 1, finding  # never an all-zero vector


@pytest.mark.parametrize("finding", ["Tuberculosis", "todo", "", "   ", "COVID-19, Banana"])
def test_unknown_findings_raise_a_clear_error(finding):
    with pytest.raises(xl.InputError) as info:
        PAPER.encode(finding)
    assert "finding" in str(info.value)


def test_unknown_skip_policy_is_explicit():
    assert set(PAPER.parse("COVID-19, Banana", unknown="skip")) == {
        "COVID-19",
        "Viral Pneumonia",
        "Pneumonia",
    }
    assert PAPER.parse("Banana", unknown="skip") == ()
    with pytest.raises(xl.InputError, match="unknown must be"):
        PAPER.parse("COVID-19", unknown="zero")


def test_encode_dtype_and_encode_many():
    assert PAPER.encode("COVID-19", dtype=torch.bool).dtype == torch.bool
    matrix = PAPER.encode_many(["COVID-19", "No Finding", "Pneumonia/Bacterial"])
    assert matrix.shape == (3, 14)
    assert matrix[:, PAPER.index("Pneumonia")].tolist() == [1.0, 0.0, 1.0]
    assert PAPER.encode_many([]).shape == (0, 14)


def test_decode_threshold_bool_numpy_and_leaves():
    v = PAPER.encode("COVID-19, ARDS")
    assert PAPER.decode(v, leaves=True) == ("ARDS", "COVID-19")
    assert PAPER.decode(v.bool()) == PAPER.decode(v.numpy())
    probs = np.full(14, 0.2)
    probs[PAPER.index("No Finding")] = 0.7
    assert PAPER.decode(probs) == ("No Finding",)
    assert PAPER.decode(probs, threshold=0.1) == PAPER.labels
    with pytest.raises(xl.InputError, match="shape"):
        PAPER.decode(np.zeros(3))


def test_index_lookup():
    assert PAPER.index("COVID-19") == 2
    assert PAPER.index("covid-19") == 2
    assert PAPER.index(13) == 13
    assert PAPER.name("no finding") == "No Finding"
    assert "viral pneumonia" in PAPER and "Banana" not in PAPER
    with pytest.raises(xl.InputError, match="unknown label"):
        PAPER.index("Banana")
    with pytest.raises(xl.InputError, match="out of range"):
        PAPER.index(14)


def test_to_from_dict_round_trips_through_json():
    space = LabelSpace(["A", "B", "C"], {"C": "B", "B": "A"}, aliases={"see": "C"})
    again = LabelSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.labels == ("A", "B", "C")
    assert again.parse("see") == ("A", "B", "C")
    assert LabelSpace.from_dict(json.loads(json.dumps(PAPER.to_dict()))) == PAPER
    with pytest.raises(xl.InputError):
        LabelSpace.from_dict({"parents": {}})


def test_custom_space_default_hierarchy_comes_from_the_vocabulary():
    small = LabelSpace(["No Finding", "Pneumonia", "COVID-19"])
    assert small.parents("COVID-19") == ("Pneumonia",)
    assert small.parse("Pneumonia/Viral/Influenza") == ("Pneumonia",)
    assert small.parse("Pneumonia/Bacterial/Klebsiella") == ("Pneumonia",)
    assert small.parse("Pneumonia/Viral/COVID-19") == ("Pneumonia", "COVID-19")
    with pytest.raises(xl.InputError, match="ARDS"):
        small.parse("ARDS")


def test_custom_space_with_own_hierarchy_and_aliases():
    space = LabelSpace(
        ["Normal", "Abnormal", "TB", "Pneumonia"],
        parents={"TB": "Abnormal", "Pneumonia": "Abnormal"},
        aliases={"Tuberculosis": "TB", "No Finding": "Normal"},
    )
    assert space.parse("Tuberculosis") == ("Abnormal", "TB")
    assert space.parse("No Finding") == ("Normal",)
    assert space.parse("Pneumonia/Viral/COVID-19") == ("Abnormal", "Pneumonia")
    assert space.descendants("Abnormal") == ("TB", "Pneumonia")
    assert space.leaves() == ("Normal", "TB", "Pneumonia")


def test_alias_cycle_is_unknown_not_a_hang():
    space = LabelSpace(["A"], aliases={"x": "y", "y": "x"})
    with pytest.raises(xl.InputError, match="'x'"):
        space.parse("x")


def test_multiple_parents_dag():
    space = LabelSpace(["A", "B", "C"], {"C": ["A", "B"]})
    assert space.parse("C") == ("A", "B", "C")


@pytest.mark.parametrize(
    ("labels", "parents", "match"),
    [
        (["A", "a"], None, "unique"),
        (["A", "B"], {"A": "B", "B": "A"}, "cycle"),
        (["A", "B"], {"A": "Z"}, "not a label"),
        ("AB", None, "sequence"),
    ],
)
def test_bad_label_spaces_raise(labels, parents, match):
    with pytest.raises(xl.InputError, match=match):
        LabelSpace(labels, parents)

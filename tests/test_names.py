"""One label lookup for the package: exact, then case-insensitive, with did-you-mean."""

from __future__ import annotations

import pytest
import torch

import xraylens as xl
from xraylens.core.names import find_label

LABELS = ("COVID-19", "No Finding", "Bacterial Pneumonia")


def test_exact_then_case_and_spacing_insensitive():
    assert find_label("No Finding", LABELS) == 1
    assert find_label("covid-19", LABELS) == 0
    assert find_label("  bacterial   PNEUMONIA ", LABELS) == 2


def test_unknown_names_suggest_close_ones_and_ambiguity_is_an_error():
    with pytest.raises(xl.InputError, match=r"did you mean \['COVID-19'\]"):
        find_label("covid19", LABELS)
    with pytest.raises(xl.InputError, match="labels are"):
        find_label("zebra", LABELS)
    with pytest.raises(xl.InputError, match="ambiguous"):
        find_label("a", ("A", "a "))
    assert find_label("a", ("A", "a")) == 1  # the exact spelling wins


def test_every_lookup_of_the_package_uses_it():
    clf = xl.Classifier(torch.nn.Linear(4, 3), LABELS, min_input_size=1)
    assert clf.label_index("no finding") == 1
    space = xl.data.LabelSpace.paper()
    assert space.index("covid-19") == space.index("COVID-19")
    with pytest.raises(xl.InputError, match="did you mean"):
        space.index("COVID19")
    from xraylens.core.targets import _label_index

    assert _label_index("bacterial pneumonia", LABELS) == 2

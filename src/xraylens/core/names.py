"""One label lookup for the whole package: exact, then case-insensitive, with did-you-mean.

``core`` is the lowest layer, so the classifier, target resolution, label spaces
(:mod:`xraylens.data.labels`) and the command line all use :func:`find_label` from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from xraylens.errors import InputError


def label_key(name: str) -> str:
    """The comparison key of a label name: case-folded, runs of whitespace as one space."""
    return " ".join(str(name).split()).casefold()


def suggest(name: str, choices: Sequence[str], *, n: int = 3) -> str:
    """``"; did you mean ['A', 'B']?"``, or the list of choices when nothing is close."""
    by_key = {label_key(c): c for c in choices}
    close = difflib.get_close_matches(label_key(name), list(by_key), n=n, cutoff=0.5)
    if close:
        return f"; did you mean {[by_key[c] for c in close]}?"
    return f"; labels are {list(choices)}"


def find_label(name: str, labels: Sequence[str], *, what: str = "label") -> int:
    """Index of ``name`` in ``labels``: the exact spelling, else the one label equal to it
    ignoring case and spacing (``"covid-19"`` -> ``"COVID-19"``).

    Raises :class:`~xraylens.InputError` naming ``what`` and suggesting close names.
    """
    labels = list(labels)
    if name in labels:
        return labels.index(name)
    key = label_key(name)
    hits = [i for i, label in enumerate(labels) if label_key(label) == key]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise InputError(
            f"{what} {name!r} is ambiguous ignoring case: {[labels[i] for i in hits]}; "
            "give the exact spelling"
        )
    raise InputError(f"unknown {what} {name!r}{suggest(name, labels)}")


__all__ = ["find_label", "label_key", "suggest"]

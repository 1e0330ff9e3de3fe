"""The paper's label space, its hierarchy, and parsing of upstream finding strings.

A :class:`LabelSpace` is an ordered list of labels plus a parent relation between them (a DAG).
Targets are *expanded up the hierarchy*: a COVID-19 image is also Viral Pneumonia and Pneumonia.

Finding strings come in two upstream forms, both accepted, several findings separated by ``,``
(also ``;`` or ``|``):

- hierarchical (covid-chestxray-dataset after June 2020): ``Pneumonia/Viral/COVID-19, ARDS``;
- flat (older versions and other sources): ``COVID-19``, ``MERS-CoV``, ``E.Coli``.

A finding term that is not a label maps to its *nearest ancestor in the label space*: first through
``aliases`` and the built-in vocabulary :data:`FINDING_PARENTS` (E.Coli -> Bacterial Pneumonia,
Influenza -> Viral Pneumonia, Lipoid -> Pneumonia, ...), and, for a hierarchical finding, by
walking up its path (``Pneumonia/Viral/Something`` -> Viral Pneumonia). A term that resolves to no
label is an error (:class:`~xraylens.errors.InputError`) unless ``unknown="skip"`` is given: a
finding never becomes a silent all-zero vector.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from xraylens.core.names import find_label as find_label  # the one label lookup, re-exported
from xraylens.core.names import suggest
from xraylens.errors import InputError

#: The 14 labels of Chatterjee et al., in the paper's order.
PAPER_LABELS: tuple[str, ...] = (
    "ARDS",
    "Bacterial Pneumonia",
    "COVID-19",
    "Chlamydophila",
    "Fungal Pneumonia",
    "Klebsiella",
    "Legionella",
    "MERS",
    "No Finding",
    "Pneumocystis",
    "Pneumonia",
    "SARS",
    "Streptococcus",
    "Viral Pneumonia",
)

#: The paper's hierarchy: label -> parent label.
PAPER_HIERARCHY: dict[str, str] = {
    "COVID-19": "Viral Pneumonia",
    "SARS": "Viral Pneumonia",
    "MERS": "Viral Pneumonia",
    "Streptococcus": "Bacterial Pneumonia",
    "Klebsiella": "Bacterial Pneumonia",
    "Chlamydophila": "Bacterial Pneumonia",
    "Legionella": "Bacterial Pneumonia",
    "Pneumocystis": "Fungal Pneumonia",
    "Viral Pneumonia": "Pneumonia",
    "Bacterial Pneumonia": "Pneumonia",
    "Fungal Pneumonia": "Pneumonia",
}

#: Vocabulary of upstream finding terms outside the paper's labels: term -> parent term. Used to
#: find the nearest ancestor of a term in any label space (walked until a label is reached).
FINDING_PARENTS: dict[str, str] = {
    **PAPER_HIERARCHY,
    "Influenza": "Viral Pneumonia",
    "Varicella": "Viral Pneumonia",
    "Herpes": "Viral Pneumonia",
    "H1N1": "Influenza",
    "E.Coli": "Bacterial Pneumonia",
    "Mycoplasma": "Bacterial Pneumonia",
    "Nocardia": "Bacterial Pneumonia",
    "Staphylococcus": "Bacterial Pneumonia",
    "MRSA": "Staphylococcus",
    "Aspergillosis": "Fungal Pneumonia",
    "Lipoid": "Pneumonia",
    "Aspiration": "Pneumonia",
}

#: Spellings of finding terms (lower case, whitespace-normalised) -> canonical term.
FINDING_SYNONYMS: dict[str, str] = {
    "viral": "Viral Pneumonia",
    "bacterial": "Bacterial Pneumonia",
    "bacteria": "Bacterial Pneumonia",
    "virus": "Viral Pneumonia",
    "fungal": "Fungal Pneumonia",
    "covid19": "COVID-19",
    "covid 19": "COVID-19",
    "sars-cov-2": "COVID-19",
    "mers-cov": "MERS",
    "sars-cov": "SARS",
    "e. coli": "E.Coli",
    "e.coli": "E.Coli",
    "escherichia coli": "E.Coli",
    "normal": "No Finding",
    "no findings": "No Finding",
    "streptococcus pneumoniae": "Streptococcus",
    "klebsiella pneumoniae": "Klebsiella",
    "legionella pneumophila": "Legionella",
    "chlamydia": "Chlamydophila",
    "pneumocystis jirovecii": "Pneumocystis",
}

UNKNOWN_POLICIES = ("error", "skip")
_SEPARATORS = re.compile(r"[,;|]")


def _key(term: str) -> str:
    return " ".join(str(term).split()).lower()


_VOCABULARY = {_key(k): k for k in FINDING_PARENTS}


def _canonical(term: str) -> str:
    """The vocabulary spelling of a term (``viral`` -> ``Viral Pneumonia``), else the term."""
    key = _key(term)
    return FINDING_SYNONYMS.get(key) or _VOCABULARY.get(key) or term


class LabelSpace:
    """Ordered labels with a hierarchy; encodes finding strings into expanded target vectors.

    Args:
        labels: label names in output order (default: :data:`PAPER_LABELS`).
        parents: label -> parent label or list of parents. Must be acyclic. Default: derived
            from the vocabulary :data:`FINDING_PARENTS` (each label's nearest ancestor that is
            also a label), which gives :data:`PAPER_HIERARCHY` for the paper's labels and, e.g.,
            ``COVID-19 -> Pneumonia`` for ``("No Finding", "Pneumonia", "COVID-19")``.
        aliases: extra finding term -> label (or vocabulary term) mappings, e.g.
            ``{"TB": "Tuberculosis"}``; they take precedence over the built-in vocabulary.

    ``LabelSpace()`` is the paper's space. Lookups of terms are case-insensitive.
    """

    def __init__(
        self,
        labels: Sequence[str] | None = None,
        parents: Mapping[str, str | Sequence[str]] | None = None,
        aliases: Mapping[str, str] | None = None,
    ):
        labels = PAPER_LABELS if labels is None else labels
        if isinstance(labels, str) or not all(isinstance(x, str) and x for x in labels):
            raise InputError(f"labels must be a sequence of non-empty names, got {labels!r}")
        self.labels: tuple[str, ...] = tuple(labels)
        if len(set(map(_key, self.labels))) != len(self.labels):
            raise InputError(f"labels must be unique (case-insensitively): {self.labels}")
        self._index = {name: i for i, name in enumerate(self.labels)}
        self._by_key = {_key(name): name for name in self.labels}
        self.aliases: dict[str, str] = dict(aliases or {})
        self._alias_keys = {_key(k): v for k, v in self.aliases.items()}
        if parents is None:
            parents = self._vocabulary_parents()
        self._parents: dict[str, tuple[str, ...]] = {name: () for name in self.labels}
        for child, ps in parents.items():
            ps = (ps,) if isinstance(ps, str) else tuple(ps)
            for name in (child, *ps):
                if name not in self._index:
                    raise InputError(f"hierarchy names {name!r}, which is not a label")
            self._parents[child] = ps
        self._ancestors = {name: self._walk_up(name) for name in self.labels}

    @classmethod
    def paper(cls) -> LabelSpace:
        """The paper's 14 labels and hierarchy."""
        return cls()

    def _vocabulary_parents(self) -> dict[str, str]:
        out = {}
        for name in self.labels:
            term = _canonical(name)
            for _ in range(len(FINDING_PARENTS)):  # bounded walk up the vocabulary
                term = FINDING_PARENTS.get(term)
                if term is None:
                    break
                if _key(term) in self._by_key:
                    out[name] = self._by_key[_key(term)]
                    break
        return out

    def _walk_up(self, name: str) -> tuple[str, ...]:
        seen: list[str] = []
        stack, path = [(name, (name,))], None
        while stack:
            node, path = stack.pop()
            for parent in self._parents[node]:
                if parent in path:
                    raise InputError(f"hierarchy has a cycle: {' -> '.join((*path, parent))}")
                if parent not in seen:
                    seen.append(parent)
                stack.append((parent, (*path, parent)))
        return tuple(sorted(seen, key=self._index.__getitem__))

    # --- structure -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        return iter(self.labels)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._by_key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSpace) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.labels, tuple(sorted(self._parents.items()))))

    def __repr__(self) -> str:
        return f"LabelSpace({len(self)} labels: {', '.join(self.labels)})"

    def index(self, name: str | int) -> int:
        """Position of a label (case-insensitive name, or an index that is checked)."""
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
            if not 0 <= int(name) < len(self):
                raise InputError(f"label index {name} out of range for {len(self)} labels")
            return int(name)
        canonical = self._by_key.get(_key(name)) if isinstance(name, str) else None
        if canonical is None:
            raise InputError(f"unknown label {name!r}{suggest(str(name), self.labels)}")
        return self._index[canonical]

    def name(self, name: str | int) -> str:
        """Canonical spelling of a label given by name or index."""
        return self.labels[self.index(name)]

    def parents(self, name: str) -> tuple[str, ...]:
        """Direct parents of a label."""
        return self._parents[self.name(name)]

    def children(self, name: str) -> tuple[str, ...]:
        """Direct children of a label, in label order."""
        name = self.name(name)
        return tuple(x for x in self.labels if name in self._parents[x])

    def ancestors(self, name: str) -> tuple[str, ...]:
        """All labels above ``name`` (transitively, itself excluded), in label order."""
        return self._ancestors[self.name(name)]

    def descendants(self, name: str) -> tuple[str, ...]:
        """All labels below ``name`` (transitively, itself excluded), in label order."""
        name = self.name(name)
        return tuple(x for x in self.labels if name in self._ancestors[x])

    def leaves(self) -> tuple[str, ...]:
        """Labels without children."""
        return tuple(x for x in self.labels if not self.children(x))

    def expand(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` plus all their ancestors, in label order."""
        out = set()
        for name in names:
            name = self.name(name)
            out.add(name)
            out.update(self._ancestors[name])
        return tuple(sorted(out, key=self._index.__getitem__))

    # --- parsing ---------------------------------------------------------------------------
    def resolve(self, term: str) -> str | None:
        """The nearest label of one finding term (flat or a ``A/B/C`` path); None if none."""
        segments = [s for s in (" ".join(p.split()) for p in str(term).split("/")) if s]
        for segment in reversed(segments):  # deepest first: nearest ancestor wins
            found = self._resolve_flat(segment)
            if found is not None:
                return found
        return None

    def _resolve_flat(self, term: str | None) -> str | None:
        seen = set()
        while term is not None:
            key = _key(term)
            if key in self._by_key:
                return self._by_key[key]
            if key in seen:  # a cycle of aliases
                return None
            seen.add(key)
            if key in self._alias_keys:
                term = self._alias_keys[key]
                continue
            canonical = _canonical(term)
            if _key(canonical) != key:  # a synonym: look the canonical term up
                term = canonical
                continue
            term = FINDING_PARENTS.get(canonical)  # one step up the vocabulary
        return None

    def split_findings(self, finding: str | Iterable[str]) -> list[str]:
        """Separate a multi-finding string (``a, b``; also ``;`` or ``|``) into its terms."""
        if isinstance(finding, str):
            parts = _SEPARATORS.split(finding)
        else:
            parts = [p for f in finding for p in _SEPARATORS.split(str(f))]
        return [p.strip() for p in parts if p.strip()]

    def parse(self, finding: str | Iterable[str], *, unknown: str = "error") -> tuple[str, ...]:
        """Label names of a finding string (or list of them), expanded up the hierarchy.

        ``unknown="error"`` (default) raises :class:`InputError` naming the term that has no label
        or ancestor in this space; ``unknown="skip"`` drops such terms (the result may be empty).
        """
        if unknown not in UNKNOWN_POLICIES:
            raise InputError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
        terms = self.split_findings(finding)
        if not terms and unknown == "error":
            raise InputError(f"empty finding {finding!r}")
        found = []
        for term in terms:
            label = self.resolve(term)
            if label is None:
                if unknown == "error":
                    raise InputError(
                        f"finding {term!r} (in {finding!r}) has no label or ancestor in the label "
                        f"space {list(self.labels)}; map it with LabelSpace(aliases={{...}}) or "
                        'pass unknown="skip"'
                    )
                continue
            found.append(label)
        return self.expand(found)

    def encode(
        self,
        finding: str | Iterable[str],
        *,
        unknown: str = "error",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Expanded target vector [L] (``dtype``, default float32 0/1) of a finding string."""
        out = torch.zeros(len(self), dtype=dtype)
        for name in self.parse(finding, unknown=unknown):
            out[self._index[name]] = 1
        return out

    def encode_many(self, findings: Sequence, *, unknown: str = "error") -> torch.Tensor:
        """Target matrix [N, L] float32 of N finding strings."""
        if not findings:
            return torch.zeros(0, len(self))
        return torch.stack([self.encode(f, unknown=unknown) for f in findings])

    def decode(self, vector: Any, threshold: float = 0.5, *, leaves: bool = False) -> tuple:
        """Label names whose entry in ``vector`` [L] exceeds ``threshold`` (bool: is True).

        ``leaves=True`` keeps only the most specific ones (drops labels implied by a child).
        """
        v = torch.as_tensor(np.asarray(vector) if not torch.is_tensor(vector) else vector)
        if v.shape != (len(self),):
            raise InputError(f"vector must have shape [{len(self)}], got {list(v.shape)}")
        on = v if v.dtype == torch.bool else v.double() > threshold
        names = [self.labels[i] for i in torch.nonzero(on).flatten().tolist()]
        if leaves:
            implied = {a for n in names for a in self._ancestors[n]}
            names = [n for n in names if n not in implied]
        return tuple(names)

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (labels, parents, aliases)."""
        return {
            "labels": list(self.labels),
            "parents": {k: list(v) for k, v in self._parents.items() if v},
            "aliases": dict(sorted(self.aliases.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSpace:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(data["labels"], data.get("parents", {}), data.get("aliases"))
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a label space description: {exc}") from None

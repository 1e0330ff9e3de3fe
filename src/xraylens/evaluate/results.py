"""Tidy evaluation results: one row per model x method x image x label x metric, and their
aggregation with bootstrap confidence intervals.

Rows have exactly the columns :data:`COLUMNS`. Text columns are strings (``patient_id`` may be
None when unknown); ``value`` is a float, NaN where a measure is undefined (see the measures).
Files: CSV (``patient_id`` empty when unknown, NaN as ``nan``) or JSON (an array of row
objects, NaN as ``null``); :meth:`Results.read` reads both back exactly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xraylens.core.atomic import atomic_write_bytes
from xraylens.errors import InputError

#: the columns of a :class:`Results` row, in order
COLUMNS: tuple[str, ...] = ("model", "method", "label", "image_id", "patient_id", "metric", "value")
#: the statistics :meth:`Results.aggregate` adds to its ``by`` columns
SUMMARY_STATS: tuple[str, ...] = ("mean", "ci_low", "ci_high", "n")
#: the columns of a :class:`CurveTable` row (one point of one curve)
CURVE_COLUMNS: tuple[str, ...] = ("model", "method", "label", "image_id", "curve", "x", "y")


def _text(value: Any, column: str, optional: bool = False) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if optional:
            return None
        value = ""
    if torch.is_tensor(value) or isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = str(value)
        return None if optional and value == "" else value
    raise InputError(f"Results: column {column!r} must be text, got {type(value).__name__}")


def _row(row: Mapping[str, Any] | Sequence[Any]) -> tuple:
    if isinstance(row, Mapping):
        missing = [c for c in COLUMNS if c not in row and c != "patient_id"]
        extra = sorted(set(row) - set(COLUMNS))
        if missing or extra:
            raise InputError(
                f"Results: a row needs the columns {list(COLUMNS)}; missing {missing}, "
                f"unknown {extra}"
            )
        row = [row.get(c) for c in COLUMNS]
    elif len(row) != len(COLUMNS):
        raise InputError(f"Results: a row needs {len(COLUMNS)} values {list(COLUMNS)}")
    *text, value = row
    try:
        value = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        raise InputError(f"Results: value must be a number, got {value!r}") from None
    out = [_text(v, c, optional=(c == "patient_id")) for v, c in zip(text, COLUMNS)]
    return (*out, value)


class Table:
    """Rows with named columns; saves to CSV/JSON and converts to pandas (when installed)."""

    columns: tuple[str, ...] = ()

    def __init__(self, rows: Iterable[Mapping[str, Any]] = (), columns: Sequence[str] = ()):
        if columns:
            self.columns = tuple(columns)
        self._rows = [tuple(r[c] for c in self.columns) for r in rows]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (dict(zip(self.columns, r)) for r in self._rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(zip(self.columns, self._rows[i]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows, columns {list(self.columns)})"

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts (a copy)."""
        return list(self)

    def column(self, name: str) -> list[Any]:
        """One column's values, in row order."""
        if name not in self.columns:
            raise InputError(f"no column {name!r}; columns: {list(self.columns)}")
        j = self.columns.index(name)
        return [r[j] for r in self._rows]

    def to_pandas(self):
        """A :class:`pandas.DataFrame` (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self._rows, columns=list(self.columns))

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write a CSV with a header row (atomically)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for r in self._rows:
            writer.writerow(
                ["" if v is None else (repr(v) if isinstance(v, float) else v) for v in r]
            )
        return atomic_write_bytes(Path(path), buf.getvalue().encode())

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write a JSON array of row objects, NaN as null (atomically)."""

        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        data = [{c: clean(v) for c, v in zip(self.columns, r)} for r in self._rows]
        return atomic_write_bytes(Path(path), json.dumps(data, indent=1).encode())

    @staticmethod
    def _read_rows(path: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]]]:
        path = Path(path)
        if path.suffix.lower() not in (".csv", ".json"):
            raise InputError(f"{path}: results files are .csv or .json, got {path.suffix!r}")
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(f"cannot read results file {path}: {exc}") from exc
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} is not JSON: {exc}") from exc
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise InputError(f"{path}: expected a JSON array of row objects")
            return (list(data[0]) if data else []), data
        reader = csv.DictReader(io.StringIO(text))
        return list(reader.fieldnames or []), [dict(r) for r in reader]


class Summary(Table):
    """Aggregated results: the ``by`` columns, then ``mean, ci_low, ci_high, n``."""

    @classmethod
    def read(cls, path: str | os.PathLike) -> Summary:
        """Read a file written by :meth:`to_csv` or :meth:`to_json`."""
        columns, raw = cls._read_rows(path)
        rows = []
        for r in raw:
            row = dict(r)
            for c in ("mean", "ci_low", "ci_high"):
                row[c] = math.nan if row.get(c) in (None, "") else float(row[c])
            row["n"] = int(row["n"])
            rows.append(row)
        return cls(rows, columns=columns)


class Results(Table):
    """The tidy results table: rows with exactly the columns :data:`COLUMNS`
    ``model, method, label, image_id, patient_id, metric, value``.

    Build it from rows (dicts or tuples), from per-map scores with :meth:`from_scores`, or by
    adding tables (``a + b``); save with :meth:`to_csv` / :meth:`to_json`, read back with
    :meth:`read`, summarise with :meth:`aggregate`.
    """

    columns = COLUMNS

    def __init__(self, rows: Iterable[Mapping[str, Any] | Sequence[Any]] = ()):
        self._rows = [_row(r) for r in rows]

    def __add__(self, other: Results) -> Results:
        if not isinstance(other, Results):
            return NotImplemented
        out = Results()
        out._rows = self._rows + other._rows
        return out

    def extend(self, other: Results | Iterable[Mapping[str, Any]]) -> None:
        """Append the rows of ``other`` in place."""
        self._rows.extend(other._rows if isinstance(other, Results) else map(_row, other))

    @classmethod
    def concat(cls, tables: Iterable[Results]) -> Results:
        """One table with the rows of every table, in order."""
        out = cls()
        for t in tables:
            out.extend(t)
        return out

    @classmethod
    def from_scores(
        cls,
        scores: Any,
        *,
        metric: str,
        labels: Sequence[str] | Sequence[Sequence[str]],
        image_ids: Sequence[Any] | None = None,
        patient_ids: Sequence[Any] | None = None,
        model: str | None = "",
        method: str | None = "",
        mask: Any = None,
    ) -> Results:
        """Rows from per-map scores [N, T] (e.g. :func:`region_share`'s output).

        Args:
            labels: the T label names, or one sequence per image (an Attribution's ``labels``).
            image_ids: N ids (default ``"0"``, ``"1"``, ...); patient_ids: N ids or None.
            mask: bool [N, T], False for empty slots (an Attribution's ``mask``), skipped.
        """
        v = torch.as_tensor(scores, dtype=torch.float64)
        if v.dim() != 2:
            raise InputError(f"from_scores: scores must be [N, T], got {list(v.shape)}")
        n, t = v.shape
        per_image = bool(labels) and not isinstance(labels[0], str)
        if per_image and len(labels) != n:
            raise InputError(f"from_scores: {len(labels)} label rows for {n} images")
        if not per_image and len(labels) != t:
            raise InputError(f"from_scores: {len(labels)} labels for {t} columns of scores")
        ids = [str(i) for i in range(n)] if image_ids is None else list(image_ids)
        pids = [None] * n if patient_ids is None else list(patient_ids)
        if len(ids) != n or len(pids) != n:
            raise InputError(
                f"from_scores: {len(ids)} image_ids and {len(pids)} patient_ids for {n} images"
            )
        keep = torch.ones(n, t, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
        if tuple(keep.shape) != (n, t):
            raise InputError(f"from_scores: mask must be [{n}, {t}], got {list(keep.shape)}")
        values = v.tolist()
        keep = keep.bool().tolist()
        rows = []
        for i in range(n):
            names = labels[i] if per_image else labels
            for j in range(t):
                if keep[i][j]:
                    rows.append((model, method, names[j], ids[i], pids[i], metric, values[i][j]))
        return cls(rows)

    def filter(self, **equal: Any) -> Results:
        """The rows whose columns equal the given values, e.g. ``filter(metric="iou")``."""
        bad = sorted(set(equal) - set(COLUMNS))
        if bad:
            raise InputError(f"filter: unknown columns {bad}; columns: {list(COLUMNS)}")
        idx = [(COLUMNS.index(c), v) for c, v in equal.items()]
        out = Results()
        out._rows = [r for r in self._rows if all(r[j] == v for j, v in idx)]
        return out

    @classmethod
    def read(cls, path: str | os.PathLike) -> Results:
        """Read a file written by :meth:`to_csv` or :meth:`to_json`."""
        columns, raw = cls._read_rows(path)
        if raw and set(columns) != set(COLUMNS):
            raise InputError(f"{path}: columns {columns}, expected {list(COLUMNS)}")
        rows = []
        for r in raw:
            r = dict(r)
            r["value"] = math.nan if r["value"] in (None, "") else float(r["value"])
            rows.append(r)
        return cls(rows)

    def aggregate(
        self,
        by: Sequence[str] = ("model", "method", "label", "metric"),
        n_boot: int = 1000,
        ci: float = 0.95,
        seed: int = 0,
    ) -> Summary:
        """Mean and percentile-bootstrap CI of ``value`` per group of the ``by`` columns.

        Returns a :class:`Summary` with the ``by`` columns and ``mean, ci_low, ci_high, n``
        (``n``: finite values used; NaN values are left out). The bootstrap resamples
        patients (all of a patient's images together) where ``patient_id`` is known and single
        images where it is not, ``n_boot`` times with a generator seeded by ``seed``; groups are
        resampled independently of each other and of their order. ``n_boot=0``: no CI (NaN).
        """
        by = tuple(by)
        bad = sorted(set(by) - set(COLUMNS[:-1]))
        if bad or not by:
            raise InputError(f"aggregate: by must name columns of {list(COLUMNS[:-1])}, got {by}")
        if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
            raise InputError(f"aggregate: n_boot must be an int >= 0, got {n_boot!r}")
        if not 0 < ci < 1:
            raise InputError(f"aggregate: ci must be in (0, 1), got {ci!r}")
        key_idx = [COLUMNS.index(c) for c in by]
        img_j, pat_j = COLUMNS.index("image_id"), COLUMNS.index("patient_id")
        groups: dict[tuple, list[tuple]] = {}
        for r in self._rows:
            groups.setdefault(tuple(r[j] for j in key_idx), []).append(r)
        out = []
        for key in sorted(groups, key=lambda k: tuple("" if v is None else v for v in k)):
            rows = [r for r in groups[key] if math.isfinite(r[-1])]
            values = np.array([r[-1] for r in rows], dtype=np.float64)
            units = [("p", r[pat_j]) if r[pat_j] is not None else ("i", r[img_j], k) for k, r
                     in enumerate(rows)]  # fmt: skip
            mean, lo, hi = _bootstrap(values, units, n_boot, ci, seed)
            out.append({**dict(zip(by, key)), "mean": mean, "ci_low": lo, "ci_high": hi,
                        "n": len(values)})  # fmt: skip
        return Summary(out, columns=(*by, *SUMMARY_STATS))


def _bootstrap(
    values: np.ndarray, units: list, n_boot: int, ci: float, seed: int
) -> tuple[float, float, float]:
    """Mean of ``values`` and the percentile CI of the mean over resampled units (clusters)."""
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if n_boot == 0:
        return mean, math.nan, math.nan
    codes: dict = {}
    unit = np.array([codes.setdefault(u, len(codes)) for u in units])
    sums = np.bincount(unit, weights=values)
    counts = np.bincount(unit).astype(np.float64)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    # the mean over the pooled images of the drawn patients (a cluster bootstrap)
    boot = sums[draw].sum(-1) / counts[draw].sum(-1)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return mean, float(lo), float(hi)


class CurveTable(Table):
    """Curves in tidy form (``curves.csv``): one row per point, columns :data:`CURVE_COLUMNS`
    ``model, method, label, image_id, curve, x, y``. ``curve``: ``deletion``, ``insertion``,
    ``road`` (x: perturbed fraction, y: the label's score) or ``randomisation`` (x: layers
    randomised, output side first; y: ``spearman_abs`` similarity to the original map)."""

    columns = CURVE_COLUMNS

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()):
        super().__init__(rows)

    def extend(self, other: CurveTable) -> None:
        """Append the rows of ``other`` in place."""
        self._rows.extend(other._rows)

    @classmethod
    def of(cls, trace: Any, *, model: str, method: str, image_ids=None) -> CurveTable:
        """Rows of a :class:`~xraylens.evaluate.Curves` or a
        :class:`~xraylens.evaluate.RandomisationResult` (its method is its own)."""
        if hasattr(trace, "fractions"):
            return cls.from_curves(trace, model=model, method=method, image_ids=image_ids)
        return cls.from_randomisation(trace, model=model, image_ids=image_ids)

    @classmethod
    def from_curves(cls, curves: Any, *, model: str, method: str, image_ids=None) -> CurveTable:
        """Rows of a :class:`~xraylens.evaluate.Curves` (deletion / insertion / ROAD)."""
        x = [float(f) for f in curves.fractions]
        return cls._from(curves.scores, curves.labels, curves.mask, x, curves.mode, model,
                         method, image_ids)  # fmt: skip

    @classmethod
    def from_randomisation(
        cls, result: Any, *, model: str, image_ids=None, similarity: str = "spearman_abs"
    ) -> CurveTable:
        """Rows of a :class:`~xraylens.evaluate.RandomisationResult` (x = 1..K layers)."""
        s = torch.as_tensor(result.similarity[similarity]).permute(1, 2, 0)  # [N, T, K]
        x = [float(k + 1) for k in range(s.shape[-1])]
        return cls._from(s, result.labels, result.mask, x, "randomisation", model,
                         result.method, image_ids)  # fmt: skip

    @classmethod
    def _from(cls, scores, labels, mask, x, curve, model, method, image_ids) -> CurveTable:
        v = torch.as_tensor(scores, dtype=torch.float64).tolist()  # [N, T, K]
        keep = torch.as_tensor(mask).bool().tolist()
        per_image = bool(labels) and not isinstance(labels[0], str)
        ids = [str(i) for i in range(len(v))] if image_ids is None else list(map(str, image_ids))
        rows = []
        for i, per_label in enumerate(v):
            names = labels[i] if per_image else labels
            for j, ys in enumerate(per_label):
                if keep[i][j]:
                    rows += [dict(model=model, method=method, label=names[j], image_id=ids[i],
                                  curve=curve, x=xk, y=yk) for xk, yk in zip(x, ys)]  # fmt: skip
        return cls(rows)

    @classmethod
    def read(cls, path: str | os.PathLike) -> CurveTable:
        """Read a file written by :meth:`to_csv` or :meth:`to_json`."""
        columns, raw = cls._read_rows(path)
        if raw and set(columns) != set(CURVE_COLUMNS):
            raise InputError(f"{path}: columns {columns}, expected {list(CURVE_COLUMNS)}")
        num = {"x", "y"}
        return cls(
            {c: (math.nan if r[c] in (None, "") else float(r[c])) if c in num else str(r[c])
             for c in CURVE_COLUMNS} for r in raw
        )  # fmt: skip

    def mean(self) -> dict[tuple[str, str, str], tuple[list[float], list[float], int]]:
        """(model, method, curve) -> (x, mean y over images and labels at each x, curves
        averaged); NaN points are left out of their mean."""
        acc: dict[tuple, dict[float, list[float]]] = {}
        n: dict[tuple, set] = {}
        for model, method, label, image, curve, x, y in self._rows:
            key = (model, method, curve)
            if math.isfinite(y):
                acc.setdefault(key, {}).setdefault(x, []).append(y)
            n.setdefault(key, set()).add((label, image))
        return {
            k: (sorted(v), [float(np.mean(v[x])) for x in sorted(v)], len(n[k]))
            for k, v in acc.items()
        }


__all__ = ["COLUMNS", "CURVE_COLUMNS", "SUMMARY_STATS", "CurveTable", "Results", "Summary", "Table"]

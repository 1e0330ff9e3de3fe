"""The report's content, independent of its format: a :class:`Document` of sections and blocks.

One document renders to Markdown (:func:`xraylens.report.render_markdown`, figures as PNG files
beside it) and to one self-contained HTML file (:func:`xraylens.report.render_html`, figures as
data URIs). Text is plain; ``**bold**`` and ```code``` are the only inline markup, applied after
escaping, so no string from the data can become markup.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class Paragraph:
    """Plain text with ``**bold**`` and ```code``` spans."""

    text: str


@attrs.frozen
class Bullets:
    """A list of :class:`Paragraph` texts."""

    items: tuple[str, ...] = attrs.field(converter=tuple)


@attrs.frozen
class Table:
    """A table; cells are str, numbers (floats with ``digits`` decimals: one int, or one per
    column) or None/NaN (``n/a``). ``sortable``: the HTML sorts by a clicked column;
    ``collapsed``: the HTML shows it folded under its caption (long detail tables)."""

    columns: tuple[str, ...] = attrs.field(converter=tuple)
    rows: tuple[tuple[Any, ...], ...] = attrs.field(converter=lambda r: tuple(map(tuple, r)))
    caption: str = ""
    digits: int | tuple[int, ...] = 3
    sortable: bool = True
    collapsed: bool = False

    def __attrs_post_init__(self):
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table row {row!r} has {len(row)} cells, {len(self.columns)} columns"
                )

    def cell(self, value: Any, column: int = 0) -> str:
        """The text of one cell (of column index ``column``)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            digits = self.digits if isinstance(self.digits, int) else self.digits[column]
            return f"{value:.{digits}f}"
        return str(value)


@attrs.frozen(eq=False)
class Image:
    """A PNG figure: ``png`` bytes, written as ``name`` beside the Markdown."""

    png: bytes
    name: str
    caption: str = ""
    width: int | None = None  # display width in CSS pixels (None: natural, capped to the page)

    @classmethod
    def from_file(cls, path: str | Path, caption: str = "", **kw) -> Image:
        path = Path(path)
        return cls(path.read_bytes(), path.name, caption, **kw)

    @classmethod
    def from_figure(cls, fig, name: str, caption: str = "", dpi: int = 80, **kw) -> Image:
        """From a matplotlib Figure (rendered with Agg, no pyplot)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return cls(buf.getvalue(), name, caption, **kw)


@attrs.frozen
class Panel:
    """One cell of a :class:`Grid`: an image with caption lines (e.g. each label's
    probability beside its map)."""

    image: Image | None
    lines: tuple[str, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class Grid:
    """Rows of panels with row and column headers (images x models x methods)."""

    columns: tuple[str, ...] = attrs.field(converter=tuple)
    rows: tuple[tuple[str, tuple[Panel, ...]], ...] = attrs.field(
        converter=lambda r: tuple((str(h), tuple(p)) for h, p in r)
    )
    caption: str = ""


Block = Paragraph | Bullets | Table | Image | Grid


@attrs.define
class Section:
    """A titled section; ``flag`` marks one that holds a warning (highlighted in HTML)."""

    title: str
    blocks: list[Block] = attrs.Factory(list)
    flag: bool = False

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self


@attrs.define
class Document:
    """A report: ``title``, a one-paragraph ``summary`` and sections, in order."""

    title: str
    sections: list[Section] = attrs.Factory(list)
    summary: Sequence[str] = ()

    def section(self, title: str, *blocks: Block, flag: bool = False) -> Section:
        s = Section(title, list(blocks), flag)
        self.sections.append(s)
        return s

    def images(self) -> list[Image]:
        """Every image, in order (those in grids included)."""
        out: list[Image] = []
        for s in self.sections:
            for b in s.blocks:
                if isinstance(b, Image):
                    out.append(b)
                elif isinstance(b, Grid):
                    out += [p.image for _, ps in b.rows for p in ps if p.image is not None]
        return out

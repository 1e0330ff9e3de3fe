"""Reports: one :class:`Document`, rendered to Markdown and to one self-contained HTML file.

- :mod:`~xraylens.report.document`: the blocks (paragraphs, tables, images, panel grids);
- :func:`render_markdown`, :func:`render_html`, :func:`write_report`;
- :mod:`~xraylens.report.sections`: sections from the library's outputs (provenance,
  classification, attribution quality, shortcut audit, per-image panels, NAPs, costs);
- :func:`provenance`: models and weight hashes, settings, seeds, the command, versions.

Used by the demo, the recipe (``examples/covid_cxr``) and ``xraylens report``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from xraylens.report.document import (
    Bullets,
    Document,
    Grid,
    Image,
    Panel,
    Paragraph,
    Section,
    Table,
)
from xraylens.report.html import render_html
from xraylens.report.markdown import render_markdown
from xraylens.report.provenance import file_sha256, provenance

FORMATS = ("md", "html")


def write_report(
    doc: Document,
    out: str | os.PathLike,
    *,
    formats: Sequence[str] = FORMATS,
    stem: str = "report",
) -> dict[str, Path]:
    """Write ``out/<stem>.md`` (with its PNGs beside) and/or ``out/<stem>.html`` (one file);
    returns format -> path. Files are written atomically."""
    from xraylens.core.atomic import atomic_write_text
    from xraylens.errors import InputError

    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"report formats must be among {FORMATS}, got {list(formats)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    if "md" in formats:
        written["md"] = atomic_write_text(out / f"{stem}.md", render_markdown(doc, out))
    if "html" in formats:
        written["html"] = atomic_write_text(out / f"{stem}.html", render_html(doc))
    return written


__all__ = [
    "FORMATS",
    "Bullets",
    "Document",
    "Grid",
    "Image",
    "Panel",
    "Paragraph",
    "Section",
    "Table",
    "file_sha256",
    "provenance",
    "render_html",
    "render_markdown",
    "write_report",
]

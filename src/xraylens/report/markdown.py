"""Render a :class:`~xraylens.report.document.Document` as Markdown (figures as PNG files)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from xraylens.report.document import Bullets, Document, Grid, Image, Paragraph, Table

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell(c) for c in t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += [
        "| " + " | ".join(_cell(t.cell(v, j)) for j, v in enumerate(row)) + " |" for row in t.rows
    ]
    return lines + ([f"\n*{t.caption}*"] if t.caption else [])


def image_names(doc: Document) -> dict[int, str]:
    """id(image) -> a unique, file-system safe file name."""
    names: dict[int, str] = {}
    used: set[str] = set()
    in_grids = {id(p.image) for s in doc.sections for b in s.blocks if isinstance(b, Grid)
                for _, ps in b.rows for p in ps}  # fmt: skip
    for img in doc.images():
        if id(img) in names:  # one image shown twice (e.g. an underlay per model row)
            continue
        stem = _UNSAFE.sub("_", Path(img.name).stem).strip("_") or "figure"
        folder = "panels/" if id(img) in in_grids else ""  # many small files: kept apart
        name, k = f"{folder}{stem}.png", 1
        while name in used:
            k += 1
            name = f"{folder}{stem}-{k}.png"
        used.add(name)
        names[id(img)] = name
    return names


def render_markdown(doc: Document, folder: str | os.PathLike | None = None) -> str:
    """The Markdown text; with ``folder``, its figures are written there (atomically)."""
    from xraylens.core.atomic import atomic_write_bytes

    names = image_names(doc)
    if folder is not None:
        for img in {id(i): i for i in doc.images()}.values():
            atomic_write_bytes(Path(folder) / names[id(img)], img.png)
    lines = [f"# {doc.title}", ""]
    if doc.summary:
        lines += [f"- {s}" for s in doc.summary] + [""]
    for s in doc.sections:
        lines += [f"## {'⚠ ' if s.flag else ''}{s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Paragraph):
                lines.append(b.text)
            elif isinstance(b, Bullets):
                lines += [f"- {item}" for item in b.items]
            elif isinstance(b, Table):
                lines += _table(b)
            elif isinstance(b, Image):
                lines.append(f"![{b.caption or b.name}]({names[id(b)]})")
            elif isinstance(b, Grid):
                head = ["", *b.columns]
                lines.append("| " + " | ".join(_cell(c) for c in head) + " |")
                lines.append("|" + "---|" * len(head))
                for header, panels in b.rows:
                    cells = [_cell(header)]
                    for p in panels:
                        img = f"![]({names[id(p.image)]})" if p.image is not None else ""
                        cells.append(_cell(" ".join([img, *p.lines]).strip()))
                    lines.append("| " + " | ".join(cells) + " |")
                if b.caption:
                    lines.append(f"\n*{b.caption}*")
            lines.append("")
    return "\n".join(lines)

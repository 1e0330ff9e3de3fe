"""maps_sections: the audit and per-image panels of in-memory maps (the recipe's report step)."""

from __future__ import annotations

import numpy as np
import torch

import xraylens as xl
from xraylens.core.attribution import Attribution
from xraylens.report import Document, Grid, render_html
from xraylens.report.maps import ExplainedImage, maps_sections

HOSTILE = "<script>alert(1)</script>"


def items(with_lungs=(True, True)) -> list[ExplainedImage]:
    out = []
    for i, lungs in enumerate(with_lungs):
        p = xl.data.make_phantom("COVID-19", 64, seed=i, shortcut="marker")
        maps = {}
        for model, where in (("shortcut", p.shortcut_mask), ("clean", p.lesion_mask)):
            v = torch.from_numpy(where.astype(np.float32))[None, None, None]
            maps[model] = {m: Attribution(v, ("COVID-19",), method=m, model=model)
                           for m in ("saliency", "occlusion")}  # fmt: skip
        others = {f"L{k}": 0.01 * k for k in range(8)}
        probs = {m: {"COVID-19": 0.9 - 0.1 * i, HOSTILE: 0.2, **others} for m in maps}
        out.append(ExplainedImage(f"img{i}{HOSTILE}", p.image, maps,
                                  p.lung_mask if lungs else None, probs, "COVID-19",
                                  ("COVID-19",)))  # fmt: skip
    return out


def test_audit_flags_the_marker_model_and_panels_show_each_labels_probability():
    lines, (audit_sec, panels) = maps_sections(items())
    assert any("shortcut" in ln and "reads markers" in ln for ln in lines)
    assert any(ln.startswith("`clean`") and "no shortcut flag" in ln for ln in lines)
    (grid,) = [b for b in panels.blocks if isinstance(b, Grid)]
    assert grid.columns == ("image", "saliency", "occlusion") and len(grid.rows) == 2 * 2
    header, row = grid.rows[0]
    assert "(truth: COVID-19)" in header and header.endswith("· shortcut")
    assert row[0].lines[0] == "P(COVID-19) 0.90" and len(row[0].lines) == 6  # top 5 + more
    assert row[0].lines[-1] == "(5 more labels below)"
    assert all(p.lines == ("for **COVID-19**: P 0.90",) for p in row[1:])
    assert "lung mask" in grid.caption
    doc = Document("maps", sections=[audit_sec, panels])
    page = render_html(doc)
    assert HOSTILE not in page and "&lt;script&gt;" in page


def test_images_without_a_lung_mask_are_said_and_no_maps_no_sections():
    _, (audit_sec, _) = maps_sections(items((True, False)))
    text = " ".join(getattr(b, "text", "") for b in audit_sec.blocks)
    assert "1 of 2 images have one" in text
    _, (audit_sec, _) = maps_sections(items((False, False)))
    text = " ".join(getattr(b, "text", "") for b in audit_sec.blocks)
    assert "No lung masks were given" in text
    assert maps_sections([]) == ([], [])

"""A small report document for the report tests: phantoms, two fake models (one whose maps sit
on the marker, one on the lesions), the shortcut audit, per-image panels, hostile strings."""

from __future__ import annotations

import numpy as np
import torch

import xraylens as xl
from xraylens import audit
from xraylens.evaluate import Results
from xraylens.report import Document, Paragraph, provenance
from xraylens.report import sections as rs

HOSTILE = '<script>alert("x")</script>'


def sample(n: int = 4, size: int = 64, methods=("saliency", "occlusion"), models=None):
    """(images [n, H, W], phantoms, maps {(model, method): [n, H, W]}, probabilities)."""
    models = models or ("shortcut", "clean")
    phantoms = [
        xl.data.make_phantom(("COVID-19", "Bacterial Pneumonia")[i % 2], size, seed=i,
                             shortcut="marker" if i % 2 == 0 else None)
        for i in range(n)
    ]  # fmt: skip
    images = np.stack([p.image for p in phantoms])
    rng = np.random.default_rng(0)
    maps, probs = {}, {}
    for model in models:
        probs[model] = [
            {"COVID-19": float(rng.uniform()), HOSTILE: float(rng.uniform())} for _ in range(n)
        ]
        for method in methods:
            target = [p.shortcut_mask if model == "shortcut" and p.shortcut else p.lesion_mask
                      for p in phantoms]  # fmt: skip
            maps[(model, method)] = [
                t.astype(np.float64) + 0.05 * rng.normal(size=t.shape) for t in target
            ]
    return images, phantoms, maps, probs


def document(n: int = 4, size: int = 64, methods=("saliency", "occlusion"), models=None):
    images, phantoms, maps, probs = sample(n, size, methods, models)
    lungs = np.stack([p.lung_mask for p in phantoms])
    regions = audit.stack_regions(images, lungs)
    labels = [[p.finding] for p in phantoms]
    rows = Results.concat(
        audit.audit_maps(torch.from_numpy(np.stack(m))[:, None], images, model=model,
                         method=method, labels=labels, lung_masks=lungs, regions=regions)
        for (model, method), m in maps.items()
    )  # fmt: skip
    summary = audit.summarise(rows)
    flags = audit.flag(summary)
    doc = Document(f"report test {HOSTILE}", summary=[f"file `{HOSTILE}.png`, **bold**"])
    doc.section("Notes", Paragraph(f"A label named {HOSTILE} stays text."))
    doc.sections.append(
        rs.audit_section(summary, flags, audit.verdicts(summary, flags),
                         audit.describe_thresholds())
    )  # fmt: skip
    names = [f"{HOSTILE}{i}.png" for i in range(n)]
    doc.sections.append(
        rs.panels_section(images, names, maps, probs, label_of=[p.finding for p in phantoms],
                          contours=[p.lesion_mask | p.shortcut_mask for p in phantoms], size=96)
    )  # fmt: skip
    doc.sections.append(rs.costs_section([{"what": "explain", "seconds": 1.5}]))
    doc.sections.append(
        rs.provenance_section(provenance({"m": {"weights": None}}, seeds={"seed": 0}))
    )
    return doc, summary, flags

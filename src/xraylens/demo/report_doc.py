"""The phantom demo's report as one :class:`xraylens.report.Document` (Markdown and HTML).

Every sentence that states a finding is chosen from the measured numbers (no canned claims).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from xraylens.demo.report import (
    CONCENTRATION_RATIO,
    _depth_sentence,
    _reliance_sentence,
)
from xraylens.report import Document, Image, Paragraph, Section, Table, provenance
from xraylens.report import sections as rs


def _cut(result: dict[str, Any]) -> list[str]:
    out = []
    for name, train in (("clean", result["train"]), ("marker", result["shortcut_model"]["train"])):
        if train["stopped_early"]:
            out.append(
                f"**Training of the {name} model was stopped by the time limit after "
                f"{train['steps']} of {result['config']['steps']} steps** (a busy machine): it is "
                "under-trained. Rerun with `--time-limit 0` for the deterministic result."
            )
    return out


def _models_table(result: dict[str, Any]) -> Table:
    rows = []
    for name, m in (("clean", result), ("marker", result["shortcut_model"])):
        nf = m["reliance"]["No Finding"]
        rows.append(
            [
                name,
                m["train"]["steps"],
                m["train"]["seconds"],
                *[m["test"]["auc"][k] for k in result["labels"]],
                nf["without_marker"],
                nf["with_marker"],
                nf["flipped"],
            ]
        )
    return Table(
        [
            "model",
            "steps",
            "train s",
            *[f"AUC {k}" for k in result["labels"]],
            "P(COVID-19) No Finding",
            "… with marker painted on",
            "flipped to COVID-19",
        ],
        rows,
        caption="test AUC per label, and the counterfactual: the same No Finding phantoms "
        "without and with the marker",
        digits=(0, 0, 1, *[3] * len(result["labels"]), 3, 3, 2),
    )


def synthetic_document(
    result: dict[str, Any],
    files: dict[str, str],
    out: Path,
    *,
    images: np.ndarray,
    maps: dict[str, dict[str, np.ndarray]],
    probs: dict[str, Any],
    records: list[dict],
) -> Document:
    """The report: summary, models, the audit, per-image panels, lesions, NAPs, costs and
    provenance. ``maps[model][method]``: [n, H, W]; ``probs[model]``: [n, L]."""
    cfg = result["config"]
    ok = result["checks"]
    att = result["attribution"]
    audit = result["audit"]
    nf = result["reliance"]["No Finding"]
    bp = result["reliance"]["Bacterial Pneumonia"]
    nfm = result["shortcut_model"]["reliance"]["No Finding"]
    bpm = result["shortcut_model"]["reliance"]["Bacterial Pneumonia"]
    doc = Document(
        "xraylens demo: synthetic chest X-rays with known lesions and a planted shortcut",
        summary=[
            *_cut(result),
            f"Two ResNet18s on {cfg['n_train']} phantoms ({cfg['size']} px; No Finding, "
            "COVID-19 with bilateral ground-glass opacities, Bacterial Pneumonia with a lobar "
            "consolidation): **clean** never saw a marker; **marker** was trained where a "
            f"bright corner marker is on {cfg['confound_p']:.0%} of the COVID-19 images and "
            f"{cfg['confound_p_other']:.0%} of the others, a perfect shortcut. Both are tested "
            f"on phantoms with the marker on {cfg['shortcut_p']:.0%} of COVID-19 and "
            f"{cfg['shortcut_p_other']:.0%} of other images.",
            f"Does the clean model use the marker? {_reliance_sentence(nf, bp)}",
            f"Does the marker model use it? {_reliance_sentence(nfm, bpm)}",
            "The shortcut audit flags the marker model as reading markers and not the clean "
            f"model: **{'yes' if ok.get('audit') else 'no'}**.",
            f"The clean model's maps hit the lesions: **{'yes' if ok['lesions'] else 'no'}** "
            f"(at least half of the methods put {CONCENTRATION_RATIO:g}x or more of chance in "
            "the lesion masks).",
            f"NAPs expose the shortcut in the data: **{'yes' if ok['shortcut'] else 'no'}** "
            f"(the COVID-19 NAP of the first two layers has {CONCENTRATION_RATIO:g}x chance or "
            "more of its energy in the marker region).",
        ],
    )
    doc.sections.append(Section("Models", [_models_table(result)]))
    doc.sections.append(
        rs.audit_section(audit["summary"], audit["flags"], audit["verdicts"], audit["thresholds"])
    )
    doc.sections[-1].add(
        Paragraph(
            f"Markers found in the images: {audit['markers_found']} of the "
            f"{audit['markers_planted']} explained images that carry one."
        )
    )
    labels = result["labels"]
    names = [
        f"{r['finding']}{' + marker' if r['shortcut'] else ''} #{i}" for i, r in enumerate(records)
    ]
    panel_maps = {
        (model, method): list(maps[model][method]) for method in result["methods"] for model in maps
    }
    p = {m: [dict(zip(labels, map(float, row))) for row in np.asarray(v)] for m, v in probs.items()}
    contours = [r["shortcut_mask"] | r["lesion_mask"] for r in records]
    doc.sections.append(
        rs.panels_section(
            images,
            names,
            panel_maps,
            p,
            label_of=[r["finding"] for r in records],
            contours=contours,
            size=96,
        )  # fmt: skip
    )
    lesions = Section("The clean model's maps and the lesions")
    lesions.add(
        Paragraph(
            "Each test image is explained for its own finding. *Lesion share*: the share of "
            "the map's positive attribution inside the lesion mask; *chance*: the mask's area "
            "share; ratio = share / chance. Pointing game: the map's maximum lies in the "
            "lesion (grown by a pixel or two)."
        ),
        Table(
            [
                "method",
                "lesion share",
                "chance",
                "ratio",
                "in lungs",
                "pointing game",
                "marker share",
                "seconds",
            ],
            [
                [
                    f"`{m}`",
                    a["lesion_share"],
                    a["lesion_chance"],
                    a["lesion_ratio"],
                    a["lung_share"],
                    a["pointing"],
                    a["marker_share"],
                    a["seconds"],
                ]
                for m, a in att.items()
            ],  # fmt: skip
            digits=2,
        ),
        Image.from_file(
            out / files["attribution"], "attribution maps (cyan: lesion masks and the marker)"
        ),
    )
    if result["missing_methods"]:
        lesions.add(
            Paragraph(f"Not run (not registered here): {', '.join(result['missing_methods'])}.")
        )
    doc.sections.append(lesions)
    prof = result["profile"]
    naps = Section("Do the NAPs expose the shortcut?")
    naps.add(
        Paragraph(
            "Neuron Activation Profiles of the test set (clean model) for the groups "
            f"{', '.join(result['nap_counts'])}. For the COVID-19 group, *energy* is the sum over "
            "feature maps of |NAP| per position; the table gives its share in the region where "
            "markers occur and in the COVID-19 lesion region, each against its area share. "
            + _depth_sentence(prof)
        ),
        Table(
            [
                "layer",
                "shape",
                "marker share",
                "chance",
                "ratio",
                "peak in marker",
                "lesion-region ratio",
            ],
            [
                [
                    f"`{layer}`",
                    "x".join(str(v) for v in q["shape"]),
                    q["marker"]["share"],
                    q["marker"]["chance"],
                    q["marker"]["ratio"],
                    bool(q["marker"]["peak_inside"]),
                    q["lesion"]["ratio"],
                ]
                for layer, q in prof.items()
            ],  # fmt: skip
            digits=2,
        ),
        Table(
            ["layer", "group", "energy outside lungs", "area outside lungs", "ratio"],
            [
                [r["layer"], r["group"], r["share"], r["area"], r["ratio"]]
                for r in result["nap_outside_lungs"]
            ],
            caption="COVID-19 NAP energy outside the (typical) lung fields",
            digits=2,
        ),
        Image.from_file(out / files["nap_input"], "input-layer NAPs"),
        Image.from_file(out / files["nap_energy"], "NAP energy per layer (cyan: marker region)"),
    )
    if "nap_grid" in files:
        naps.add(Image.from_file(out / files["nap_grid"], "NAP feature maps"))
    doc.sections.append(naps)
    costs = [
        {
            "what": f"explain {m} (both models)",
            "seconds": a["seconds"] + result["shortcut_model"]["attribution"][m]["seconds"],
        }
        for m, a in att.items()
    ]
    costs += [
        {"what": f"phase {k}", "seconds": v["wall"], "cpu seconds": v["cpu"]}
        for k, v in result["timings"].items()
    ]
    doc.sections.append(rs.costs_section(costs))
    doc.sections[-1].add(Image.from_file(out / files["training"], "training loss (clean model)"))
    prov = provenance(
        {
            "clean": {
                "architecture": "resnet18",
                "weights": "trained here, random init",
                "labels": labels,
            },
            "marker": {
                "architecture": "resnet18",
                "weights": "trained here, random init",
                "labels": labels,
            },
        },
        preprocessing={"size": cfg["size"], "channels": 1, "range": "[0, 1]"},
        seeds={"seed": cfg["seed"]},
        settings=json.dumps(cfg),
    )
    doc.sections.append(rs.provenance_section(prov))
    _ = math  # (numbers are formatted by the tables)
    return doc

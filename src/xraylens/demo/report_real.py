"""The report of ``xraylens demo --data``: figures, ``results.json`` and ``report.md``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xraylens import viz
from xraylens.core.atomic import atomic_write_text
from xraylens.demo.report import (
    _cut_warning,
    _fmt,
    _json,
    _table,
    energy_figure,
    loss_figure,
    timings_table,
)


def write_real_figures(
    out: Path,
    result: dict[str, Any],
    *,
    images: np.ndarray | None,
    maps: dict[str, np.ndarray],
    lungs: Sequence[np.ndarray],
    labels: Sequence[str],
    naps: dict[str, Any],
    border: np.ndarray,
) -> dict[str, str]:
    """Write the PNGs, the NAP files and ``results.json``; returns figure name -> file name."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if images is not None and maps:
        methods = list(maps)
        fig = viz.plot_grid(
            list(images),
            [[maps[m][i] for m in methods] for i in range(len(images))],
            row_labels=list(labels),
            col_labels=methods,
            contours=list(lungs),
            panel_size=1.9,
            title="Attribution for each image's label (cyan: lung mask)",
        )
        files["attribution"] = "attribution.png"
        viz.save_figure(fig, out / files["attribution"], dpi=80)
    for kind, nap in naps.items():
        files[f"nap_input_{kind}"] = f"nap_input_{kind}.png"
        viz.save_figure(viz.plot_input_nap(nap), out / files[f"nap_input_{kind}"], dpi=80)
        layers = [layer for layer in nap.layers if len(nap.shape(layer)) == 3]
        files[f"nap_energy_{kind}"] = f"nap_energy_{kind}.png"
        fig = energy_figure(nap, layers, border)
        fig.suptitle("NAP energy per position (sum over feature maps of |NAP|); cyan: border")
        viz.save_figure(fig, out / files[f"nap_energy_{kind}"], dpi=80)
        nap.save(out / f"nap_{kind}.npz")
    files["training"] = "training.png"
    viz.save_figure(loss_figure(result["train"]["losses"]), out / files["training"], dpi=80)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=_json) + "\n")
    return files


def real_markdown(result: dict[str, Any], files: dict[str, str]) -> str:
    """The report's Markdown for real data."""
    cfg = result["config"]
    lines = [
        "# xraylens demo on real chest X-rays",
        "",
        f"Data: `{result['data']}`. A ResNet18 was trained on {result['n_train']} images "
        f"({cfg['size']} px, a patient-level split) for the labels {', '.join(result['labels'])} "
        f"and tested on {result['n_test']} images of other patients. Real data has no lesion "
        "masks: attribution is measured against the **lung masks**, and the shortcut to look "
        "for is the **data source** (children vs adults, one hospital vs figures from papers, "
        "different borders, exposure and text).",
        "",
        "## Training and test",
        "",
        *_cut_warning(result),
        f"{result['train']['steps']} steps in {result['train']['seconds']:.1f} s"
        + (" (stopped by the time limit)" if result["train"]["stopped_early"] else "")
        + f"; final loss {_fmt(result['train']['final_loss'], 4)}.",
        "",
        _table(["label", "test AUC"], [[k, _fmt(v, 3)] for k, v in result["test"]["auc"].items()]),
        "",
    ]
    by_source = result["test"]["covid_probability_by_source"]
    if by_source:
        lines += [
            "Mean COVID-19 probability per data source: "
            + ", ".join(f"{s} {_fmt(p, 3)}" for s, p in by_source.items())
            + ".",
            "",
        ]
    lines += [f"![training loss]({files['training']})", "", "## Attribution inside the lungs", ""]
    if result["attribution"]:
        lines += [
            "*Share*: positive attribution inside the lung mask; *chance*: the mask's share of "
            "the image; *ratio* = share / chance; *pointing game*: the maximum lies in the lungs.",
            "",
            _table(
                ["method", "share in lungs", "chance", "ratio", "pointing game", "seconds"],
                [
                    [
                        f"`{m}`",
                        _fmt(a["lung_share"]),
                        _fmt(a["lung_chance"]),
                        _fmt(a["lung_ratio"], 1),
                        f"{a['pointing']:.0%}",
                        _fmt(a["seconds"], 1),
                    ]
                    for m, a in result["attribution"].items()
                ],
            ),
            "",
        ]
        if "attribution" in files:
            lines += [f"![attribution maps]({files['attribution']})", ""]
    else:
        lines += ["No test image with a lung mask, or no attribution method registered.", ""]
    border = result["border"]
    lines += [
        "## NAPs and the image border",
        "",
        f"The border is the outer {border:.0%} of each side. For each group, the share of its "
        "NAP energy (sum over feature maps of |NAP|) in the border, against the border's area "
        "share (chance). Groups by label (as the paper) and by data source.",
        "",
    ]
    for kind, table in result["profile"].items():
        groups = list(next(iter(table.values())))
        lines += [
            f"### Groups by {'label' if kind == 'labels' else 'data source'} "
            f"(counts {result['nap_counts'][kind]})",
            "",
            _table(
                ["layer", *[f"{g}: share (ratio)" for g in groups]],
                [
                    [f"`{layer}`"]
                    + [f"{_fmt(v[g]['share'])} (x{_fmt(v[g]['ratio'], 1)})" for g in groups]
                    for layer, v in table.items()
                ],
            ),
            "",
            f"![input-layer NAPs]({files[f'nap_input_{kind}']})",
            "",
            f"![NAP energy]({files[f'nap_energy_{kind}']})",
            "",
        ]
    lines += [
        "## Timings",
        "",
        timings_table(result["timings"]),
        "",
        f"Settings: `{json.dumps(cfg)}`. All numbers: `results.json`.",
        "",
    ]
    return "\n".join(lines)


def real_document(result: dict[str, Any], files: dict[str, str], out: Path):
    """The same report as one :class:`xraylens.report.Document` (for ``report.html``)."""
    from xraylens.report import Document, Image, Paragraph, Section, Table, provenance
    from xraylens.report.sections import costs_section, provenance_section

    cfg = result["config"]
    doc = Document(
        "xraylens demo on real chest X-rays",
        summary=[
            f"Data: `{result['data']}`; a ResNet18 trained on {result['n_train']} images "
            f"({cfg['size']} px, patient-level split), tested on {result['n_test']} images of "
            "other patients. Attribution is measured against the **lung masks**; the shortcut "
            "to look for is the **data source**.",
            *[line for line in _cut_warning(result) if line],
        ],
    )
    train = Section("Training and test")
    train.add(
        Table(["label", "test AUC"], list(result["test"]["auc"].items())),
        Image.from_file(out / files["training"], "training loss"),
    )
    by_source = result["test"]["covid_probability_by_source"]
    if by_source:
        train.add(Table(["data source", "mean P(COVID-19)"], list(by_source.items())))
    doc.sections.append(train)
    lungs = Section("Attribution inside the lungs")
    if result["attribution"]:
        lungs.add(
            Table(
                ["method", "share in lungs", "chance", "ratio", "pointing game", "seconds"],
                [
                    [
                        f"`{m}`",
                        a["lung_share"],
                        a["lung_chance"],
                        a["lung_ratio"],
                        a["pointing"],
                        a["seconds"],
                    ]
                    for m, a in result["attribution"].items()
                ],  # fmt: skip
                digits=2,
            )
        )
        if "attribution" in files:
            lungs.add(Image.from_file(out / files["attribution"], "attribution (cyan: lungs)"))
    else:
        lungs.add(Paragraph("No test image with a lung mask, or no attribution method."))
    doc.sections.append(lungs)
    naps = Section("NAPs and the image border")
    naps.add(Paragraph(f"Share of each group's NAP energy in the outer {result['border']:.0%} "
                       "of each side, against the border's area share."))  # fmt: skip
    for kind, table in result["profile"].items():
        groups = list(next(iter(table.values())))
        naps.add(
            Table(
                ["layer", *[f"{g}: share" for g in groups], *[f"{g}: ratio" for g in groups]],
                [
                    [
                        f"`{layer}`",
                        *[v[g]["share"] for g in groups],
                        *[v[g]["ratio"] for g in groups],
                    ]
                    for layer, v in table.items()
                ],  # fmt: skip
                caption=f"groups by {'label' if kind == 'labels' else 'data source'}",
                digits=2,
            ),
            Image.from_file(out / files[f"nap_input_{kind}"], f"input-layer NAPs ({kind})"),
            Image.from_file(out / files[f"nap_energy_{kind}"], f"NAP energy ({kind})"),
        )
    doc.sections.append(naps)
    doc.sections.append(
        costs_section(
            [
                {"what": k, "seconds": v["wall"], "cpu seconds": v["cpu"]}
                for k, v in result["timings"].items()
            ]  # fmt: skip
        )
    )
    doc.sections.append(
        provenance_section(
            provenance(
                {"resnet18": {"weights": "trained here, random init"}},
                preprocessing={"size": cfg["size"]},
                seeds={"seed": cfg["seed"]},
                settings=json.dumps(cfg),
            )  # fmt: skip
        )
    )
    return doc

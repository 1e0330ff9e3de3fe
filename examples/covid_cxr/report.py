"""Step ``report``: ``report.md`` with the tables and figures of the run, linking outputs, and
``report.html``, the same numbers in one self-contained file (:mod:`xraylens.report`).

``report.md`` (in ``--out``) holds: run settings and per-step times; the data and split sizes;
training curves and the selected epochs; the paper's Table 2 layout (micro and macro precision,
recall, F1 as mean +- std over folds, every model and the ensembles); per-label figures; the
explanation figures; the NAP plots; and the conventions behind the numbers. Paths are relative,
so the folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from examples.covid_cxr.context import Run
from examples.covid_cxr.data import read_json
from examples.covid_cxr.metrics import fmt
from xraylens.core.atomic import atomic_write_text

STEPS = ("prepare", "train", "evaluate", "ensemble", "explain", "evaluate-maps", "profile")
MAX_FIGURES = 12  # explanation figures shown inline; the rest are linked from the index
MAX_PANELS = 8  # images in report.html's panels
MAX_CURVES = 4  # of those, images whose deletion / insertion curves the step computes


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _load(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def curves_figure(run: Run) -> Path | None:
    """Training and validation loss per epoch of every model (one panel per fold)."""
    histories = {}
    for backbone in run.profile.backbones:
        for fold in range(run.profile.folds):
            summary = _load(run.model_dir(backbone, fold) / "train.json")
            if summary:
                histories[(backbone, fold)] = summary
    if not histories:
        return None
    folds = sorted({f for _, f in histories})
    fig = Figure(figsize=(4.2 * len(folds), 3.2), layout="constrained")
    axes = fig.subplots(1, len(folds), squeeze=False)[0]
    for ax, fold in zip(axes, folds):
        for (backbone, f), s in histories.items():
            if f != fold:
                continue
            epochs = [h["epoch"] for h in s["history"]]
            line = ax.plot(
                epochs, [h["train_loss"] for h in s["history"]], label=f"{backbone} train"
            )
            ax.plot(
                epochs,
                [h["val_loss"] for h in s["history"]],
                "--",
                color=line[0].get_color(),
                label=f"{backbone} val",
            )
            if s.get("best_epoch"):
                ax.axvline(s["best_epoch"], color=line[0].get_color(), alpha=0.3)
        ax.set_title(f"fold {fold}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("BCE loss")
        ax.legend(fontsize=7)
    from xraylens import viz

    return viz.save_figure(fig, run.out / "training" / "curves.png")


def _section_times(run: Run) -> list[str]:
    timings = _load(run.out / "timings.json") or {}
    rows = [
        [s, f"{timings[s]['seconds']:.1f}", timings[s]["finished"]] for s in STEPS if s in timings
    ]
    total = sum(timings[s]["seconds"] for s in STEPS if s in timings)
    lines = ["## Run", ""]
    p = run.profile
    lines += [
        f"- profile **{p.name}**: {p.description}",
        f"- data: `{run.data}`",
        f"- backbones: {', '.join(p.backbones)}; {p.size} px; {p.folds} fold(s) "
        f"({p.scheme}); {p.epochs} epochs; batch {p.batch_size}; seed {p.seed}",
        f"- processes: {run.dist.world} ({run.dist.device})",
        "",
    ]
    lines += ["Wall time per step (seconds, last run of each step):", ""]
    lines += _table(["step", "seconds", "finished"], rows + [["total", f"{total:.1f}", ""]])
    return lines


def _section_data(run: Run) -> list[str]:
    info, meta = _load(run.out / "dataset.json"), _load(run.out / "run.json")
    if not info:
        return []
    lines = [
        "## Data",
        "",
        f"{info['images']} images of {info['patients']} patients; "
        + ", ".join(f"{k}: {v}" for k, v in info["sources"].items())
        + ".",
        "",
    ]
    if info["duplicate_rows"]:
        lines += [
            f"{len(info['duplicate_rows'])} upstream metadata rows repeat an image under "
            "another patient id; those patients are one split group.",
            "",
        ]
    lines += _table(["label", "images"], [[k, v] for k, v in info["label_counts"].items()])
    sizes = meta["split_sizes"] if meta else []
    lines += ["Subject-level splits (images): [splits.json](splits.json)", ""]
    lines += _table(
        ["fold", "train", "val", "test"],
        [[k, s["train"], s["val"], s["test"]] for k, s in enumerate(sizes)],
    )
    return lines


def _section_training(run: Run) -> list[str]:
    rows = []
    for backbone in run.profile.backbones:
        for fold in range(run.profile.folds):
            s = _load(run.model_dir(backbone, fold) / "train.json")
            if not s:
                continue
            best = s["history"][s["best_epoch"] - 1]
            rows.append(
                [
                    backbone,
                    fold,
                    s["best_epoch"],
                    f"{best['val_loss']:.4f}",
                    fmt({"mean": best["val_macro_f1"]}),
                    f"{s['history'][-1]['train_loss']:.4f}",
                    f"{sum(h['seconds'] for h in s['history']):.0f}",
                ]
            )
    if not rows:
        return []
    lines = [
        "## Training",
        "",
        f"Model selection: {run.profile.select} on the validation "
        "patients (never the test split); `best.pt` is the selected epoch.",
        "",
    ]
    lines += _table(
        ["model", "fold", "best epoch", "val loss", "val macro-F1", "last train loss", "train s"],
        rows,
    )
    curves = curves_figure(run)
    if curves:
        lines += ["![loss curves](training/curves.png)", ""]
    return lines


def _results(run: Run) -> tuple[dict, list[str], list[list[str]], list[list[str]]] | None:
    """(models, Table 2 header, Table 2 rows, per-label F1 rows) from the evaluate outputs."""
    models = (_load(run.out / "metrics" / "models.json") or {}).get("models", {})
    if len(run.profile.backbones) > 1:  # with one backbone the ensembles are that model
        models.update((_load(run.out / "metrics" / "ensemble.json") or {}).get("models", {}))
    if not models:
        return None
    header = ["model", "micro P", "micro R", "micro F1", "macro P", "macro R", "macro F1"]
    rows = [
        [name]
        + [fmt(s[avg][fig]) for avg in ("micro", "macro") for fig in ("precision", "recall", "f1")]
        for name, s in models.items()
    ]
    first = next(iter(models.values()))["per_label"]
    per_label = [
        [f"{lab} ({first[lab]['support']})"]
        + [fmt(s["per_label"][lab]["f1"]) for s in models.values()]
        for lab in first
    ]
    return models, header, rows, per_label


def _section_results(run: Run) -> list[str]:
    found = _results(run)
    if found is None:
        return []
    models, header, rows, per_label = found
    single = len(run.profile.backbones) == 1
    lines = [
        "## Results on the test splits",
        "",
        f"Threshold {run.profile.threshold} on the sigmoid output; mean ± std over "
        f"{run.profile.folds} fold(s). Per fold: [metrics/](metrics/)."
        + (" One backbone: the ensembles equal it." if single else ""),
        "",
    ]
    lines += _table(header, rows)
    lines += [
        "Per-label F1 (test positives summed over folds in brackets; n/a: no positive "
        "test image in any fold):",
        "",
    ]
    lines += _table(["label"] + list(models), per_label)
    for name, s in models.items():
        lines += [f"<details><summary>{name}: per-label precision / recall / F1</summary>", ""]
        lines += _table(
            ["label", "precision", "recall", "F1", "positives"],
            [
                [lab, fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), v["support"]]
                for lab, v in s["per_label"].items()
            ],
        )
        lines += ["</details>", ""]
    return lines


LUNG_METRICS = {
    "region_share": "share of positive attribution inside the lungs",
    "share_ratio": "that share / the lungs' area share (1 = chance)",
    "pointing_game": "the map's maximum inside the lungs (hit rate)",
    "iou": "IoU of the Otsu-binarised map with the lungs",
}


def _lung_rows(run: Run) -> tuple[list[list[Any]], str] | None:
    """The evaluate-maps step's pooled summary (model, method, metric, mean, 95% CI, n) and a
    sentence on what was scored; None before the step ran."""
    from xraylens.evaluate import Summary

    path = run.out / "evaluate_maps" / "summary.csv"
    if not path.is_file():
        return None
    rows = [[r["model"], r["method"], r["metric"], r["mean"], r["ci_low"], r["ci_high"], r["n"]]
            for r in Summary.read(path)]  # fmt: skip
    images = ((_load(run.out / "timings.json") or {}).get("evaluate-maps") or {}).get("images")
    scored = "; ".join(
        f"{fold}: {c['scored']} of {c['with_lung_mask']} test images with a lung mask "
        f"({c['test']} test images)" for fold, c in (images or {}).items() if "scored" in c
    )  # fmt: skip
    text = (
        "Every method's maps of a class-balanced sample of the test images that have a "
        "human-reviewed lung mask, for the labels true or predicted for each image, scored "
        "against the mask (evaluate_maps/, `xraylens.evaluate`): "
        + "; ".join(f"**{k}** {v}" for k, v in LUNG_METRICS.items())
        + ". Mean over (image, label) pairs with a 95% bootstrap CI resampling patients; n: "
        "pairs." + (f" Scored: {scored}." if scored else "")
        + (" One backbone: the ensemble is that model and is not scored again."
           if len(run.profile.backbones) == 1 else "")
    )  # fmt: skip
    return rows, text


def _section_lungs(run: Run) -> list[str]:
    found = _lung_rows(run)
    if found is None:
        return []
    rows, text = found
    body = [[m, me, mt, f"{v:.3f} [{lo:.3f}, {hi:.3f}]", n] for m, me, mt, v, lo, hi, n in rows]
    return ["## Attribution inside the lungs", "", text, "",
            *_table(["model", "method", "metric", "mean [95% CI]", "n"], body)]  # fmt: skip


def _section_explain(run: Run) -> list[str]:
    lines = []
    for fold in run.profile.explain_folds:
        index = _load(run.explain_dir(fold) / "index.json")
        if not index:
            continue
        rel = f"explain/fold{fold}"
        lines += [
            f"## Explanations (fold {fold})",
            "",
            f"{len(index['images'])} test images x {len(index['methods'])} methods "
            f"({', '.join(index['methods'])}) x {len(run.profile.backbones)} model(s); "
            f"output: {index['output']}; targets: true or predicted labels. "
            f"Index: [{rel}/index.json]({rel}/index.json).",
            "",
        ]
        lines += [f"- note: {n}" for n in index.get("notes", [])]
        shown = 0
        for entry in index["images"]:
            for fig in entry["figures"]:
                if shown < MAX_FIGURES:
                    lines += [f"![{entry['id']}]({rel}/{entry['folder']}/{fig})", ""]
                else:
                    lines += [f"- [{entry['id']}: {fig}]({rel}/{entry['folder']}/{fig})"]
                shown += 1
        lines += [""]
    return lines


def _section_naps(run: Run) -> list[str]:
    lines, others = [], []
    for fold in range(run.profile.folds):
        for backbone in run.profile.backbones:
            s = _load(run.nap_dir(backbone, fold) / "summary.json")
            if not s:
                continue
            rel = f"naps/{backbone}/fold{fold}"
            if fold not in run.profile.explain_folds:  # shown inline: the explained folds
                others.append(f"[{backbone} fold {fold}]({rel}/)")
                continue
            lines += [
                f"### {backbone}, fold {fold}",
                "",
                f"{s['images']} test images; groups: "
                + ", ".join(f"{g} {n}" for g, n in s["counts"].items())
                + ".",
                "",
                f"![input NAP]({rel}/input.png)",
                "",
                f"![inactive maps]({rel}/inactive.png)",
                "",
                "Per layer: "
                + ", ".join(f"[{p}]({rel}/{p})" for p in s["plots"] if p.startswith("nap_")),
                "",
            ]
    if others:
        lines += ["Other folds: " + ", ".join(others), ""]
    return ["## Neuron Activation Profiles", ""] + lines if lines else []


NOTES = """## How to read these numbers

- Random initialisation unless a `pretrained` setting says otherwise: the paper fine-tuned
  ImageNet weights; numbers are not expected to match it.
- The two sources differ in age (children vs adults), resolution, borders and burnt-in text: a
  model can separate COVID-19 (adult source) from the rest by those alone. The NAP input plots
  and the explanations show whether it does. These are not clinical figures.
- A label is predicted when its probability exceeds the threshold. Labels with no positive test
  image are n/a for that fold and left out of its macro average and of their own mean; their
  false positives still count in the micro figures. Std: sample std over folds (none for one).
"""


def _explained(run: Run, prep, fold: int) -> list:
    """The explained images of ``fold`` as :class:`~xraylens.report.maps.ExplainedImage`: the
    saved maps of every model and method, the probabilities, the data's lung mask (or None)."""
    from examples.covid_cxr.evaluate_maps import lung_masks
    from xraylens.core.attribution import Attribution
    from xraylens.report.maps import ExplainedImage

    index = _load(run.explain_dir(fold) / "index.json")
    pos = {image_id: k for k, image_id in enumerate(prep.store.ids)}
    entries = [e for e in (index or {}).get("images", []) if e["id"] in pos]
    masks = lung_masks(run, [e["id"] for e in entries])
    items = []
    for e in entries:
        folder = run.explain_dir(fold) / e["folder"]
        maps = {m: {f.stem: Attribution.load(f) for f in sorted((folder / m).glob("*.npz"))}
                for m in e["models"]}  # fmt: skip
        targets = {t for info in e["models"].values() for t in info["targets"]}
        lung = masks.get(e["id"])
        items.append(ExplainedImage(
            e["id"], prep.store.batch([pos[e["id"]]])[0][0, 0].numpy(),
            {m: v for m, v in maps.items() if v}, None if lung is None else lung.numpy(),
            {m: info["probs"] for m, info in e["models"].items()},
            next((t for t in e["truth"] if t in targets), None), tuple(e["truth"]),
        ))  # fmt: skip
    return [it for it in items if it.maps]


def _curves(run: Run, prep, fold: int, items: list):
    """Deletion and insertion curves of the shown images' maps under their models (saved in
    ``report/curves_fold<k>.csv``, reused unless ``--force``)."""
    from examples.covid_cxr.ensemble import load_ensemble
    from examples.covid_cxr.inference import load_model
    from xraylens.evaluate.results import CurveTable
    from xraylens.report.curves import compute_curves

    path = run.out / "report" / f"curves_fold{fold}.csv"
    if path.is_file() and not run.force:
        return CurveTable.read(path), "reused"
    models = {b: load_model(run, b, fold) for b in run.profile.backbones}
    if len(models) > 1:  # with one backbone the ensemble is that model: its curves are the same
        models["ensemble"] = load_ensemble(run, fold, models)
    table = CurveTable()
    for it in items[:MAX_CURVES]:
        x = torch.as_tensor(it.image)[None, None].to(run.dist.device)
        for model, by_method in it.maps.items():
            for method, res in by_method.items():
                if model in models:
                    table.extend(compute_curves(models[model], x, res, model=model, method=method,
                                            image_ids=[it.image_id], steps=8))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path)
    return table, "computed"


def _nap_outside(run: Run, prep, backbone: str, fold: int):
    """The NAP energy outside the lungs of one profile output: a table, or a note."""
    from examples.covid_cxr.evaluate_maps import lung_masks
    from xraylens import audit
    from xraylens.profile import NAPResult
    from xraylens.report import Paragraph
    from xraylens.report.outputs import typical_lungs
    from xraylens.report.sections import nap_outside_blocks

    ids = [prep.store.ids[i] for i in prep.part(fold, "test")]
    masks = lung_masks(run, ids)
    if not masks:
        return [
            Paragraph(
                f"{backbone}, fold {fold}: none of the {len(ids)} profiled test "
                "images has a lung mask; NAP energy outside the lungs not computed."
            )
        ]
    rows = audit.nap_outside_lungs(
        NAPResult.load(run.nap_dir(backbone, fold) / "nap.npz"), typical_lungs(list(masks.values()))
    )
    return nap_outside_blocks(
        rows,
        f"nap_outside_{backbone}_{fold}",
        what=f"{backbone}, fold {fold}",
        caption=(
            f"{backbone}, fold {fold}: share of NAP energy (sum over feature maps of |NAP|) "
            f"outside the lungs, per layer and group; lungs: the majority of the masks of "
            f"{len(masks)} of the {len(ids)} profiled test images; ratio > 1: more outside than "
            "a uniform profile"
        ),
    )


def _explain_figures(run: Run, fold: int) -> list:
    """The explain step's figures of ``fold`` with each model's top labels (a section)."""
    from xraylens.report import Image, Paragraph, Section, Table

    index = _load(run.explain_dir(fold) / "index.json")
    if not index:
        return []
    sec = Section(f"Explanations (fold {fold})")
    for entry in index["images"][:MAX_FIGURES]:
        probs = [
            [m, lab, float(v)]
            for m, info in entry["models"].items()
            for lab, v in sorted(info["probs"].items(), key=lambda kv: -kv[1])[:4]
        ]
        sec.add(Paragraph(f"`{entry['id']}`: truth {', '.join(entry['truth']) or 'none'}"))
        sec.add(Table(["model", "label", "probability"], probs, caption="top labels"))
        for fig in entry["figures"]:
            path = run.explain_dir(fold) / entry["folder"] / fig
            if path.is_file():
                sec.add(Image.from_file(path, f"{entry['id']}: {fig}"))
    return [sec]


def html_document(run: Run):
    """The run as one :class:`xraylens.report.Document` (``report.html``: a single file with
    the figures embedded): settings and times, Table 2 and per-label F1 (the evaluate step's
    numbers, formatted as in ``report.md``), each explained image's figures with every label's
    probability per model, the NAP plots, provenance (weights SHA-256, versions, seeds)."""
    from examples.covid_cxr.prepare import load_prepared
    from xraylens.report import Document, Image, Paragraph, Section, Table, provenance
    from xraylens.report.curves import curves_section
    from xraylens.report.maps import maps_sections
    from xraylens.report.sections import provenance_section

    p = run.profile
    doc = Document(f"COVID-19 chest X-ray recipe: {p.name} run")
    timings = _load(run.out / "timings.json") or {}
    doc.sections.append(Section("Run", [
        Paragraph(f"Profile **{p.name}**: {p.description}. Backbones {', '.join(p.backbones)}; "
                  f"{p.size} px; {p.folds} fold(s) ({p.scheme}); {p.epochs} epochs."),
        Table(["step", "seconds", "finished"],
              [[k, float(timings[k]["seconds"]), timings[k]["finished"]] for k in STEPS
               if k in timings], digits=1),
    ]))  # fmt: skip
    found = _results(run)
    if found is not None:
        models, header, rows, per_label = found
        doc.sections.append(Section("Results on the test splits", [
            Paragraph(f"Threshold {p.threshold} on the sigmoid output; mean ± std over "
                      f"{p.folds} fold(s)."),
            Table(header, rows, caption="the paper's Table 2 layout"),
            Table(["label", *models], per_label, caption="per-label F1 (test positives)"),
        ]))  # fmt: skip
    lungs = _lung_rows(run)
    if lungs is not None:
        rows, text = lungs
        doc.sections.append(Section("Attribution inside the lungs", [
            Paragraph(text),
            Table(["model", "method", "metric", "mean", "95% CI low", "95% CI high", "n"], rows,
                  caption="evaluate_maps/summary.csv", digits=(0, 0, 0, 3, 3, 3, 0)),
        ]))  # fmt: skip
    prep = load_prepared(run) if (run.out / "dataset.json").is_file() else None
    for fold in p.explain_folds:
        items = _explained(run, prep, fold) if prep is not None else []
        lines, sections = maps_sections(items, max_panels=MAX_PANELS,
                                        title=f"Per-image maps (fold {fold})")  # fmt: skip
        if not sections:  # no prepared cache to read the images from: the explain figures
            doc.sections += _explain_figures(run, fold)
            continue
        doc.summary = [*doc.summary, *(f"fold {fold}: {line}" for line in lines)]
        sections[-1].add(Paragraph(f"Every label's figure (rows: models, columns: methods): "
                                   f"report.md and explain/fold{fold}/."))  # fmt: skip
        t0 = time.perf_counter()
        curves, how = _curves(run, prep, fold, items)
        if len(curves):
            sections.insert(1, curves_section(curves, title=f"Deletion and insertion curves "
                                              f"(fold {fold})"))  # fmt: skip
            sections[1].add(Paragraph(
                f"Curves of the first {min(len(items), MAX_CURVES)} images shown, {how} by the "
                f"report step in {time.perf_counter() - t0:.1f} s (report/curves_fold{fold}.csv, "
                "black substrate, the explained output); the recipe runs no randomisation "
                "check, so no randomisation curve."
                + (" One backbone: the ensemble is that model, its curves are the same."
                   if len(p.backbones) == 1 else "")))  # fmt: skip
        doc.sections += sections
    naps = Section("Neuron Activation Profiles")
    for backbone in [*p.backbones, "ensemble"]:
        for fold in p.explain_folds:
            folder = run.nap_dir(backbone, fold)
            for name in ("input.png", "inactive.png"):
                if (folder / name).is_file():
                    naps.add(Image.from_file(folder / name, f"{backbone}, fold {fold}: {name}"))
            if prep is not None and (folder / "nap.npz").is_file():
                naps.add(*_nap_outside(run, prep, backbone, fold))
    if naps.blocks:
        doc.sections.append(naps)
    notes = [Paragraph(" ".join(item.split())) for item in NOTES.split("\n- ")[1:]]
    doc.sections.append(Section("How to read these numbers", notes))
    weights = {
        f"{b} fold {f}": {"weights": str(run.model_dir(b, f) / "best.pt")}
        for b in p.backbones for f in range(p.folds) if (run.model_dir(b, f) / "best.pt").is_file()
    }  # fmt: skip
    doc.sections.append(provenance_section(provenance(
        weights, preprocessing={"size": p.size}, seeds={"seed": p.seed},
        command=f"python -m examples.covid_cxr report --out {run.out}",
    )))  # fmt: skip
    return doc


def report(run: Run) -> Path | None:
    """Write ``report.md`` and ``report.html`` (rank 0)."""
    t0 = time.perf_counter()
    if not run.dist.is_main:
        run.dist.barrier()
        return None
    lines = [
        f"# COVID-19 chest X-ray recipe: {run.profile.name} run",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `python -m examples.covid_cxr report`.",
        "",
    ]
    for section in (
        _section_times,
        _section_data,
        _section_training,
        _section_results,
        _section_lungs,
        _section_explain,
        _section_naps,
    ):
        lines += section(run)
    lines += NOTES.splitlines()
    path = atomic_write_text(run.out / "report.md", "\n".join(lines) + "\n")
    from xraylens.report import write_report

    write_report(html_document(run), run.out, formats=("html",))
    run.record_time("report", time.perf_counter() - t0)
    run.dist.barrier()
    return path

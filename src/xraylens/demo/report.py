"""The demo's report: figures (PNG), every number (``results.json``) and ``report.md``.

Every sentence that states a finding is chosen from the measured numbers (no canned claims);
thresholds are named constants so the report says what "well above chance" means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from xraylens import viz

#: A map "concentrates" on a region when its share there is at least this many times chance.
CONCENTRATION_RATIO = 2.0


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def energy_figure(nap, layers: Sequence[str], region: np.ndarray | None = None) -> Figure:
    """Groups x layers NAP energy with one colourbar per layer (:func:`viz.plot_nap_energy`)."""
    return viz.plot_nap_energy(nap, layers, region=region)


def _outline_cells(ax, region: np.ndarray, shape: tuple[int, int]) -> None:
    """Outline the cells of a ``shape`` grid that ``region`` (input resolution) touches, along
    the cell edges (a contour of the coarse grid itself would cut corners)."""
    from xraylens.demo.metrics import area_fractions

    cells = area_fractions(region, shape) > 0
    if not cells.any() or cells.all():
        return
    k = 8  # sub-samples per cell: the contour then runs along cell edges
    fine = np.kron(cells.astype(float), np.ones((k, k)))
    fine = np.pad(fine, 1)
    h, w = shape
    step = 1.0 / k
    ys = -0.5 - step / 2 + step * np.arange(fine.shape[0])
    xs = -0.5 - step / 2 + step * np.arange(fine.shape[1])
    ax.contour(xs, ys, fine, levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def loss_figure(losses: Sequence[float]) -> Figure:
    """Training loss per step."""
    fig = Figure(figsize=(4.5, 2.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("BCE loss")
    ax.set_title("training loss")
    return fig


def _figure_rows(records: Sequence[dict], per_kind: int = 2) -> list[int]:
    """Rows for the attribution figure: a few of each kind (finding, with/without marker)."""
    seen: dict[tuple[str, bool], int] = {}
    rows = []
    for i, rec in enumerate(records):
        key = (rec["finding"], bool(rec["shortcut"]))
        if seen.get(key, 0) < per_kind:
            seen[key] = seen.get(key, 0) + 1
            rows.append(i)
    return rows


def write_synthetic_figures(
    out: Path,
    result: dict[str, Any],
    *,
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    records: Sequence[dict],
    nap,
    marker_region: np.ndarray,
) -> dict[str, str]:
    """Write the PNGs and ``nap.npz``; returns figure name -> file name."""
    out.mkdir(parents=True, exist_ok=True)
    methods = list(maps)
    rows = _figure_rows(records)
    contours = [records[i]["shortcut_mask"] | records[i]["lesion_mask"] for i in rows]
    labels = [
        f"{records[i]['finding']}" + (" + marker" if records[i]["shortcut"] else "") for i in rows
    ]
    fig = viz.plot_grid(
        [images[i] for i in rows],
        [[maps[m][i] for m in methods] for i in rows],
        row_labels=labels,
        col_labels=methods,
        contours=contours,
        panel_size=1.9,
        title="Attribution for each image's finding (cyan: lesion masks and the marker)",
    )
    files = {"attribution": "attribution.png"}
    viz.save_figure(fig, out / files["attribution"], dpi=80)
    files["nap_input"] = "nap_input.png"
    viz.save_figure(viz.plot_input_nap(nap), out / files["nap_input"], dpi=80)
    files["nap_energy"] = "nap_energy.png"
    layers = [layer for layer in nap.layers if len(nap.shape(layer)) == 3]
    viz.save_figure(energy_figure(nap, layers, marker_region), out / files["nap_energy"], dpi=80)
    first = next((layer for layer in nap.layers if layer != "input"), None)
    if first is not None:
        files["nap_grid"] = f"nap_{first}.png"
        viz.save_figure(viz.plot_nap_grid(nap, first, k=6), out / files["nap_grid"], dpi=80)
    files["training"] = "training.png"
    viz.save_figure(loss_figure(result["train"]["losses"]), out / files["training"], dpi=80)
    nap.save(out / "nap.npz")
    return files


def _json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return repr(value)


def checks(result: dict[str, Any]) -> dict[str, bool]:
    """The demo's three claims, decided from the numbers: (a) the clean model's maps
    concentrate on the lesions (at least half of the methods at ``CONCENTRATION_RATIO`` x
    chance or more), (b) the COVID-19 NAP of the input and first layer concentrates on the
    marker (same bar), and (c) the shortcut audit flags the marker-confounded model as reading
    markers and not the clean one."""
    ratios = [a["lesion_ratio"] for a in result["attribution"].values()]
    good = [r for r in ratios if not math.isnan(r) and r >= CONCENTRATION_RATIO]
    early = list(result["profile"])[:2]
    nap_ok = all(
        result["profile"][layer]["marker"]["ratio"] >= CONCENTRATION_RATIO for layer in early
    )
    out = {"lesions": bool(ratios) and 2 * len(good) >= len(ratios), "shortcut": nap_ok}
    verdicts = result.get("audit", {}).get("verdicts")
    if verdicts is not None:
        out["audit"] = "reads markers" in verdicts.get("marker", {}) and (
            "reads markers" not in verdicts.get("clean", {})
        )
    return out


def timings_table(timings: dict[str, dict[str, float]]) -> str:
    """Markdown table of the phases' wall-clock and CPU seconds."""
    rows = [[k, _fmt(v["wall"], 1), _fmt(v["cpu"], 1)] for k, v in timings.items()]
    note = (
        "\n\nCPU seconds count every thread of the process; on an idle two-core machine the "
        "wall-clock time of a phase is between half of its CPU time and all of it, so a wall "
        "time far above the CPU time means the machine was busy with other work."
    )
    return _table(["phase", "wall-clock s", "CPU s"], rows) + note


def _cut_warning(result: dict[str, Any]) -> list[str]:
    """A warning line when the time limit stopped training early."""
    train, cfg = result["train"], result["config"]
    if not train["stopped_early"]:
        return []
    return [
        f"**Training was stopped by the time limit ({cfg['time_limit']:g} s) after "
        f"{train['steps']} of {cfg['steps']} steps** (a busy or slow machine): the model is "
        "under-trained and the numbers below describe it, not the methods. Rerun with "
        "`--time-limit 0` for the deterministic result.",
        "",
    ]


def _reliance_sentence(nf: dict[str, float], bp: dict[str, float]) -> str:
    """Counterfactual: the same phantoms without and with the marker."""
    shift = max(nf["with_marker"] - nf["without_marker"], bp["with_marker"] - bp["without_marker"])
    verdict = (
        "**yes**: painting the marker on raises its COVID-19 probability"
        if shift >= 0.1 or nf["flipped"] > 0.1
        else "**no** measurable reliance: the marker barely moves its COVID-19 probability"
    )
    return (
        f"{verdict} (No Finding phantoms: {_fmt(nf['without_marker'], 3)} without the marker, "
        f"{_fmt(nf['with_marker'], 3)} with it, {nf['flipped']:.0%} flip to COVID-19; Bacterial "
        f"Pneumonia phantoms: {_fmt(bp['without_marker'], 3)} -> {_fmt(bp['with_marker'], 3)})."
    )


def _depth_sentence(prof: dict[str, Any]) -> str:
    """Where along the network the marker stays prominent in the COVID-19 NAP."""
    strong = [layer for layer, p in prof.items() if p["marker"]["ratio"] >= CONCENTRATION_RATIO]
    weak = [layer for layer in prof if layer not in strong]
    where = ", ".join(f"`{x}`" for x in strong) or "no layer"
    text = f"The marker dominates the COVID-19 NAP in {where}"
    if weak:
        text += f" and fades in {', '.join(f'`{x}`' for x in weak)}"
    text += (
        ": the confounder is plain in the data and the early features; whether the decision "
        "rests on it is what the counterfactual above and the deep layers tell."
    )
    return text

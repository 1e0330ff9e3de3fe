"""Visualisation: overlays for greyscale X-rays, multi-panel figures, NAP grids.

Every plotting function returns a :class:`matplotlib.figure.Figure` built without pyplot (no
display, no global state; safe under the Agg backend and in threads). Save with
:func:`save_figure` (atomic, format from the suffix).

- Overlays: :func:`overlay`, :func:`draw_overlay`, :func:`normalize_map` (sign modes
  :data:`SIGNS`, outlier-percentile clipping, opacity :data:`ALPHA_SCALINGS`; the shared
  defaults in :data:`DEFAULTS`).
- Panels: :func:`plot_grid`, :func:`plot_models_methods` (the paper's rows = models x columns =
  methods), :func:`plot_labels_methods`, :func:`plot_attribution`.
- Neuron Activation Profiles (from :mod:`xraylens.viz.nap`): :func:`plot_nap_grid`,
  :func:`plot_input_nap`, :func:`plot_nap_energy`, :func:`plot_inactive_fraction`.
"""

from xraylens.viz.figure import save_figure
from xraylens.viz.nap import (
    plot_inactive_fraction,
    plot_input_nap,
    plot_nap_energy,
    plot_nap_grid,
)
from xraylens.viz.overlay import (
    ALPHA_SCALINGS,
    CMAPS,
    DEFAULTS,
    SCALINGS,
    SIGNS,
    draw_overlay,
    normalize_map,
    overlay,
    scale_threshold,
)
from xraylens.viz.panels import (
    SHARED_SCALES,
    plot_attribution,
    plot_grid,
    plot_labels_methods,
    plot_models_methods,
)

__all__ = [
    "ALPHA_SCALINGS",
    "CMAPS",
    "DEFAULTS",
    "SCALINGS",
    "SHARED_SCALES",
    "SIGNS",
    "draw_overlay",
    "normalize_map",
    "overlay",
    "plot_attribution",
    "plot_grid",
    "plot_inactive_fraction",
    "plot_input_nap",
    "plot_labels_methods",
    "plot_models_methods",
    "plot_nap_energy",
    "plot_nap_grid",
    "save_figure",
    "scale_threshold",
]

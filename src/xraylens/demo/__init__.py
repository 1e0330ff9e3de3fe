"""The offline demo (``xraylens demo``): explanations checked against known ground truth.

- :func:`run_demo` on synthetic phantoms (default): known lesion masks and a planted shortcut,
  so the report can *measure* whether attribution maps hit the lesions and whether NAPs expose
  the shortcut (:mod:`xraylens.demo.synthetic`).
- :func:`run_demo` with ``data=`` a folder in the two datasets' layouts (e.g.
  ``../shared/data``): attribution inside the lung masks and NAPs of the data sources, the real
  shortcut (:mod:`xraylens.demo.real`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xraylens.demo.config import DEFAULT_METHODS, PRESETS, DemoConfig


def run_demo(
    out: str | os.PathLike = "xraylens-demo",
    *,
    data: str | os.PathLike | None = None,
    config: DemoConfig | str = "default",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the measured numbers, timings and the report path.

    ``config``: a :class:`DemoConfig` or a preset name (``"default"``, ``"quick"``).
    """
    from xraylens.errors import InputError

    if isinstance(config, str):
        if config not in PRESETS:
            raise InputError(f"unknown demo preset {config!r}; presets: {sorted(PRESETS)}")
        config = PRESETS[config]
    out = Path(out)
    if data is None:
        from xraylens.demo.synthetic import run_synthetic

        return run_synthetic(config, out, log)
    from xraylens.demo.real import run_real

    return run_real(config, Path(data), out, log)


__all__ = ["DEFAULT_METHODS", "PRESETS", "DemoConfig", "run_demo"]

"""Settings of the demo and a timer that prints its phases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

#: Methods the demo explains with, in this order (those not registered are skipped).
DEFAULT_METHODS = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "deeplift",
    "grad_cam",
    "occlusion",
)


@attrs.frozen
class DemoConfig:
    """What the demo computes. The defaults are the README's ``xraylens demo`` (73 s on two
    idle CPU cores, both models); :data:`PRESETS` ``"quick"`` is a smaller run of the same code.

    Attributes:
        size: image side in pixels.
        n_train, n_test: phantoms (synthetic) or real images (``--data``) to train and test on.
        steps, batch_size, lr: optimiser steps, batch size and peak learning rate.
        time_limit: seconds after which training stops early: a safeguard that keeps the demo
            bounded on a very slow or busy machine (about 25 s of training suffice on two
            idle cores; results are deterministic as long as the limit is not reached).
        explain_per_class: test images explained per lesion class (and half as many with the
            shortcut marker).
        methods: attribution methods (skipped when not registered).
        ig_steps: integration steps of integrated gradients.
        occlusion_window, occlusion_stride: occlusion's window and stride as fractions of the
            image side (16 and 12 px at 96 px: 8 x 8 windows).
        shortcut_p, shortcut_p_other: share of COVID-19 / other *test* phantoms with the marker.
        confound_p, confound_p_other: the same shares in the training set of the
            marker-confounded model (default: every COVID-19 phantom and no other, a perfect
            shortcut that it learns instead of the lesions). The clean model sees no marker.
        seed: everything is deterministic given the seed.
    """

    size: int = 96
    n_train: int = 600
    n_test: int = 150
    steps: int = 60
    batch_size: int = 32
    lr: float = 3e-3
    time_limit: float | None = 90.0
    explain_per_class: int = 4
    methods: tuple[str, ...] = attrs.field(default=DEFAULT_METHODS, converter=tuple)
    ig_steps: int = 16
    occlusion_window: float = 1 / 6
    occlusion_stride: float = 1 / 8
    shortcut_p: float = 0.8
    shortcut_p_other: float = 0.05
    confound_p: float = 1.0
    confound_p_other: float = 0.0
    seed: int = 0


PRESETS: dict[str, DemoConfig] = {
    "default": DemoConfig(),
    "quick": DemoConfig(
        size=64, n_train=240, n_test=60, steps=40, time_limit=60.0, explain_per_class=2, ig_steps=8
    ),
}


class Phases:
    """Times named phases (wall clock, and CPU time of the process: on a busy machine the
    two differ) and prints ``[k/n] what ...`` lines as they start and finish."""

    def __init__(self, total: int, log: Callable[[str], None] = print):
        self.total = total
        self.log = log
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()

    @contextmanager
    def phase(self, key: str, what: str) -> Iterator[None]:
        k = len(self.seconds) + 1
        self.log(f"[{k}/{self.total}] {what} ...")
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[key] = time.perf_counter() - start
            self.cpu_seconds[key] = time.process_time() - cpu
            self.log(f"[{k}/{self.total}] {what}: {self.seconds[key]:.1f} s")

    @property
    def elapsed(self) -> float:
        """Seconds since the timer was made."""
        return time.perf_counter() - self._started

    def table(self) -> dict[str, dict[str, float]]:
        """``{phase: {"wall": s, "cpu": s}}`` plus ``"total"``."""
        out = {k: {"wall": v, "cpu": self.cpu_seconds[k]} for k, v in self.seconds.items()}
        out["total"] = {"wall": self.elapsed, "cpu": time.process_time() - self._cpu_started}
        return out

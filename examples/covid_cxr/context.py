"""The run context shared by every step: profile, data, output layout, process group, timings.

Output layout (under ``--out``)::

    run.json                       profile, data root, fingerprints (written by prepare)
    dataset.json, splits.json      images, labels, subject-level splits
    cache/images-<S>px-<hash>.npy  preprocessed images
    models/<backbone>/fold<k>/     checkpoint.pt (resume), best.pt, last.pt, train.json
    predictions/<model>/fold<k>.npz  sigmoid outputs on the test split (+ targets, ids)
    metrics/                       per model and fold, and summary.json (mean +- std)
    explain/fold<k>/<image>/       <backbone>/<method>.npz + .png, figure_<label>.png
    naps/<backbone>/fold<k>/       nap.npz and plots
    report.md, timings.json
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import attrs

from examples.covid_cxr.config import Profile
from examples.covid_cxr.data import read_json, write_json
from examples.covid_cxr.distributed import Dist
from xraylens.errors import InputError

#: Test hook: ``<step>:<n>`` makes the process SIGKILL itself after n units of work of that step
#: (optimizer steps of ``train``, written outputs of ``explain``): a real, reproducible crash.
KILL_ENV = "COVID_CXR_KILL_AFTER"


@attrs.define
class Run:
    """Everything a step needs. ``progress``: tqdm bars (rank 0 only)."""

    profile: Profile
    data: str
    out: Path
    dist: Dist = attrs.field(factory=Dist)
    force: bool = False
    progress: bool = True
    _units: dict[str, int] = attrs.field(factory=dict)

    @property
    def show_progress(self) -> bool:
        return self.progress and self.dist.is_main

    # ------------------------------------------------------------------ paths
    def model_dir(self, backbone: str, fold: int) -> Path:
        return self.out / "models" / backbone / f"fold{fold}"

    def predictions(self, model: str, fold: int) -> Path:
        return self.out / "predictions" / model / f"fold{fold}.npz"

    def explain_dir(self, fold: int) -> Path:
        return self.out / "explain" / f"fold{fold}"

    def nap_dir(self, backbone: str, fold: int) -> Path:
        return self.out / "naps" / backbone / f"fold{fold}"

    # ------------------------------------------------------------------ bookkeeping
    def record_time(self, step: str, seconds: float, **extra: Any) -> None:
        """Add a step's wall time to ``timings.json`` (rank 0)."""
        if not self.dist.is_main:
            return
        path = self.out / "timings.json"
        timings = read_json(path) if path.is_file() else {}
        timings[step] = {
            "seconds": round(seconds, 2),
            "world_size": self.dist.world,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            **extra,
        }
        write_json(path, timings)

    def work_done(self, step: str, units: int = 1) -> None:
        """Count work for the :data:`KILL_ENV` test hook; SIGKILL this process when due."""
        spec = os.environ.get(KILL_ENV, "")
        m = re.fullmatch(r"(\w+):(\d+)", spec)
        if not m or m.group(1) != step:
            return
        self._units[step] = self._units.get(step, 0) + units
        if self._units[step] >= int(m.group(2)):
            os.kill(os.getpid(), signal.SIGKILL)

    def check_prepared(self) -> dict[str, Any]:
        """``run.json`` of this output folder, checked against the current profile and data."""
        meta = read_json(self.out / "run.json")
        if (
            meta.get("data_fingerprint") != self.profile.data_fingerprint()
            or meta.get("data") != self.data
        ):
            raise InputError(
                f"{self.out} was prepared with other data settings ({meta.get('profile')}, "
                f"data {meta.get('data')}); use another --out or rerun prepare with --force"
            )
        return meta

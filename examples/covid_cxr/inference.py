"""Loading trained models and running them over cached images, sharded across ranks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

import xraylens as xl
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import ImageStore
from xraylens.core.classifier import eval_mode
from xraylens.errors import InputError


def load_model(run: Run, backbone: str, fold: int, which: str = "best") -> xl.Classifier:
    """The classifier saved by ``train`` (``best.pt``: selected on validation; ``last.pt``),
    in eval mode on the run's device."""
    path = run.model_dir(backbone, fold) / f"{which}.pt"
    if not path.is_file():
        raise InputError(f"no trained model {path}: run the train step first")
    clf = xl.get_classifier(backbone, weights=path)
    clf.module.to(run.dist.device).eval()
    return clf


def autocast(device: torch.device, enabled: bool):
    """float16 autocast on CUDA when ``enabled``; a no-op context otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(
    run: Run,
    forward: Callable[[torch.Tensor], torch.Tensor],
    module: torch.nn.Module,
    store: ImageStore,
    positions: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    batch: int | None = None,
    desc: str = "predict",
) -> torch.Tensor:
    """Logits [N, L] (float32, CPU) of the images at ``positions`` (in that order).

    Each rank runs every ``world``-th image; the pieces are gathered so every rank returns the
    whole, identical result. ``module`` is put in eval mode for the pass (flags restored).
    """
    d = run.dist
    batch = batch or run.profile.eval_batch
    mine = d.shard(list(positions))
    pieces = []
    with eval_mode(module):
        for start in tqdm(
            range(0, len(mine), batch), desc=desc, disable=not run.show_progress, leave=False
        ):
            x, _ = store.batch(mine[start : start + batch], dtype)
            pieces.append(forward(x.to(d.device)).float().cpu())
    n_labels = len(store.labels)
    local = torch.cat(pieces) if pieces else torch.zeros(0, n_labels)
    gathered = d.gather_objects(local)
    out = torch.zeros(len(positions), n_labels)
    for rank, part in enumerate(gathered):
        out[rank :: d.world] = part
    return out

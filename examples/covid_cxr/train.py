"""Step ``train``: every backbone on every fold, resumable, bit-for-bit reproducible on a CPU.

The recipe (the paper's): ``BCEWithLogitsLoss`` on the 14 labels, Adam (lr 1e-3, weight decay
1e-4), InceptionV3's auxiliary logits added with weight 0.4, float16 autocast with gradient
scaling on CUDA. No augmentation (the paper used none).

Data order. An optimizer step consumes ``batch_size`` images split into ``Q = world x accumulate``
equal micro-batches; micro-batch ``q`` of every step comes from ``DistributedSampler(num_replicas=Q,
rank=q, seed, shuffle=True)`` at ``set_epoch(epoch)``. The order is a function of (seed, epoch, Q)
only, so a resumed run sees exactly the batches an uninterrupted one would, and 2 ranks x 1
micro-batch equal 1 rank x 2 micro-batches (gradients: the mean of the Q micro-batch means;
BatchNorm running statistics: those of micro-batch 0, as DDP keeps rank 0's).

Checkpoints. After every epoch rank 0 writes ``checkpoint.pt`` atomically: model, optimizer,
scheduler, gradient scaler, every rank's torch/numpy/python RNG states, epochs done, the history
and the best validation score. A rerun resumes from it; on a CPU the final weights are bitwise
those of an uninterrupted run (same thread count).

Model selection. ``select="val_loss"`` (default): the epoch with the lowest mean BCE on the fold's
validation patients is saved as ``best.pt`` (ties keep the earlier epoch); ``"val_macro_f1"``:
the highest validation macro-F1. The test split is never looked at. ``last.pt`` is the final
epoch's weights.
"""

from __future__ import annotations

import contextlib
import io
import random
import time
import zlib
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

import xraylens as xl
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import read_json, write_json
from examples.covid_cxr.inference import autocast, predict_logits
from examples.covid_cxr.metrics import multilabel_metrics
from examples.covid_cxr.prepare import Prepared, load_prepared
from xraylens.core.atomic import atomic_write_bytes
from xraylens.errors import InputError

CHECKPOINT = "checkpoint.pt"
FORMAT = "covid_cxr.checkpoint/1"


def derive_seed(seed: int, backbone: str, fold: int) -> int:
    """A seed per (backbone, fold), stable across runs and Python versions."""
    return (seed * 1_000_003 + zlib.crc32(f"{backbone}:{fold}".encode())) % (2**31)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def plan_steps(n: int, *, seed: int, epoch: int, shards: int, batch: int) -> list[list[list[int]]]:
    """``steps[s][q]``: positions (into the n training images) of micro-batch ``q`` of step ``s``.

    ``shards`` micro-batches of ``batch // shards`` images per step, each shard drawn by its own
    ``DistributedSampler`` (which pads the epoch to a multiple of ``shards`` by repeating a few
    images). A final micro-batch of one image joins the one before it: BatchNorm cannot train
    on a single value per channel (InceptionV3's auxiliary head is 1x1).
    """
    if batch % shards:
        raise InputError(
            f"batch size {batch} does not split into {shards} equal micro-batches "
            "(world size x accumulate); change --batch-size or --accumulate"
        )
    per = batch // shards
    if per < 1 or n < shards:
        raise InputError(f"{n} training images cannot feed {shards} micro-batches per step")
    order = []
    for q in range(shards):
        sampler = DistributedSampler(range(n), num_replicas=shards, rank=q, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        idx = list(sampler)
        chunks = [idx[i : i + per] for i in range(0, len(idx), per)]
        if len(chunks) > 1 and len(chunks[-1]) == 1:
            tail = chunks.pop()
            chunks[-1] = chunks[-1] + tail
        order.append(chunks)
    return [[order[q][s] for q in range(shards)] for s in range(len(order[0]))]


def compute_loss(out: Any, y: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """BCE on the logits, plus ``aux_weight`` x BCE on InceptionV3's auxiliary logits."""
    bce = nn.functional.binary_cross_entropy_with_logits
    if isinstance(out, tuple):  # torchvision InceptionOutputs(logits, aux_logits) in train mode
        logits, aux = out[0], out[1]
        return bce(logits.float(), y.float()) + aux_weight * bce(aux.float(), y.float())
    return bce(out.float(), y.float())


# ---------------------------------------------------------------------- RNG and checkpoints
def rng_state() -> dict[str, Any]:
    """This process's RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"{path} is not a covid_cxr training checkpoint")
    return ckpt


# ---------------------------------------------------------------------- one model
class Trainer:
    """Trains one backbone on one fold (see the module docstring)."""

    def __init__(self, run: Run, prep: Prepared, backbone: str, fold: int):
        self.run, self.prep, self.backbone, self.fold = run, prep, backbone, fold
        p, d = run.profile, run.dist
        self.folder = run.model_dir(backbone, fold)
        self.dtype = torch.float64 if p.dtype == "float64" else torch.float32
        self.amp = p.amp and d.device.type == "cuda" and self.dtype == torch.float32
        self.shards = d.world * p.accumulate
        self.seed = derive_seed(p.seed, backbone, fold)
        self.train_pos = prep.part(fold, "train")
        self.val_pos = prep.part(fold, "val")
        if not self.val_pos:
            raise InputError(f"fold {fold} has no validation images: raise --val-size")
        seed_everything(self.seed)  # identical initial weights on every rank and every run
        self.clf = xl.get_classifier(
            backbone, labels=prep.labels, in_channels=1, weights=p.pretrained, input_size=p.size
        )
        self.module = self.clf.module.to(device=d.device, dtype=self.dtype)
        self.net = self.clf.forward_module()  # adds the input normalisation of pretrained weights
        if d.active and d.device.type == "cuda" and p.sync_bn:
            self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
        self.ddp = self.net
        if d.active:
            ids = [d.local_rank] if d.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = torch.optim.Adam(
            self.module.parameters(), lr=p.lr, weight_decay=p.weight_decay
        )
        if p.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, p.epochs)
        else:
            self.scheduler = torch.optim.lr_scheduler.ConstantLR(self.optimizer, 1.0, 0)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch, self.best_score, self.best_epoch = 0, None, None
        self.history: list[dict[str, Any]] = []
        self.resumed_from: int | None = None

    # ------------------------------------------------------------------ state
    def resume(self) -> None:
        path = self.folder / CHECKPOINT
        if not path.is_file():
            return
        ckpt = load_checkpoint(path)
        fingerprint = self.run.profile.train_fingerprint()
        if ckpt["fingerprint"] != fingerprint:
            raise InputError(
                f"{path} was written with other training settings; use --force to retrain or "
                "another --out"
            )
        if ckpt["shards"] != self.shards:
            raise InputError(
                f"{path} was trained with {ckpt['shards']} micro-batches per step (world size x "
                f"accumulate), now {self.shards}: resume with the same world size and --accumulate"
            )
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.history = ckpt["epoch"], list(ckpt["history"])
        self.best_score, self.best_epoch = ckpt["best_score"], ckpt["best_epoch"]
        set_rng_state(ckpt["rng"][self.run.dist.rank])
        self.resumed_from = self.epoch

    def checkpoint(self) -> None:
        states = self.run.dist.gather_objects(rng_state())  # collective: every rank calls it
        if not self.run.dist.is_main:
            return
        save_checkpoint(
            self.folder / CHECKPOINT,
            {
                "format": FORMAT,
                "fingerprint": self.run.profile.train_fingerprint(),
                "backbone": self.backbone,
                "fold": self.fold,
                "shards": self.shards,
                "epoch": self.epoch,
                "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best_score": self.best_score,
                "best_epoch": self.best_epoch,
                "history": self.history,
                "rng": states,
            },
        )

    # ------------------------------------------------------------------ epochs
    def train_epoch(self) -> float:
        run, d, p = self.run, self.run.dist, self.run.profile
        steps = plan_steps(
            len(self.train_pos),
            seed=self.seed,
            epoch=self.epoch,
            shards=self.shards,
            batch=p.batch_size,
        )
        self.ddp.train()
        total, count = 0.0, 0
        bar = tqdm(
            steps,
            desc=f"{self.backbone} fold {self.fold} epoch {self.epoch + 1}/{p.epochs}",
            disable=not run.show_progress,
            leave=False,
        )
        for step in bar:
            self.optimizer.zero_grad(set_to_none=True)
            for j in range(p.accumulate):
                chunk = step[d.rank * p.accumulate + j]
                x, y = self.prep.store.batch([self.train_pos[i] for i in chunk], self.dtype)
                x, y = x.to(d.device), y.to(d.device)
                last = j == p.accumulate - 1
                sync = self.ddp.no_sync() if d.active and not last else contextlib.nullcontext()
                # BatchNorm running statistics follow micro-batch 0 only, as rank 0's do under
                # DDP: the result then depends on the number of shards, not on their layout
                frozen = [b.clone() for b in self.module.buffers()] if j else None
                with sync:
                    with autocast(d.device, self.amp):
                        loss = compute_loss(self.ddp(x), y, p.aux_weight)
                    self.scaler.scale(loss / p.accumulate).backward()
                if frozen is not None:
                    with torch.no_grad():
                        for buf, saved in zip(self.module.buffers(), frozen):
                            buf.copy_(saved)
                total += float(loss.detach()) * len(chunk)
                count += len(chunk)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            run.work_done("train")
        self.scheduler.step()
        total, count = d.all_sum([total, count])
        return total / max(count, 1.0)

    def validate(self) -> dict[str, float]:
        d = self.run.dist
        if d.active:  # every rank evaluates rank 0's BatchNorm statistics, the saved ones
            for buf in self.module.buffers():
                torch.distributed.broadcast(buf, 0)
        with autocast(d.device, self.amp):
            logits = predict_logits(
                self.run,
                self.net,
                self.module,
                self.prep.store,
                self.val_pos,
                dtype=self.dtype,
                desc="validate",
            )
        targets = self.prep.store.targets[self.val_pos]
        loss = nn.functional.binary_cross_entropy_with_logits(logits.double(), targets.double())
        m = multilabel_metrics(
            targets.numpy(),
            torch.sigmoid(logits).numpy(),
            self.prep.labels,
            self.run.profile.threshold,
        )
        return {"loss": float(loss), "macro_f1": m["macro"]["f1"], "micro_f1": m["micro"]["f1"]}

    def fit(self) -> dict[str, Any]:
        p, d = self.run.profile, self.run.dist
        t_start = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.resume()
        while self.epoch < p.epochs:
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss = self.train_epoch()
            val = self.validate()
            score = val["loss"] if p.select == "val_loss" else -val["macro_f1"]
            improved = self.best_score is None or score < self.best_score
            if improved:
                self.best_score, self.best_epoch = score, self.epoch + 1
            self.history.append(
                {
                    "epoch": self.epoch + 1,
                    "lr": lr,
                    "train_loss": train_loss,
                    "val_loss": val["loss"],
                    "val_macro_f1": val["macro_f1"],
                    "val_micro_f1": val["micro_f1"],
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            if improved and d.is_main:
                self.clf.save(self.folder / "best.pt")
            self.epoch += 1
            self.checkpoint()
            d.barrier()
        summary = {
            "backbone": self.backbone,
            "fold": self.fold,
            "fingerprint": p.train_fingerprint(),
            "epochs": p.epochs,
            "criterion": p.select,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "train_images": len(self.train_pos),
            "val_images": len(self.val_pos),
            "world_size": d.world,
            "accumulate": p.accumulate,
            "device": str(d.device),
            "dtype": p.dtype,
            "amp": self.amp,
            "resumed_from_epoch": self.resumed_from,
            "seconds_this_run": round(time.perf_counter() - t_start, 2),
            "history": self.history,
        }
        if d.is_main:
            self.clf.save(self.folder / "last.pt")
            write_json(self.folder / "train.json", summary)
            if not p.keep_checkpoints:
                (self.folder / CHECKPOINT).unlink(missing_ok=True)
        d.barrier()
        return summary


def train_one(run: Run, prep: Prepared, backbone: str, fold: int) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one backbone on one fold."""
    summary_path = run.model_dir(backbone, fold) / "train.json"
    if summary_path.is_file() and not run.force:
        summary = read_json(summary_path)
        if summary.get("fingerprint") == run.profile.train_fingerprint():
            return {**summary, "skipped": True}
        raise InputError(
            f"{summary_path} holds a model trained with other settings; use --force or --out"
        )
    if run.force:
        for name in (CHECKPOINT, "train.json"):
            if run.dist.is_main:
                (run.model_dir(backbone, fold) / name).unlink(missing_ok=True)
        run.dist.barrier()
    return Trainer(run, prep, backbone, fold).fit()


def train(run: Run) -> list[dict[str, Any]]:
    """Every backbone of the profile on every fold."""
    t0 = time.perf_counter()
    prep = load_prepared(run)
    results = []
    for backbone in run.profile.backbones:
        for fold in range(run.profile.folds):
            results.append(train_one(run, prep, backbone, fold))
    if not all(r.get("skipped") for r in results):
        run.record_time(
            "train",
            time.perf_counter() - t0,
            models=[f"{r['backbone']}/fold{r['fold']}" for r in results],
            epochs=run.profile.epochs,
        )
    return results

"""Synthetic chest X-ray phantoms with known lesion masks and an optional planted shortcut.

Real data stays the reference; phantoms give what real data lacks: ground truth. Each phantom is
a frontal chest-like greyscale image (soft tissue, two lung fields, ribs, clavicles, heart,
spine, diaphragm domes, smooth texture and noise, with per-image jitter of anatomy and exposure)
and, depending on its finding, lesions inside the lungs whose masks are returned:

- ``"No Finding"``: none;
- ``"COVID-19"``: bilateral, peripheral and basal ground-glass opacities (2-4 soft blobs);
- ``"Bacterial Pneumonia"``: one dense lobar consolidation (upper or lower lobe of one lung);
- ``"Viral Pneumonia"``: bilateral perihilar streaky opacities (central, not peripheral).

A *shortcut* (:class:`Shortcut`) can be planted: a bright rectangular marker in a corner (like a
burnt-in label) or dark bands at the top and bottom border (as the paper's NAPs found in its
pneumonia images), in a configurable share of one class's images and rarely elsewhere.

Lesions are meant to be learnable at 96-128 px by a small network in a minute on a CPU: their
peak contrast is clear (ground glass +0.25-0.35, consolidation +0.35-0.45 over lung at ~0.12;
mean contrast inside the masks at 96 px: >= 0.08 ground glass, >= 0.27 consolidation).
Everything is deterministic given the seed; a few hundred 128 px phantoms take about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image

from xraylens.data.base import ChestXrayDataset
from xraylens.data.labels import LabelSpace
from xraylens.errors import InputError

FINDINGS = ("No Finding", "COVID-19", "Bacterial Pneumonia", "Viral Pneumonia")
SHORTCUT_KINDS = ("marker", "border")


@attrs.frozen
class Shortcut:
    """A planted confounder: ``kind`` in the images of class ``label`` with probability
    ``p_label``, in other images with probability ``p_other``."""

    kind: str = attrs.field(default="marker", validator=attrs.validators.in_(SHORTCUT_KINDS))
    label: str = "COVID-19"
    p_label: float = 0.8
    p_other: float = 0.05


@attrs.frozen(eq=False)
class Phantom:
    """One phantom: image float32 [H, W] in [0, 1]; masks bool [H, W]; target float32 [L]."""

    image: np.ndarray
    lesion_mask: np.ndarray
    lung_mask: np.ndarray
    shortcut_mask: np.ndarray
    finding: str
    labels: tuple[str, ...]
    target: torch.Tensor
    shortcut: bool


def make_phantom(
    finding: str = "COVID-19",
    size: int = 128,
    *,
    seed: int | Sequence[int] = 0,
    shortcut: str | None = None,
    noise: float = 0.02,
    label_space: LabelSpace | None = None,
) -> Phantom:
    """Draw one phantom of ``finding`` (one of :data:`FINDINGS`) at ``size`` x ``size``.

    ``shortcut``: None, ``"marker"`` or ``"border"`` (drawn unconditionally here; the
    :class:`Phantoms` dataset decides per image). ``seed``: an int or a sequence of ints.
    """
    if finding not in FINDINGS:
        raise InputError(f"phantom finding must be one of {FINDINGS}, got {finding!r}")
    if shortcut is not None and shortcut not in SHORTCUT_KINDS:
        raise InputError(f"shortcut must be None or one of {SHORTCUT_KINDS}, got {shortcut!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise InputError(f"phantom size must be an int >= 16, got {size!r}")
    space = label_space if label_space is not None else LabelSpace()
    rng = np.random.default_rng(seed)
    image, lungs, lesion = _anatomy_and_lesions(finding, int(size), rng)
    image = image + rng.normal(0.0, noise, image.shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    marks = np.zeros(image.shape, dtype=bool)
    if shortcut is not None:
        marks = _draw_shortcut(image, shortcut, rng)
    labels = space.parse(finding)
    return Phantom(
        image=image,
        lesion_mask=lesion & ~marks,
        lung_mask=lungs,
        shortcut_mask=marks,
        finding=finding,
        labels=labels,
        target=space.encode(finding),
        shortcut=shortcut is not None,
    )


def _ellipse(x, y, cx, cy, ax, ay):
    """Squared normalised distance to an ellipse centre (< 1 inside)."""
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _smooth_field(rng, size: int, cells: int = 6) -> np.ndarray:
    """Smooth random field [size, size] in about [-1, 1] (bicubic upsampled coarse noise)."""
    coarse = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def _anatomy_and_lesions(finding: str, size: int, rng: np.random.Generator):
    u = rng.uniform
    scale, dx, dy = u(0.92, 1.04), u(-0.04, 0.04), u(-0.04, 0.04)
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid((coords - dy) / scale, (coords - dx) / scale, indexing="ij")
    edge = 0.02  # soft edges, in normalised units
    body = _sigmoid((1.0 - _ellipse(x, y, 0.0, 0.08, 0.93, 1.15)) / edge)
    img = 0.03 + 0.34 * body

    sides = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):  # patient right = image left
        cx, cy = sign * u(0.38, 0.44), u(-0.14, -0.06)
        ax, ay = u(0.27, 0.32), u(0.66, 0.74)
        dome = cy + 0.72 * ay + 0.25 * ((x - cx) / 0.35) ** 2 + u(-0.03, 0.03)
        inside = _sigmoid((1.0 - _ellipse(x, y, cx, cy, ax, ay)) / (2 * edge))
        inside = inside * _sigmoid((dome - y) / edge)
        sides[side] = dict(cx=cx, cy=cy, ax=ax, ay=ay, sign=sign, field=inside)
    heart = _sigmoid(
        (1.0 - _ellipse(x, y, u(0.08, 0.16), u(0.3, 0.36), u(0.27, 0.33), 0.22)) / edge
    )
    lung_field = np.maximum(sides["right"]["field"], sides["left"]["field"]) * (1.0 - heart)
    img = img - 0.24 * lung_field * body + 0.15 * heart * body
    img = img + 0.05 * _smooth_field(rng, size) * lung_field  # vessel-like texture
    img = img + 0.12 * np.exp(-((x / 0.075) ** 2)) * body  # spine / mediastinum
    img = img + 0.03 * np.exp(-((x / 0.06) ** 2)) * (np.sin(y * np.pi * 11) > 0) * body

    ribs = np.zeros_like(img)
    for sign in (-1.0, 1.0):
        lateral = np.clip(sign * x, 0.0, None)
        for k in range(9):
            centre = -0.74 + 0.16 * k + 0.45 * lateral**2 - 0.12 * lateral
            ribs += np.exp(-(((y - centre) / 0.022) ** 2)) * (sign * x > 0.08) * (sign * x < 0.85)
        clavicle = -0.74 + 0.12 * (lateral - 0.35) ** 2
        ribs += 1.5 * np.exp(-(((y - clavicle) / 0.03) ** 2)) * (lateral > 0.05) * (lateral < 0.65)
    img = img + 0.06 * np.clip(ribs, 0.0, 1.5) * body

    lungs = lung_field > 0.5
    opacity, lesion = _lesions(finding, x, y, sides, lungs, rng)
    img = img + opacity * lung_field
    gain, gamma = u(0.9, 1.1), u(0.85, 1.15)
    img = np.clip(img * gain, 0.0, 1.0) ** gamma
    return img, lungs, lesion & lungs


def _lesions(finding, x, y, sides, lungs, rng):
    u = rng.uniform
    opacity = np.zeros_like(x)
    lesion = np.zeros(x.shape, dtype=bool)
    if finding == "COVID-19":  # ground glass: bilateral, peripheral, basal
        for s in sides.values():
            for _ in range(int(rng.integers(1, 3))):
                cx = s["cx"] + s["sign"] * s["ax"] * u(0.35, 0.6)
                cy = s["cy"] + s["ay"] * u(0.1, 0.45)
                d = _ellipse(x, y, cx, cy, u(0.11, 0.16), u(0.14, 0.21))
                profile = np.clip(1.0 - d, 0.0, 1.0) ** 0.7
                opacity += u(0.25, 0.35) * profile * (0.8 + 0.2 * _smooth_field(rng, x.shape[0]))
                lesion |= profile > 0.3
    elif finding == "Bacterial Pneumonia":  # one dense lobar consolidation
        s = sides["right" if rng.random() < 0.5 else "left"]
        slope = u(-0.5, 0.5)
        if rng.random() < 0.6:  # lower lobe: below an oblique fissure
            fissure = s["cy"] + u(-0.1, 0.1) + slope * (x - s["cx"])
            depth = (y - fissure) / 0.03
        else:  # upper lobe: above a horizontal fissure
            fissure = s["cy"] - u(0.0, 0.15) + slope * (x - s["cx"])
            depth = (fissure - y) / 0.03
        region = _sigmoid(depth) * (s["field"] > 0.5)
        opacity += u(0.35, 0.45) * region
        lesion |= region > 0.5
    elif finding == "Viral Pneumonia":  # perihilar, bilateral, streaky
        for s in sides.values():
            cx, cy = s["cx"] - s["sign"] * s["ax"] * 0.45, s["cy"] + u(-0.05, 0.1)
            d = _ellipse(x, y, cx, cy, u(0.14, 0.18), u(0.22, 0.3))
            streaks = 0.6 + 0.4 * (np.sin((y - cy) * 40 + (x - cx) * 25) > 0)
            profile = np.clip(1.0 - d, 0.0, 1.0)
            opacity += u(0.26, 0.34) * profile * streaks
            lesion |= profile > 0.3
    return opacity, lesion & lungs


def _draw_shortcut(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    marks = np.zeros(image.shape, dtype=bool)
    if kind == "marker":  # bright burnt-in label in the top-left corner
        h, w = max(2, round(0.08 * size)), max(3, round(0.16 * size))
        top = round(0.04 * size) + int(rng.integers(0, max(1, size // 40) + 1))
        left = round(0.04 * size) + int(rng.integers(0, max(1, size // 40) + 1))
        marks[top : top + h, left : left + w] = True
        image[marks] = rng.uniform(0.92, 1.0)
    else:  # dark bands at the top and bottom border
        band = max(2, round(rng.uniform(0.06, 0.1) * size))
        marks[:band] = True
        marks[-band:] = True
        image[marks] = 0.0
    return marks


class Phantoms(ChestXrayDataset):
    """A torch Dataset of ``n`` phantoms: items ``(image [1, size, size], target [L], record)``.

    Classes are balanced (``classes`` cycled in a seeded random order). Records carry, besides
    the usual keys (``path`` and ``mask_path`` are None), ``lesion_mask``, ``lung_mask`` and
    ``shortcut_mask`` (numpy bool [size, size]) and ``shortcut`` (bool). Images are generated
    once, at construction, and returned as drawn (already in [0, 1], no percentile clipping).

    Args:
        shortcut: None, ``"marker"``, ``"border"`` (a :class:`Shortcut` of that kind on
            COVID-19 images) or a :class:`Shortcut`.
    """

    source = "phantom"

    def __init__(
        self,
        n: int,
        size: int = 128,
        *,
        seed: int = 0,
        classes: Sequence[str] = ("No Finding", "COVID-19", "Bacterial Pneumonia"),
        shortcut: str | Shortcut | None = None,
        noise: float = 0.02,
        label_space: LabelSpace | None = None,
        transform=None,
    ):
        super().__init__(size=size, percentiles=None, label_space=label_space, transform=transform)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"n must be a positive int, got {n!r}")
        if isinstance(shortcut, str):
            shortcut = Shortcut(kind=shortcut)
        self.shortcut = shortcut
        self.seed = seed
        rng = np.random.default_rng([seed, 0x5EED])
        order = rng.permutation(int(n)) % len(classes)
        images = []
        for i in range(int(n)):
            finding = classes[int(order[i])]
            planted = None
            if shortcut is not None:
                p = shortcut.p_label if finding == shortcut.label else shortcut.p_other
                planted = shortcut.kind if rng.random() < p else None
            ph = make_phantom(
                finding,
                size,
                seed=(seed, i),
                shortcut=planted,
                noise=noise,
                label_space=self.label_space,
            )
            images.append(torch.from_numpy(ph.image))
            self.records.append(_record(self.source, seed, i, ph))
        self._images = torch.stack(images)[:, None]

    def read(self, index: int) -> np.ndarray:
        return self._images[index, 0].numpy().copy()

    def image(self, index: int) -> torch.Tensor:
        return self._images[index].clone()

    def mask(self, index: int) -> np.ndarray:
        return self.records[index]["lung_mask"]

    @property
    def images(self) -> torch.Tensor:
        """All images, float32 [N, 1, size, size] (a view; do not modify)."""
        return self._images


def _record(source: str, seed: int, i: int, ph: Phantom) -> dict[str, Any]:
    pid = f"{source}:{seed}:{i}"
    return {
        "id": pid,
        "patient_id": pid,
        "patient_aliases": (pid,),
        "group": pid,
        "path": None,
        "finding": ph.finding,
        "labels": ph.labels,
        "source": source,
        "view": "PA",
        "mask_path": None,
        "lesion_mask": ph.lesion_mask,
        "lung_mask": ph.lung_mask,
        "shortcut_mask": ph.shortcut_mask,
        "shortcut": ph.shortcut,
    }

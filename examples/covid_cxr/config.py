"""Run profiles: every setting of the recipe in one typed, documented, frozen object.

Three built-in profiles (:data:`PROFILES`):

- ``smoke``: CI. ResNet18, 64 px, a balanced slice of 24 images, 2 epochs, one fold, two fast
  attribution methods on 4 test images. Seconds on a CPU.
- ``quick``: one CPU with 2 cores. ResNet18, 224 px, all ~1,242 real images, one 60/40 fold,
  8 epochs, the paper's six attribution methods (cheaper settings) on 8 test images.
- ``paper``: GPUs. The paper's five backbones, 512 px, 5 folds of 60/40, batch size 8 and the
  250 epochs of the paper's published training script, every test image explained.

Any field can be overridden from the command line (``--epochs 3``, ``--backbones resnet34``...).
Settings that change trained weights are part of :meth:`Profile.train_fingerprint`; a run
directory refuses to resume training under a different fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

from xraylens.errors import InputError

PAPER_BACKBONES = ("resnet18", "resnet34", "inception_v3", "inception_resnet_v2", "densenet161")
#: The six local methods of the paper, in its column order.
PAPER_METHODS = (
    "occlusion",
    "saliency",
    "input_x_gradient",
    "guided_backprop",
    "integrated_gradients",
    "deeplift",
)
#: The NAP groups of the paper (an image is in one: COVID-19, other pneumonia, or healthy).
NAP_GROUPS = ("COVID-19", "Pneumonia", "No Finding")
SCHEMES = ("paper", "kfold")
SCHEDULERS = ("constant", "cosine")
CRITERIA = ("val_loss", "val_macro_f1")
DTYPES = ("float32", "float64")
OUTPUTS = ("logits", "probs")

#: Smallest input side each backbone can be *trained* at. InceptionV3's auxiliary head pools
#: Mixed_6e with a 5x5 window after a stride-3 pool: below 299 px its feature map is too small.
MIN_TRAIN_SIZE = {"inception_v3": 299, "inception_resnet_v2": 75}


def _positive(_inst, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"profile field {attribute.name} must be a positive int, got {value!r}")


def _fraction(_inst, attribute, value) -> None:
    if not 0.0 < value < 1.0:
        raise InputError(f"profile field {attribute.name} must be in (0, 1), got {value!r}")


def _one_of(choices):
    def check(_inst, attribute, value) -> None:
        if value not in choices:
            raise InputError(
                f"profile field {attribute.name} must be one of {choices}, got {value!r}"
            )

    return check


def _optional_positive(inst, attribute, value) -> None:
    if value is not None:
        _positive(inst, attribute, value)


def _names(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return tuple(str(v).strip() for v in value)


@attrs.frozen(kw_only=True)
class Profile:
    """Every setting of one run of the recipe.

    Data and splits:
        limit: use a class-balanced slice of this many images (None: all).
        size: input side in pixels (images letterboxed to size x size, :func:`xl.data.preprocess`).
        percentiles: intensity clipping preset of the preprocessing (``"paper"`` = 1st/95th).
        scheme: ``"paper"`` (independent random 60/40 patient splits, one seed per fold) or
            ``"kfold"`` (a partition of the patients into ``folds`` parts).
        folds: number of splits; test_size: test share of ``"paper"`` splits; val_size: share
            of each fold's *training patients* moved to validation (model selection).
    Training:
        backbones: classifier names; epochs; batch_size: images per optimizer step, summed over
            ranks and accumulation steps; accumulate: micro-batches per step on each rank.
        lr, weight_decay: Adam's; aux_weight: InceptionV3 auxiliary loss weight (paper: 0.4).
        scheduler: ``"constant"`` (the paper) or ``"cosine"`` (annealed to 0 over the epochs).
        select: model selection on the validation split, ``"val_loss"`` (lowest mean BCE) or
            ``"val_macro_f1"`` (highest); ties keep the earlier epoch. Never the test split.
        amp: float16 autocast + gradient scaling on CUDA (ignored on CPU); sync_bn: SyncBatchNorm
            under DDP on CUDA (CPU DDP keeps per-rank BatchNorm statistics).
        dtype: ``"float32"`` or ``"float64"`` training (float64: tests, exact comparisons).
        pretrained: None (random init) or published weights (``"imagenet"``, needs internet).
    Evaluation, explanation, profiles:
        threshold: a label is predicted when its sigmoid probability exceeds threshold.
        methods: attributors; method_params: method -> keyword arguments (``"preset"`` allowed).
        explain_images: test images explained per fold (class-balanced sample; None: all).
        evaluate_images: masked test images scored per fold by ``evaluate-maps`` (a
            class-balanced sample like ``explain_images``; None: every one with a lung mask).
        explain_folds: folds whose test images are explained (and whose NAPs the report shows;
            ``profile`` covers every fold).
        explain_output: explain ``"probs"`` (sigmoid, the paper) or ``"logits"``.
        nap_groups: NAP groups (exclusive: COVID-19; other Pneumonia; No Finding).
    """

    name: str
    description: str = ""
    limit: int | None = attrs.field(default=None, validator=_optional_positive)
    size: int = attrs.field(default=512, validator=_positive)
    percentiles: str = "paper"
    scheme: str = attrs.field(default="paper", validator=_one_of(SCHEMES))
    folds: int = attrs.field(default=5, validator=_positive)
    test_size: float = attrs.field(default=0.4, validator=_fraction)
    val_size: float = attrs.field(default=0.2, validator=_fraction)
    seed: int = 1701
    backbones: tuple[str, ...] = attrs.field(default=PAPER_BACKBONES, converter=_names)
    epochs: int = attrs.field(default=250, validator=_positive)
    batch_size: int = attrs.field(default=8, validator=_positive)
    accumulate: int = attrs.field(default=1, validator=_positive)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    aux_weight: float = 0.4
    scheduler: str = attrs.field(default="constant", validator=_one_of(SCHEDULERS))
    select: str = attrs.field(default="val_loss", validator=_one_of(CRITERIA))
    amp: bool = True
    sync_bn: bool = True
    dtype: str = attrs.field(default="float32", validator=_one_of(DTYPES))
    pretrained: str | None = None
    keep_checkpoints: bool = True
    threshold: float = attrs.field(default=0.5, validator=_fraction)
    eval_batch: int = attrs.field(default=32, validator=_positive)
    methods: tuple[str, ...] = attrs.field(default=PAPER_METHODS, converter=_names)
    method_params: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    explain_images: int | None = attrs.field(default=None, validator=_optional_positive)
    evaluate_images: int | None = attrs.field(default=None, validator=_optional_positive)
    explain_folds: tuple[int, ...] = attrs.field(default=(0,), converter=tuple)
    explain_output: str = attrs.field(default="probs", validator=_one_of(OUTPUTS))
    nap_groups: tuple[str, ...] = attrs.field(default=NAP_GROUPS, converter=_names)

    def __attrs_post_init__(self) -> None:
        if self.scheme == "kfold" and self.folds < 2:
            raise InputError("a kfold scheme needs folds >= 2")
        if not self.backbones:
            raise InputError("profile needs at least one backbone")
        for fold in self.explain_folds:
            if not 0 <= fold < self.folds:
                raise InputError(f"explain_folds {self.explain_folds} outside 0..{self.folds - 1}")
        for backbone in self.backbones:
            need = MIN_TRAIN_SIZE.get(backbone, 32)
            if self.size < need:
                raise InputError(
                    f"{backbone} trains at {need} px or more (size is {self.size}); "
                    f"pass --size {need} or drop it with --backbones"
                )

    def replace(self, **changes: Any) -> Profile:
        """A copy with ``changes`` (validated like the constructor)."""
        unknown = set(changes) - {f.name for f in attrs.fields(Profile)}
        if unknown:
            raise InputError(f"unknown profile field(s) {sorted(unknown)}")
        return attrs.evolve(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=True, value_serializer=_jsonable)

    def _hash(self, fields: tuple[str, ...]) -> str:
        data = {k: v for k, v in self.to_dict().items() if k in fields}
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def data_fingerprint(self) -> str:
        """Hash of the settings that decide the images, labels and splits."""
        fields = ("limit", "size", "percentiles", "scheme", "folds", "test_size", "val_size")
        return self._hash((*fields, "seed"))

    def train_fingerprint(self) -> str:
        """Hash of the settings that decide the trained weights (backbone and fold aside)."""
        fields = (
            "epochs",
            "batch_size",
            "lr",
            "weight_decay",
            "aux_weight",
            "scheduler",
            "select",
            "dtype",
            "pretrained",
            "seed",
        )
        return self._hash(fields) + "-" + self.data_fingerprint()


def _jsonable(_inst, _field, value):
    return list(value) if isinstance(value, tuple) else value


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI: ResNet18, 64 px, 24 images, 2 epochs, one fold (seconds on a CPU)",
        limit=24,
        size=64,
        folds=1,
        backbones=("resnet18",),
        epochs=2,
        batch_size=4,
        eval_batch=16,
        methods=("saliency", "occlusion"),
        method_params={"occlusion": {"window": (16, 16), "stride": (16, 16)}},
        explain_images=4,
        evaluate_images=6,
    ),
    "quick": Profile(
        name="quick",
        description="one CPU, 2 cores: ResNet18, 224 px, all images, one fold, 8 epochs",
        size=224,
        folds=1,
        backbones=("resnet18",),
        epochs=8,
        batch_size=16,
        scheduler="cosine",
        eval_batch=32,
        method_params={
            "occlusion": {"window": (32, 32), "stride": (16, 16)},
            "integrated_gradients": {"n_steps": 16},
        },
        explain_images=8,
        evaluate_images=48,
    ),
    "paper": Profile(
        name="paper",
        description="GPUs: five backbones, 512 px, 5 folds of 60/40, batch 8, 250 epochs",
        size=512,
        folds=5,
        epochs=250,
        batch_size=8,
        method_params={m: {"preset": "paper"} for m in PAPER_METHODS},
        explain_images=None,
    ),
}


def get_profile(name: str, **overrides: Any) -> Profile:
    """The built-in profile ``name`` with ``overrides`` applied (None values are ignored)."""
    if name not in PROFILES:
        raise InputError(f"unknown profile {name!r}; profiles: {sorted(PROFILES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return PROFILES[name].replace(**changes) if changes else PROFILES[name]

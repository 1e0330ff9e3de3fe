"""Published (downloadable) weights from torchvision and timm. Resolving a name is offline;
downloading needs internet and fails with a :class:`~xraylens.errors.WeightsError` that says
where the file lives and how to use a local copy instead."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch

from xraylens.errors import WeightsError

IMAGENET_ALIASES = ("imagenet", "default", "pretrained")


@attrs.frozen
class PublishedWeights:
    """Resolved published weights: canonical name, download address, input statistics (RGB)."""

    name: str
    url: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fetch: Callable[[], dict[str, torch.Tensor]] = attrs.field(repr=False)

    def download(self) -> dict[str, torch.Tensor]:
        """The state_dict (downloaded and cached by torch.hub / huggingface_hub)."""
        try:
            return self.fetch()
        except Exception as exc:
            cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise WeightsError(
                f"cannot download published weights {self.name} from {self.url} ({cause}). "
                "Without internet, download the file on another machine and pass its path as "
                "weights=..."
            ) from exc


def torchvision_weights(arch: str, name: str, mean=None, std=None) -> PublishedWeights:
    """Resolve ``name`` (``imagenet``, ``DEFAULT``, ``IMAGENET1K_V1``, ``ResNet18_Weights.X``)."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    key = name.split(".", 1)[1] if name.startswith(enum.__name__ + ".") else name
    if key.lower() in IMAGENET_ALIASES:
        key = "DEFAULT"
    members = enum.__members__
    if key not in members:
        raise WeightsError(
            f"unknown weights {name!r} for {arch}: not a file, and not one of the published "
            f"names {['imagenet', *members]}"
        )
    weights = members[key]
    transforms = weights.transforms()
    return PublishedWeights(
        name=f"torchvision:{enum.__name__}.{weights.name}",
        url=weights.url,
        mean=tuple(mean or transforms.mean),
        std=tuple(std or transforms.std),
        fetch=lambda: weights.get_state_dict(progress=True, check_hash=True),
    )


def timm_weights(arch: str, name: str) -> PublishedWeights:
    """Resolve ``name`` (``imagenet``, a timm tag like ``tf_in1k``, or ``arch.tag``)."""
    import timm

    tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
    tag = name.split(".", 1)[1] if name.startswith(arch + ".") else name
    if tag.lower() in IMAGENET_ALIASES:
        tag = tags[0]
    if tag not in tags:
        raise WeightsError(
            f"unknown weights {name!r} for {arch}: not a file, and not one of the published "
            f"names {['imagenet', *tags]}"
        )
    full = f"{arch}.{tag}"
    cfg = timm.models.get_pretrained_cfg(full)
    url = cfg.url or (f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else full)

    def fetch() -> dict[str, torch.Tensor]:
        return timm.create_model(full, pretrained=True).state_dict()

    return PublishedWeights(
        name=f"timm:{full}", url=url, mean=tuple(cfg.mean), std=tuple(cfg.std), fetch=fetch
    )

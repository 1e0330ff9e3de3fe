"""A third-party xraylens plugin: the ``gradient_sign`` attributor (sign of the input gradient).

Installed, it is found through the entry point ``hello = "xraylens_hello"`` in the group
``xraylens``; no change to xraylens is needed.
"""

from __future__ import annotations

import attrs
import torch

import xraylens as xl
from xraylens.core.classifier import eval_mode


@attrs.define
class GradientSignConfig:
    """Parameters: ``scale`` multiplies the sign map."""

    scale: float = 1.0


class GradientSign(xl.Attributor):
    """``scale * sign(d output[label] / d x)``, one backward per (image, label) pair."""

    name = "gradient_sign"
    Config = GradientSignConfig

    def attribute_pairs(self, clf, x, plan, *, output):
        module = self.output_module(clf, output)
        inputs = x[plan.image].clone().requires_grad_(True)  # [P, C, H, W]
        with eval_mode(clf.module):
            scores = module(inputs).gather(1, plan.label.to(x.device)[:, None]).sum()
        (grad,) = torch.autograd.grad(scores, inputs)
        return self.config.scale * grad.sign(), None


@xl.hookimpl
def register_attributors(register):
    register("gradient_sign", GradientSign)

"""Classifier heads and per-step model knobs for retraining.

`Head` replaces a network's final linear layer when the run asks for dropout before it or for a
cosine classifier. The cosine head is the one of the additive margin softmax (Wang et al., "Additive
Margin Softmax for Face Verification", 2018), used with s=5, m=0 by the MicroNet challenge entry:
logits are `s * cos(feature, class weight)`; the margin itself is applied by the loss, which knows
the labels. The cosine is computed as `fc(normalise(x)) / |w_j|` so that the matrix product stays an
`nn.Linear` and thop counts its multiply-accumulates like any other classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError


class Head(nn.Module):
    """Dropout, then a linear or cosine classifier."""

    def __init__(
        self, in_features: int, num_classes: int, cosine: bool = False, scale: float = 5.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # A cosine classifier has no bias: it would shift logits away from s * cos.
        self.fc = nn.Linear(in_features, num_classes, bias=not cosine)
        self.cosine, self.scale = cosine, float(scale)

    @property
    def in_features(self) -> int:
        return self.fc.in_features

    @property
    def out_features(self) -> int:
        return self.fc.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        if not self.cosine:
            return self.fc(x)
        # x/|x| . w_j/|w_j| for every class j, with the product kept inside the nn.Linear
        norms = self.fc.weight.norm(dim=1).clamp_min(1e-12)
        return self.scale * self.fc(F.normalize(x, dim=1)) / norms


def classifier_name(model: nn.Module) -> str:
    """The dotted name of the final linear classifier (`classifier` in this project's nets, timm's own)."""
    if hasattr(model, "get_classifier"):  # timm models
        target = model.get_classifier()
        for name, module in model.named_modules():
            if module is target and name:
                return name
    if isinstance(getattr(model, "classifier", None), nn.Linear):
        return "classifier"
    raise UserError(f"{type(model).__name__} has no linear classifier to replace; use --head linear --dropout 0")


def replace_head(model: nn.Module, cosine: bool, scale: float, dropout: float) -> nn.Module:
    """Swap the final `nn.Linear` for a `Head` (dropout and/or cosine); the network is changed in place."""
    name = classifier_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.Linear):
        raise UserError(f"the classifier {name} is a {type(old).__name__}, not nn.Linear; use --head linear")
    setattr(parent, attr, Head(old.in_features, old.out_features, cosine, scale, dropout))
    return model


class DropPathSchedule:
    """Ramp stochastic depth linearly from 0 to its final value over training (DARTS's retraining trick).

    The final value is `final` when given, else the rate the network was built with (the space's
    `drop_path` option). This project's networks expose `drop_path_prob`; timm networks hold
    `DropPath` modules, whose built-in rates (`drop_path_rate`) are scaled by the same factor.
    """

    def __init__(self, model: nn.Module, final: float = 0.0) -> None:
        self.model = model
        self.timm_paths: list[tuple[nn.Module, float]] = []
        if hasattr(model, "drop_path_prob"):
            self.final = final or float(model.drop_path_prob)
        else:
            from timm.layers import DropPath

            self.timm_paths = [(m, float(m.drop_prob)) for m in model.modules() if isinstance(m, DropPath)]
            self.final = max((rate for _, rate in self.timm_paths), default=0.0)
        self.active = self.final > 0

    def set(self, fraction: float) -> None:
        """`fraction` of training done, in [0, 1]: a function of the step alone, so resume is exact."""
        if not self.active:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        if hasattr(self.model, "drop_path_prob"):
            self.model.drop_path_prob = self.final * fraction
        for module, rate in self.timm_paths:
            module.drop_prob = rate * fraction

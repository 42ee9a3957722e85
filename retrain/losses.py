"""The retraining loss: label loss (CE, label smoothing, soft targets, additive margin), auxiliary
head, and knowledge distillation (Hinton et al., "Distilling the Knowledge in a Neural Network").

    label  = CE(logits - s*m*target, target)       margin only with the cosine head (AM-softmax)
    total  = (1 - w) * label + w * T^2 * KL(softmax(t/T) || softmax(z/T))   with a teacher
           + aux_weight * CE(aux logits)                                     NASNet auxiliary head
           + CE(teacher logits)                                              online distillation

Targets are class indices, or probability rows when Mixup/CutMix made them soft (label smoothing
is then already folded in by timm's Mixup).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def soft_target_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against probability rows (Mixup/CutMix targets)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()


def margin_logits(logits: torch.Tensor, target: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """Subtract `scale * margin` from the target logit (`s * cos`): AM-softmax's `s * (cos - m)`.

    With soft targets the margin is spread in proportion to each class's target mass.
    """
    if margin == 0:
        return logits
    if target.dim() == 1:
        target = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return logits - scale * margin * target.to(logits.dtype)


def label_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    if target.dim() == 2:
        return soft_target_ce(logits, target)
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at temperature T, times T^2 so its gradient scale does not depend on T."""
    t = temperature
    log_p = F.log_softmax(student.float() / t, dim=1)
    q = F.softmax(teacher.detach().float() / t, dim=1)  # no gradient flows into the teacher through KD
    return F.kl_div(log_p, q, reduction="batchmean") * t * t


@dataclass
class RetrainLoss:
    """Combines the terms above; `__call__` returns the total and its parts for logging."""

    label_smoothing: float = 0.0
    am_scale: float = 0.0  # 0: linear head, no margin
    am_margin: float = 0.0
    aux_weight: float = 0.4
    kd_weight: float = 0.0  # 0: no distillation
    kd_temperature: float = 4.0

    def __call__(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        aux: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None,
        teacher_trains: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = margin_logits(logits, target, self.am_scale, self.am_margin) if self.am_scale else logits
        label = label_loss(z, target, self.label_smoothing)
        parts = {"ce": label.detach()}
        total = label
        if teacher is not None and self.kd_weight > 0:
            kd = kd_loss(logits, teacher, self.kd_temperature)
            parts["kd"] = kd.detach()
            total = (1 - self.kd_weight) * label + self.kd_weight * kd
        if aux is not None and self.aux_weight > 0:
            aux_loss = label_loss(aux, target, self.label_smoothing)
            parts["aux"] = aux_loss.detach()
            total = total + self.aux_weight * aux_loss
        if teacher is not None and teacher_trains:
            teacher_loss = label_loss(teacher, target, self.label_smoothing)
            parts["teacher_ce"] = teacher_loss.detach()
            total = total + teacher_loss
        return total, parts


def split_output(out: torch.Tensor | tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, auxiliary logits or None): NASNet networks return both in training mode."""
    if isinstance(out, (tuple, list)):
        return out[0], out[1] if len(out) > 1 else None
    return out, None

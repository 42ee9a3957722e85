"""Few-shot supernets (Zhao et al., "Few-shot Neural Architecture Search", ICML 2021), for every space.

`--few-shot DECISION[:K]` splits the supernet on one decision of the space (an edge's op, a stage's
depth or width, the resolution: `space.decisions()` names them). The decision's choices are cut into
K contiguous groups (K = all of them by default), one sub-supernet per group. Until the split step
(`--few-shot-warmup` of the run's steps) every architecture trains the first copy, the parent; at the
split the parent's weights and optimizer state are copied into the others, and from then on each
step's architectures train the sub-supernet their choice falls in. The total number of steps is the
one-shot run's, so the two compare at equal training.

`FewShotSupernet(x, arch)` routes `arch` to its sub-supernet, so everything that runs a supernet as
`net(x, arch)` (training, BN recalibration, the validation panel, the search's supernet evaluator)
routes the same way. Its state (all copies, and whether the split happened) is one state dict, so
checkpoints and exact resume work as for one supernet. The checkpoint records the decision and K as
data, read back against the space's own decision names.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import nn

from core.errors import CheckpointError, UserError
from supernet.spaces.base import Space


def parse_few_shot(text: str, space: Space) -> tuple[str, int, list[Any]]:
    """`DECISION[:K]` -> (decision, K, its choices); a one-line error naming the space's decisions."""
    name, _, k_text = str(text).partition(":")
    decisions = space.decisions()
    if name not in decisions:
        listed = ", ".join(list(decisions)[:12]) + (" ..." if len(decisions) > 12 else "")
        raise UserError(
            f"--few-shot {text!r}: space {space.name} has no decision {name!r}; choose one of: {listed or 'none'}"
        )
    choices = list(decisions[name][0])
    try:
        k = int(k_text) if k_text else len(choices)
    except ValueError:
        raise UserError(f"--few-shot {text!r}: K after ':' must be an integer, e.g. {name}:2") from None
    if not 2 <= k <= len(choices):
        raise UserError(f"--few-shot {text!r}: K must be between 2 and the {len(choices)} choices of {name}")
    return name, k, choices


class FewShotSupernet(nn.Module):
    """K copies of a space's supernet; `forward(x, arch)` runs the copy that `arch`'s choice falls in."""

    def __init__(self, space: Space, num_classes: int, decision: str, k: int) -> None:
        super().__init__()
        self.decision, self.k = decision, k
        choices, self._value = _decision(space, decision)
        self.choices = list(choices)
        self.group = {c: i * k // len(self.choices) for i, c in enumerate(self.choices)}  # contiguous groups
        self.subs = nn.ModuleList(space.supernet(num_classes) for _ in range(k))
        self.register_buffer("is_split", torch.zeros((), dtype=torch.bool))

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records: plain data, read back by `build_supernet`."""
        groups = [[str(c) for c in self.choices if self.group[c] == g] for g in range(self.k)]
        return {"decision": self.decision, "k": self.k, "groups": groups}

    def route(self, arch: Hashable) -> int:
        """Index of the sub-supernet that trains and scores `arch` (0, the parent, before the split)."""
        if not bool(self.is_split):
            return 0
        return self.group[self._value(arch)]

    def sub(self, arch: Hashable) -> nn.Module:
        return self.subs[self.route(arch)]

    def forward(self, x: torch.Tensor, arch: Hashable) -> torch.Tensor:
        return self.sub(arch)(x, arch)

    @torch.no_grad()
    def split(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Initialise every sub-supernet from the parent: its weights, buffers and optimizer state."""
        parent = self.subs[0]
        for sub in self.subs[1:]:
            sub.load_state_dict(parent.state_dict())
            if optimizer is None:
                continue
            for p, q in zip(parent.parameters(), sub.parameters(), strict=True):
                if p in optimizer.state:
                    optimizer.state[q] = {
                        key: v.clone() if isinstance(v, torch.Tensor) else v for key, v in optimizer.state[p].items()
                    }
        self.is_split.fill_(True)


def _decision(space: Space, decision: str) -> tuple[list[Any], Callable[[Hashable], Any]]:
    decisions = space.decisions()
    if decision not in decisions:
        raise UserError(f"space {space.name} has no decision {decision!r} to split on")
    choices, value = decisions[decision]
    return list(choices), value


def build_supernet(space: Space, num_classes: int, few_shot: dict[str, Any] | None = None) -> nn.Module:
    """The supernet a checkpoint holds: the space's own, or a few-shot one as its `few_shot` record says."""
    if not few_shot:
        return space.supernet(num_classes)
    if not isinstance(few_shot, dict) or not isinstance(few_shot.get("decision"), str):
        raise CheckpointError("the checkpoint's few_shot record is malformed; pass a supernet last.pt of this tool")
    decision, k = few_shot["decision"], few_shot.get("k")
    choices = space.decisions().get(decision, ((),))[0]
    if type(k) is not int or not 2 <= k <= len(choices):
        raise CheckpointError(
            f"the checkpoint is a few-shot supernet split on {decision!r} into {k!r}, which space {space.name} "
            "does not have; pass the matching --space and --space-opts"
        )
    return FewShotSupernet(space, num_classes, decision, k)

"""The search-space contract shared by supernet training, search and retraining.

A space is declared once, and every stage reads that one declaration:
it samples, validates, encodes and serialises architectures, and it builds the networks that run
them (the weight-sharing supernet, a standalone network, or a standalone network carrying the
supernet's weights). Searchers only use the architecture half; trainers use the model half.

Architectures are immutable, hashable Python values (tuples or frozen dataclasses), so they can be
used as dictionary keys and compared with `==`. `Arch` names that contract for the whole toolkit
(searchers and evaluators take it from here); each space defines its own concrete type
(`CellArch`, `NB201Arch`, `MBConvArch`, `ChannelArch`). A space also draws its architectures for the
report (`draw`), so no caller needs to guess a space from an architecture's shape.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from core.errors import ArchError, UserError
from supernet.spaces import drawing

Arch = Hashable  # an architecture of some space: immutable and hashable; each space has its own type


@dataclass(frozen=True)
class Cost:
    """Cost of one architecture: multiply-accumulates (MFLOPs in the usual NAS sense) and params."""

    mflops: float  # millions of multiply-accumulates for one image at the space's resolution
    params: float  # millions of parameters, classifier included


class Space(abc.ABC):
    """A search space: architectures on one side, the networks that run them on the other."""

    name: str = "space"
    # whether the supernet's validation panel scores largest() and smallest() besides random subnets
    # (the sandwich rule always puts them there: it trains them)
    panel_extremes: bool = True

    # ---- architectures -------------------------------------------------------------------
    @abc.abstractmethod
    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture (uniform over the choices of each decision)."""

    @abc.abstractmethod
    def validate(self, arch: Arch) -> None:
        """Raise `ArchError` naming the offending part when `arch` is not in this space."""

    @abc.abstractmethod
    def encode(self, arch: Arch) -> np.ndarray:
        """A fixed-length float vector (length `encoding_dim`): LaNAS's linear view of the arch."""

    @abc.abstractmethod
    def decode(self, vec: np.ndarray) -> Arch:
        """Inverse of `encode` (exact for vectors that `encode` produced)."""

    @property
    @abc.abstractmethod
    def encoding_dim(self) -> int:
        """Length of the vectors that `encode` returns."""

    @abc.abstractmethod
    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A different architecture that changes one decision of `arch`."""

    @abc.abstractmethod
    def to_json(self, arch: Arch) -> dict[str, Any]:
        """A JSON-serialisable dict (with a "space" key naming this space)."""

    @abc.abstractmethod
    def from_json(self, data: dict[str, Any]) -> Arch:
        """Parse and validate a dict written by `to_json`; `ArchError` when malformed."""

    @abc.abstractmethod
    def to_str(self, arch: Arch) -> str:
        """A compact one-line form for logs and tables."""

    @abc.abstractmethod
    def from_str(self, text: str) -> Arch:
        """Parse the form written by `to_str`; `ArchError` when malformed."""

    def canonical(self, arch: Arch) -> Arch:
        """One representative per distinct network (isomorphic cells, unused nodes collapse)."""
        return arch

    @abc.abstractmethod
    def size(self) -> int:
        """Number of architectures (encodings, not canonical classes)."""

    def largest(self) -> Arch | None:
        """The most expensive architecture, where the space has one (used by sandwich sampling)."""
        return None

    def smallest(self) -> Arch | None:
        """The cheapest architecture, where the space has one."""
        return None

    def decisions(self) -> dict[str, tuple[list[Any], Callable[[Any], Any]]]:
        """The decisions a few-shot supernet may split on (`--few-shot NAME[:K]`): per name, its choices
        and a function giving an arch's choice there. None by default."""
        return {}

    def options(self) -> dict[str, Any]:
        """The constructor options, so `make_space(name, **options)` rebuilds this space."""
        return {}

    def draw(self, arch: Arch, path: str | Path) -> None:
        """A PNG picture of `arch` at `path`, for the report.

        By default a strip of blocks, each box labelled with the per-block fields of `to_json(arch)`;
        cell spaces override it to draw their cells.
        """
        fig, ax = drawing.figure((12, 2.8))
        drawing.blocks(ax, self.to_json(arch), self.to_str(arch))
        drawing.save(fig, path)

    # ---- models ---------------------------------------------------------------------------
    @abc.abstractmethod
    def supernet(self, num_classes: int) -> nn.Module:
        """The weight-sharing network. `supernet(x, arch)` runs only the chosen ops and slices."""

    @abc.abstractmethod
    def build(self, arch: Arch, num_classes: int) -> nn.Module:
        """An independent, freshly initialised network for `arch` (for retraining)."""

    @abc.abstractmethod
    def extract(self, supernet: nn.Module, arch: Arch) -> nn.Module:
        """`build(arch)` carrying the supernet's weights; same output as `supernet(x, arch)`."""

    @abc.abstractmethod
    def cost(self, arch: Arch, num_classes: int = 10) -> Cost:
        """Fast analytic MFLOPs (MACs) and params, matching thop on `build(arch)`."""

    @property
    def input_size(self) -> int:
        """Default input resolution (pixels, square)."""
        return 32

    # ---- latency units (see supernet/latency.py) -------------------------------------------
    # A unit is a part of the network whose latency depends only on its own choice: a block choice
    # at a position, at the input size and width it sees there. A key is a tuple of plain values.
    def latency_units(self, arch: Arch, num_classes: int = 10) -> list[tuple]:
        """The keys of the units `arch` runs; its latency is their sum plus a fixed overhead."""
        raise self._no_latency_units()

    def latency_unit_choices(self, num_classes: int = 10) -> list[tuple]:
        """Every unit any architecture of the space can run (what a latency table measures)."""
        raise self._no_latency_units()

    def latency_unit_module(self, key: tuple) -> tuple[nn.Module, tuple[int, ...]]:
        """A module computing unit `key`, and its input shape without the batch axis."""
        raise self._no_latency_units()

    def _no_latency_units(self) -> UserError:
        return UserError(
            f"space {self.name!r} declares no latency units; the built-in spaces do "
            "(mbconv, nasnet, nb201, resnet20), a user space needs its own latency_unit_* methods"
        )


_REGISTRY: dict[str, Callable[..., Space]] = {}


def register_space(name: str) -> Callable[[Callable[..., Space]], Callable[..., Space]]:
    """Class decorator: make a space constructible by name (`make_space(name, **options)`)."""

    def deco(factory: Callable[..., Space]) -> Callable[..., Space]:
        _REGISTRY[name] = factory
        return factory

    return deco


def space_names() -> list[str]:
    """Names of the registered built-in spaces."""
    _import_builtin()
    return sorted(_REGISTRY)


def make_space(name: str, /, **options: Any) -> Space:
    """Build a registered space. For names read from files (checkpoints, topk.json, arch JSON): never imports."""
    return _make_space(name, options, trusted=False)


def make_user_space(name: str, /, **options: Any) -> Space:
    """Build a space the user named on the command line or in their config: registered, or `module:Class`
    (module on PYTHONPATH or a .py path), which is imported."""
    return _make_space(name, options, trusted=True)


def _make_space(name: str, options: dict[str, Any], trusted: bool) -> Space:
    from core.imports import is_import_path, load_object, untrusted_import

    _import_builtin()
    if not isinstance(name, str):
        raise UserError(f"space name {name!r} is not a string; choose one of {', '.join(sorted(_REGISTRY))}")
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif is_import_path(name) and trusted:
        factory = load_object(name, what="space")
    elif is_import_path(name):
        raise untrusted_import(name, "space", sorted(_REGISTRY), "--space")
    else:
        raise UserError(f"unknown space {name!r}: choose one of {', '.join(sorted(_REGISTRY))} or give module:Class")
    try:
        space = factory(**options)
    except TypeError as exc:  # unknown or missing keyword options
        raise UserError(f"bad options for space {name!r}: {exc}") from None
    return space


def check_choice(value: Any, choices: Any, where: str) -> None:
    """Raise `ArchError` when `value` is not one of `choices`; `where` names the decision."""
    if value not in choices:
        raise ArchError(f"{where}: {value!r} is not one of {list(choices)}")


def _import_builtin() -> None:
    # Import for the side effect of registration; local import avoids import cycles.
    import importlib

    for mod in ("nb201", "nasnet", "mbconv", "resnet20"):
        try:
            importlib.import_module(f"supernet.spaces.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"supernet.spaces.{mod}":
                raise

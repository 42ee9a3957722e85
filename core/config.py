"""Configuration: one dataclass per stage, loaded from YAML, presets and command-line overrides.

In the spirit of pycls's config and nanoGPT's dataclass: the config *is* the experiment. Every
field carries its help text in `metadata["help"]` (which becomes `--help`), values are validated
on construction, and the resolved config is saved into the run directory and every checkpoint.

Precedence, lowest first: dataclass defaults < preset (`configs/<name>.yaml`) < `--config FILE`
< command-line flags. A YAML file may hold the keys of one stage at its top level, or (for the
pipeline) one section per stage; unknown keys are an error, never silently ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from core.errors import UserError
from core.safejson import MAX_DEPTH, brief, check_plain, first_line

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
T = TypeVar("T", bound="CommonConfig")
MAX_IMAGE_SIZE = 4096  # pixels a side; a larger size is decoded into memory for every image
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and torch's generators take seeds in 0 .. 2**32 - 1


def opt(
    default: Any,
    help: str,  # noqa: A002
    choices: tuple | None = None,
    aliases: dict[str, str] | None = None,
    **kw: Any,
) -> Any:
    """A dataclass field with its `--help` text (and optional allowed values, and old spellings of them:
    `aliases` maps the text of an old value, e.g. "True" for a former boolean, to its choice)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if aliases:
        meta["aliases"] = aliases
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class CommonConfig:
    """Options every stage shares; they keep one name everywhere."""

    run_dir: str = opt("", "run directory (default: checkpoints/<run_name>)")
    run_name: str = opt("", "run name under checkpoints/ (default: the command and the preset)")
    seed: int = opt(0, "one seed for python, numpy and torch; fixes the whole run")
    device: str = opt("auto", "where to compute", choices=("auto", "cpu", "cuda"))
    dataset: str = opt(
        "cifar10-mini", "dataset name", choices=("cifar10-mini", "cifar10", "cifar100", "imagefolder", "synthetic")
    )
    data_dir: str = opt("", "dataset root (or the CIFAR-10 JPEG zip for imagefolder); empty for cifar10-mini")
    download: bool = opt(False, "allow torchvision to download cifar10/cifar100 into --data-dir")
    num_classes: int = opt(0, "expected number of classes (0: take it from the dataset); checked against the data")
    image_size: int = opt(0, "input resolution (0: the dataset's own size)")
    search_size: int = opt(1000, "training images held out as the search split (never the test split)")
    split_seed: int = opt(0, "seed of the search split carved from the training set (same for all stages)")
    threads: int = opt(0, "torch compute threads per process (0: free cores / local ranks)")
    loader: str = opt(
        "auto",
        "input path: memory (decoded once into tensors), workers (DataLoader worker processes, timm transforms), "
        "auto (workers for image folders of images over 64 px, else memory)",
        choices=("auto", "memory", "workers"),
    )
    workers: int = opt(-1, "DataLoader worker processes per rank on the workers path (-1: free cores / local ranks)")
    crop_pct: float = opt(0.875, "workers path, evaluation: resize to size / crop_pct, then centre-crop size")
    crop_scale: list[float] = opt([0.08, 1.0], "workers path, training: RandomResizedCrop area range (timm default)")
    crop_ratio: list[float] = opt([0.75, 1.3333333], "workers path, training: RandomResizedCrop aspect ratio range")
    interpolation: str = opt(
        "bilinear", "workers path: resampling of crops and resizes", choices=("bilinear", "bicubic", "random")
    )
    jpeg_draft: str = opt(
        "eval",
        "workers path: decode a JPEG at 1/2-1/8 scale (libjpeg DCT scaling) when its resize (eval) or also its "
        "random crop (all) is that small; off: always in full",
        choices=("eval", "all", "off"),
        # it was a boolean: on meant the training crops too
        aliases={"True": "all", "true": "all", "False": "off", "false": "off"},
    )
    strict_images: bool = opt(False, "stop at an undecodable image instead of skipping it (workers path)")
    loader_timeout: float = opt(300.0, "seconds to wait for a data-loader worker's batch before stopping with an error")
    resume: str = opt("", "'auto' to continue from the latest good checkpoint in the run directory, or a path")
    quiet: bool = opt(False, "no progress bars, warnings only")

    def validate(self) -> None:
        """Raise `UserError` naming the first bad value. Subclasses extend it."""
        check_values(self)
        self.jpeg_draft = resolve_alias(self, "jpeg_draft")
        if self.jpeg_draft not in ("eval", "all", "off"):
            raise UserError(f"--jpeg-draft {brief(self.jpeg_draft, 40)}: use eval, all or off")
        if self.image_size > MAX_IMAGE_SIZE:
            raise UserError(f"--image-size {self.image_size} is too large; use at most {MAX_IMAGE_SIZE} (0: native)")
        if self.search_size < 0:
            raise UserError(f"--search-size must be >= 0, got {self.search_size}")
        if self.num_classes < 0 or self.image_size < 0 or self.threads < 0:
            raise UserError("--num-classes, --image-size and --threads must be >= 0")
        # the loader's timeout reaches a wait that refuses more than about 2.1e6 s (2**31 ms)
        if self.workers < -1 or not 0 < self.loader_timeout <= 1e6 or not 0 < self.crop_pct <= 1:
            raise UserError("--workers must be >= -1, --loader-timeout in (0, 1e6] seconds and --crop-pct in (0, 1]")
        for name in ("crop_scale", "crop_ratio"):
            pair = getattr(self, name)
            if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
                raise UserError(f"--{name.replace('_', '-')} takes LOW,HIGH with 0 < LOW <= HIGH")
        if self.resume not in ("", "auto") and not os.path.exists(self.resume):  # False, not OSError, on odd names
            raise UserError(f"--resume {self.resume}: no such file; use --resume auto or a checkpoint path")

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_SPACE = "nasnet"
AMP_MODES = ("off", "fp16", "bf16")


@dataclass
class SpaceOptions:
    """The search space and its constructor options (one meaning in every stage)."""

    space: str = opt(
        "",
        f"search space: nasnet, mbconv, nb201, resnet20, or module:Class; empty: {DEFAULT_SPACE} "
        "(retrain: the space the arch names)",
    )
    space_opts: dict = opt({}, "space constructor options (macro network), KEY=VALUE, e.g. channels=16 blocks=2,2")
    # retrain reads the space from the arch it trains; the other stages fall back to DEFAULT_SPACE
    SPACE_FROM_ARCH: typing.ClassVar[bool] = False

    def validate(self) -> None:
        if not self.space and not self.SPACE_FROM_ARCH:
            self.space = DEFAULT_SPACE
        super().validate()  # type: ignore[misc]


@dataclass
class AmpOptions:
    amp: str = opt("off", "mixed precision: fp16 (CUDA, with a grad scaler) or bf16 (CPU and CUDA)", choices=AMP_MODES)


@dataclass
class OptimOptions:
    """Optimiser and learning-rate schedule (`core.optim.make_optimizer` reads these)."""

    epochs: int = opt(10, "training epochs")
    batch_size: int = opt(64, "global batch size (split evenly over ranks)")
    optimizer: str = opt("sgd", "sgd (momentum), nesterov, or adamw", choices=("sgd", "nesterov", "adamw"))
    lr: float = opt(0.05, "peak learning rate (for the global batch)")
    min_lr: float = opt(0.0, "final learning rate of the cosine schedule")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(3e-4, "weight decay (not applied to BatchNorm parameters and biases)")
    warmup_epochs: float = opt(0.0, "linear warm-up length in epochs (counted in steps)")
    grad_clip: float = opt(5.0, "clip the gradient norm to this value (0: off)")


@dataclass
class TrainOptions(OptimOptions, AmpOptions):
    """What every training stage (`core.trainer.Trainer`) shares besides its recipe: stop, checkpoints, data."""

    max_steps: int = opt(0, "stop after this many optimizer steps with a checkpoint, as if preempted (0: off)")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy (retrain: folded into Mixup targets)")
    channels_last: bool = opt(True, "channels-last memory format on CUDA (ignored on the CPU)")
    eval_every: int = opt(1, "evaluate every N epochs (and at the end)")
    checkpoint_minutes: float = opt(10.0, "also checkpoint every N minutes inside an epoch (0: epochs only)")
    nan_policy: str = opt(
        "stop", "on a NaN/inf loss: stop (last good checkpoint kept) or skip the step", choices=("stop", "skip")
    )
    train_images: int = opt(0, "train on N training images only, a fixed subset (0: all; for smoke runs)")

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]
        if self.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.lr <= 0:
            raise UserError("--batch-size must be >= 1 and --lr > 0")
        if self.max_steps < 0 or self.train_images < 0 or self.grad_clip < 0 or self.checkpoint_minutes < 0:
            raise UserError("--max-steps, --train-images, --grad-clip and --checkpoint-minutes must be >= 0")
        if not 0 <= self.label_smoothing < 1 or self.eval_every < 1:
            raise UserError("--label-smoothing must be in [0, 1) and --eval-every >= 1")


def check_values(cfg: Any) -> None:
    """Checks every option of every stage shares: numbers finite, seeds in 0 .. 2**32 - 1.

    A comparison with NaN is always false, so `lr <= 0` lets `--lr nan` through; this runs first.
    """
    for f in dataclasses.fields(cfg):
        value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} {value}: give a finite number")
        if (f.name == "seed" or f.name.endswith("_seed")) and isinstance(value, int):
            if not 0 <= value <= MAX_SEED:
                raise UserError(f"{flag} {brief(value, 40)} is out of range; use a seed from 0 to {MAX_SEED}")
        if isinstance(value, (dict, list)):
            check_plain(value, flag, "give plain numbers, strings and short lists")


def number(value: Any, what: str, kind: type = int, low: float | None = None, high: float | None = None) -> Any:
    """`value` as a finite int or float within [low, high], or `UserError` naming `what` (an option)."""
    try:
        if isinstance(value, bool) or value is None:
            raise TypeError(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        out = kind(value)
        if kind is float and not math.isfinite(out):
            raise ValueError(value)
    except (TypeError, ValueError, OverflowError):
        name = "an integer" if kind is int else "a finite number"
        raise UserError(f"{what}={brief(value, 40)} is not {name}") from None
    if (low is not None and out < low) or (high is not None and out > high):
        bounds = f"from {low:g} to {high:g}" if low is not None and high is not None else ""
        bounds = bounds or (f">= {low:g}" if low is not None else f"<= {high:g}")
        raise UserError(f"{what}={out} is out of range; use a value {bounds}")
    return out


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the field's declared type."""
    typ = _field_type(cls, name)
    origin = typing.get_origin(typ) or typ
    try:
        if origin is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if origin in (int, float, str):
            if origin is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if origin is not str and isinstance(value, (list, dict)):
                raise TypeError(value)
            out = origin(value)
            if origin is float and not math.isfinite(out):
                raise UserError(f"option {name}: {value!r} is not a finite number; give a finite value")
            return out
        if origin is list:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v != ""]
            (item_type,) = typing.get_args(typ) or (str,)
            if not isinstance(value, (list, tuple)):
                raise TypeError(value)
            return [item_type(v) for v in value]
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"option {name}: cannot read {brief(value)} as {getattr(typ, '__name__', typ)}") from None
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; `UserError` when absent or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid YAML: {first_line(exc)}") from None
    except RecursionError:
        raise UserError(f"config file {path} nests too deeply; keep to option: value and short lists") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    check_plain(data, f"config file {path}", f"keep to option: value, at most {MAX_DEPTH} levels")
    _check_keys(data, path)
    return data


def _check_keys(data: Any, path: Path) -> None:
    """Every mapping key is a string (`1: x` or `null: x` would be taken for an option name)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise UserError(f"config file {path}: key {brief(key, 40)} is not a name; option names are text")
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def preset_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(names)}")
    return path


def section(data: dict[str, Any], stage: str, stages: tuple[str, ...]) -> dict[str, Any]:
    """The keys for `stage`: top-level keys that are not stage sections, updated by its section.

    A mapping given in both (`space_opts`) is merged key by key, the section's keys winning, so a
    section can widen the network without restating the space.
    """
    out = {k: v for k, v in data.items() if k not in stages}
    sub = data.get(stage) or {}
    if not isinstance(sub, dict):
        raise UserError(f"config section {stage!r} must be a mapping")
    for key, value in sub.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_alias(cfg: Any, name: str, value: Any = None) -> Any:
    """Option `name`'s value (or `value`) with an old spelling replaced by its choice (see `opt`)."""
    value = getattr(cfg, name) if value is None else value
    aliases = {f.name: f.metadata.get("aliases") for f in dataclasses.fields(cfg)}.get(name) or {}
    return aliases.get(str(value), value)


def build_config(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Instantiate `cls` from a mapping, rejecting unknown keys with a one-line error."""
    names = {f.name for f in dataclasses.fields(cls)}
    clean: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise UserError(f"unknown option {key!r} in {source}; see --help for the valid options")
        clean[name] = resolve_alias(cls, name, _coerce(cls, name, value))
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices and f.name in clean and clean[f.name] not in choices:
            raise UserError(f"option {f.name}: {clean[f.name]!r} is not one of {', '.join(map(str, choices))}")
    return cls(**clean)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--flag` per dataclass field, documented with the field's help and default."""
    parser.add_argument("--config", default=None, help="YAML file of options (sets defaults below)")
    parser.add_argument("--preset", default=None, help="named preset from configs/ (for example: demo)")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        typ = _field_type(cls, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        # argparse %-formats help text (for %(default)s): a literal % must be doubled
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif (typing.get_origin(typ) or typ) is dict:
            parser.add_argument(
                flag, action="append", default=None, metavar="KEY=VALUE", help=help_text + "; repeatable"
            )
        else:
            parser.add_argument(flag, default=None, choices=f.metadata.get("choices"), help=help_text)


def resolve(cls: type[T], args: argparse.Namespace, stage: str, stages: tuple[str, ...] = ()) -> T:
    """Defaults < preset < --config < flags, validated; `UserError` on any bad key or value."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for path in (preset_path(args.preset) if getattr(args, "preset", None) else None, getattr(args, "config", None)):
        if path:
            data = load_yaml(path)
            values.update(section(data, stage, stages))
            # a config with a field per stage (the pipeline) takes the stage sections whole
            values.update({s: data[s] for s in stages if s in names and s in data})
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None)
        if given is None:
            continue
        if isinstance(given, list) and (typing.get_origin(_field_type(cls, f.name)) or dict) is dict:
            merged = dict(values.get(f.name) or {})
            merged.update(parse_key_values(given, "--" + f.name.replace("_", "-")))
            given = merged
        values[f.name] = given
    return build_config(cls, values, source="the configuration")


def parse_key_values(items: list[str], flag: str) -> dict[str, Any]:
    """`["k=v", ...]` to a dict; values are read as YAML scalars or lists (`2,2` becomes [2, 2])."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(f"[{raw}]") if "," in raw and not raw.startswith("[") else yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        except RecursionError:
            raise UserError(f"{flag} {key}=...: the value nests too deeply; give a number, text or a list") from None
        check_plain(value, f"{flag} {key}", "give a number, text or a short list")
        out[key.replace("-", "_")] = value
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved configuration as YAML (the run's record of what it did)."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

"""What to retrain: resolve an architecture (search top-k file, inline JSON, LaNet list, timm name).

Everything needed to rebuild the network is collected into one plain `spec` dict (space name and
options plus arch JSON, or a timm name and kwargs, plus the head). Checkpoints store the spec, so a
checkpoint describes itself: a teacher, an export or a resume rebuilds the network from it alone.

A spec read from a file is data: its space must be a registered name unless the user named that
same import path (`--space module:Class`) on the command line or in their config (`trusted`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.checkpoint import load_checkpoint
from core.errors import ArchError, CheckpointError, UserError
from core.imports import is_import_path, untrusted_import
from core.safejson import parse_json
from supernet.spaces.base import Space, make_space, make_user_space, space_names
from supernet.spaces.cell_text import read_genotype, read_lanet

log = logging.getLogger(__name__)
CHECKPOINT_KINDS = ("retrain", "retrain-ema")


def user_spaces(cfg: Any) -> frozenset[str]:
    """The space names the user gave in `cfg` (command line or config): import paths among them are trusted."""
    return frozenset(n for n in [getattr(cfg, "space", "")] if n)


def _space(name: str, trusted: Collection[str], where: str, /, **opts: Any) -> Space:
    """The space `name` with `opts`; an import path only when the user gave that very name (`trusted`)."""
    if name in trusted:
        return make_user_space(name, **opts)
    if isinstance(name, str) and is_import_path(name):
        raise UserError(f"{where}: {untrusted_import(name, 'space', space_names(), '--space')}")
    return make_space(name, **opts)


def resolve_spec(cfg: Any) -> tuple[dict[str, Any], str]:
    """The model spec and the output folder name (`arch_id`) for a RetrainConfig."""
    head = {"kind": cfg.head, "scale": cfg.am_scale, "dropout": cfg.dropout}
    if cfg.model:
        spec = timm_spec(cfg.model, dict(cfg.space_opts), cfg.dropout, cfg.drop_path)
        head["dropout"] = 0.0  # timm applies it itself (drop_rate), before its classifier
        arch_id = "timm-" + spec["name"]
    else:
        prefix = ""
        if cfg.lanet or cfg.genotype:
            where, text = ("--lanet", cfg.lanet) if cfg.lanet else ("--genotype", cfg.genotype)
            space_name, opts, arch_json = _from_cells(
                where, text, cfg.space or "nasnet", dict(cfg.space_opts), user_spaces(cfg)
            )
        elif cfg.arch:
            space_name, opts, arch_json = _from_json_text(cfg.arch, cfg.space, dict(cfg.space_opts))
            where = "--arch"
        elif cfg.arch_file:
            space_name, opts, arch_json = _from_arch_file(cfg.arch_file, cfg.rank, cfg.space, dict(cfg.space_opts))
            prefix, where = f"r{cfg.rank}-", f"--arch-file {cfg.arch_file}"
        else:
            raise UserError(
                "nothing to retrain: give --arch-file topk.json, --arch JSON, --lanet LIST, --genotype TEXT_OR_FILE "
                "or --model timm:NAME"
            )
        space = _space(space_name, user_spaces(cfg), where, **opts)
        arch = space.from_json(arch_json)
        spec = {"source": "space", "name": space_name, "options": space.options(), "arch": space.to_json(arch)}
        spec["str"] = space.to_str(arch)
        digest = hashlib.sha1(json.dumps([spec["name"], spec["options"], spec["arch"]], sort_keys=True).encode())
        arch_id = f"{prefix}{space_name}-{digest.hexdigest()[:8]}"
    spec["head"] = head
    return spec, cfg.arch_id or re.sub(r"[^A-Za-z0-9_.+-]", "_", arch_id)


def timm_spec(ref: str, kwargs: dict[str, Any], dropout: float = 0.0, drop_path: float = 0.0) -> dict[str, Any]:
    name = ref.split(":", 1)[1] if ref.startswith("timm:") else ""
    if not ref.startswith("timm:") or not name:
        raise UserError(f"--model {ref!r}: expected timm:<name>, e.g. timm:resnet18")
    if dropout:
        kwargs.setdefault("drop_rate", dropout)
    if drop_path:
        kwargs.setdefault("drop_path_rate", drop_path)
    return {"source": "timm", "name": name, "options": kwargs, "str": ref}


def build_model(spec: dict[str, Any], num_classes: int, trusted: Collection[str] = ()) -> nn.Module:
    """A freshly initialised network from a spec (head replaced when the spec asks for it).

    The spec's space is imported only when it is an import path in `trusted` (what the user gave).
    """
    from retrain.heads import replace_head

    if spec["source"] == "timm":
        import timm

        if not timm.is_model(spec["name"]):
            raise UserError(f"unknown timm model {spec['name']!r}; see timm.list_models() for the names")
        try:
            net = timm.create_model(spec["name"], pretrained=False, num_classes=num_classes, **spec["options"])
        except TypeError as exc:
            raise UserError(f"timm model {spec['name']!r} rejected its options ({exc}); fix --space-opts") from None
    else:
        space = _space(spec["name"], trusted, "the model spec", **spec["options"])
        net = space.build(space.from_json(spec["arch"]), num_classes)
    head = spec.get("head") or {}
    if head.get("kind", "linear") == "cosine" or head.get("dropout", 0.0) > 0:
        replace_head(net, head.get("kind") == "cosine", head.get("scale", 5.0), head.get("dropout", 0.0))
    return net


def model_from_checkpoint(
    path: str | Path, num_classes: int | None = None, prefer_ema: bool = True, trusted: Collection[str] = ()
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a retrained network from its checkpoint (EMA weights when present and preferred).

    The checkpoint is data: its space must be registered, or an import path the user gave (`trusted`).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    state = load_checkpoint(path)
    if state.get("kind") not in CHECKPOINT_KINDS or "model_spec" not in state:
        raise CheckpointError(f"{path} is a {state.get('kind')!r} checkpoint, not a retrained model of this tool")
    if num_classes is not None and state["num_classes"] != num_classes:
        raise CheckpointError(f"{path} predicts {state['num_classes']} classes, but the data has {num_classes}")
    spec = state["model_spec"]
    name = spec.get("name") if isinstance(spec, dict) else None
    if (
        isinstance(spec, dict)
        and spec.get("source") != "timm"
        and isinstance(name, str)
        and is_import_path(name)
        and name not in trusted
    ):
        raise CheckpointError(f"{path}: {untrusted_import(name, 'space', space_names(), '--space')}")
    net = build_model(spec, state["num_classes"], trusted)
    use_ema = prefer_ema and isinstance(state.get("ema"), dict)
    net.load_state_dict(state["ema"] if use_ema else state["model"])
    state["weights_used"] = "ema" if use_ema else "raw"
    return net, state


# ---- the ways an architecture arrives ---------------------------------------------------------------


def _from_json_text(text: str, space_name: str, opts: dict[str, Any]) -> tuple[str, dict, dict]:
    data = parse_json(text, "--arch", "pass space.to_json's output", ArchError)
    if not isinstance(data, dict):
        raise ArchError("--arch must be a JSON object as written by space.to_json (with a 'space' key)")
    return _space_of(data, space_name, "--arch"), opts, data


def _from_arch_file(path: str, rank: int, space_name: str, opts: dict[str, Any]) -> tuple[str, dict, dict]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--arch-file {file} does not exist; point it at a search's topk.json")
    entries = parse_json(file.read_bytes(), f"--arch-file {file}", "point it at a search's topk.json", ArchError)
    if isinstance(entries, dict):
        entries = entries.get("topk", [entries])
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "arch" in e for e in entries):
        raise ArchError(f"--arch-file {file} must hold a list of {{'rank', 'arch'}} entries, as search's topk.json")
    match = [e for e in entries if e.get("rank") == rank] or (entries[rank : rank + 1] if rank < len(entries) else [])
    if not entries:
        raise UserError(f"--arch-file {file} lists no architectures (no finite metric); rerun the search or use --arch")
    if not match:
        raise UserError(f"--rank {rank} is not in {file} ({len(entries)} entries); use 0 to {len(entries) - 1}")
    entry = match[0]
    if not isinstance(entry["arch"], dict):
        raise ArchError(f"--arch-file {file}: the arch of rank {rank} is not a JSON object")
    # The search's macro options (when the file records them) are the base; --space-opts override them.
    if not isinstance(entry.get("space_opts") or {}, dict):
        raise ArchError(f"--arch-file {file}: 'space_opts' of rank {rank} must be a JSON object of space options")
    merged = {**(entry.get("space_opts") or {}), **opts}
    return _space_of(entry["arch"], space_name, str(file)), merged, entry["arch"]


def _space_of(arch: dict[str, Any], space_name: str, where: str) -> str:
    named = arch.get("space")
    if named is not None and not isinstance(named, str):
        raise ArchError(f"{where}: the arch's 'space' must be a space name (a string)")
    if space_name and named and named != space_name:
        raise ArchError(f"{where}: the arch is of space {named!r} but --space is {space_name!r}")
    if not (space_name or named):
        raise ArchError(f"{where}: the arch JSON has no 'space' key; add --space NAME")
    return space_name or named


# The published cell forms the NASNet space reads: flag -> (parser of the text, space method building the arch).
CELL_IMPORTS = {
    "--lanet": (read_lanet, "from_lanet_lists", "LaNet lists describe NASNet cells"),
    "--genotype": (read_genotype, "from_genotype", "a genotype describes NASNet/DARTS cells"),
}


def _from_cells(
    flag: str, text: str, space_name: str, opts: dict[str, Any], trusted: Collection[str] = ()
) -> tuple[str, dict, dict]:
    """A published NASNet/DARTS cell (`--lanet` lists or a `--genotype`), parsed and built by the NASNet space."""
    read, build, what = CELL_IMPORTS[flag]
    cells, opts = read(text, opts)
    try:
        space = _space(space_name, trusted, flag, **opts)
    except UserError:
        if space_name == "nasnet":
            raise
        space = None  # another space does not take the NASNet options that the cells imply
    if not hasattr(space, build):
        raise ArchError(f"{flag}: {what}; use --space nasnet, not {space_name!r}")
    return space_name, opts, space.to_json(getattr(space, build)(cells))


def load_teacher(ref: str, num_classes: int, prefer_ema: bool, cfg: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """A teacher network and its spec (see `load_teacher_record`)."""
    net, spec, _ = load_teacher_record(ref, num_classes, prefer_ema, cfg)
    return net, spec


def load_teacher_record(
    ref: str, num_classes: int, prefer_ema: bool, cfg: Any = None
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """A teacher network, its spec, and a record of who it is for the student's report.

    `ref` is a previous retrain run of this tool (its run directory, its `retrain/<arch-id>/` folder,
    or a `last.pt`/`ema.pt` in it: a label refinery, rebuilt from the checkpoint's spec) or timm:<name>.
    `cfg` (the RetrainConfig) supplies `--teacher-weights`, `--kd-online` and the spaces the user trusts.
    A timm teacher for offline distillation carries trained weights (`--teacher-weights`, or the
    pretrained ones in the local cache); a random one would teach nothing, so it is refused.
    """
    if ref.startswith("timm:"):
        spec = timm_spec(ref, {})
        net = build_model(spec, num_classes)
        if cfg is not None and cfg.kd_online:  # trained jointly with the student, from scratch on purpose
            return net, spec, {"ref": ref, "model": ref, "weights": "trained jointly (online)"}
        weights = getattr(cfg, "teacher_weights", "") if cfg is not None else ""
        state = _state_dict_file(weights) if weights else _pretrained_timm(spec["name"], num_classes)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            source = f"--teacher-weights {weights}" if weights else "its pretrained weights"
            first = str(exc).strip().splitlines()[0]
            raise UserError(
                f"teacher {ref}: {source} do not fit a {num_classes}-class {spec['name']} ({first}); "
                "give the state dict of that model trained on these classes"
            ) from None
        return net, spec, {"ref": ref, "model": ref, "weights": weights or "timm pretrained"}
    path = find_teacher_checkpoint(ref)
    net, state = model_from_checkpoint(path, num_classes, prefer_ema, user_spaces(cfg) if cfg is not None else ())
    return net, state["model_spec"], teacher_record(ref, path, state)


def find_teacher_checkpoint(ref: str) -> Path:
    """The retrain checkpoint that `--teacher ref` names: a file, a `retrain/<arch-id>/` folder, or a run
    directory with exactly one retrained model."""
    path = Path(ref)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(
            f"--teacher {ref} does not exist; give a retrain run directory, its last.pt/ema.pt or timm:<name>"
        )
    if (path / "last.pt").is_file():
        return path / "last.pt"
    found = sorted(d for d in (path / "retrain").glob("*") if (d / "last.pt").is_file())
    if len(found) == 1:
        return found[0] / "last.pt"
    if found:
        names = ", ".join(d.name for d in found[:4])
        raise UserError(
            f"--teacher {ref} holds {len(found)} retrained models ({names}); give --teacher {ref}/retrain/<arch-id>"
        )
    raise UserError(
        f"--teacher {ref} holds no retrained model (retrain/<arch-id>/last.pt); run `run.py retrain` there first"
    )


def teacher_record(ref: str, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Who the teacher is and how accurate it was on the test split, from its checkpoint (and report)."""
    spec = state.get("model_spec") if isinstance(state.get("model_spec"), dict) else {}
    history = state.get("history") if isinstance(state.get("history"), list) else []
    tested = [r for r in history if isinstance(r, dict) and "test_top1" in r]
    final: dict[str, Any] = dict(tested[-1]) if tested else {}
    report = path.parent / "report.json"
    if not final and report.is_file():  # ema.pt holds weights only; its run's report holds the accuracy
        try:
            final = dict(parse_json(report.read_bytes(), str(report), "", UserError).get("final") or {})
        except (UserError, AttributeError, TypeError, ValueError):
            final = {}
    used = state.get("weights_used", "raw")
    accuracy = final.get("ema_test_top1" if used == "ema" and "ema_test_top1" in final else "test_top1")
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    record = {
        "ref": ref, "checkpoint": str(path), "arch_id": state.get("arch_id"),
        "model": spec.get("str") or spec.get("name"), "weights_used": used,
        "test_top1": accuracy if isinstance(accuracy, (int, float)) else None,
        "test_images": final.get("test_images"), "epochs": config.get("epochs"), "step": state.get("step"),
        "finished": state.get("finished"), "its_teacher": config.get("teacher") or None,
    }  # fmt: skip
    if record["finished"] is False:
        log.warning("teacher %s stopped at step %s before the end of its run; finish it with --resume auto", path,
                    record["step"])  # fmt: skip
    return record


def _state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file or a torch file (loaded weights-only: data, never code)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--teacher-weights {path} does not exist; give a state dict saved with torch.save")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or unsafe file is the same input error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"--teacher-weights {path} cannot be read as weights only ({first}); refused") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--teacher-weights {path} is not a state dict (name -> tensor); save model.state_dict()")
    return state


def _pretrained_timm(name: str, num_classes: int) -> dict[str, torch.Tensor]:
    """The pretrained weights of timm model `name` from the local cache (never downloaded here)."""
    import timm

    hint = f"pass --teacher-weights PATH (a state dict of timm:{name} trained on these {num_classes} classes)"
    try:
        net = timm.create_model(name, pretrained=True)
    except Exception:  # offline cache miss, no weights published: either way there are none
        raise UserError(
            f"teacher timm:{name} has no pretrained weights in the local cache (downloads are off) and a random "
            f"teacher teaches nothing; {hint}"
        ) from None
    classes = int(getattr(net, "num_classes", 0) or 0)
    if classes != num_classes:
        raise UserError(
            f"teacher timm:{name}'s pretrained weights predict {classes} classes, not the data's {num_classes}, "
            f"so its classifier would be random; {hint}"
        )
    return net.state_dict()


def param_count(model: nn.Module) -> int:
    """Parameters used at inference (the auxiliary head is a training-only branch)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head"))


def to_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model

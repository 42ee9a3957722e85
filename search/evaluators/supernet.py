"""The supernet evaluator: an architecture's accuracy read off a trained supernet (one-shot NAS).

Each architecture's BatchNorm statistics are recalibrated on N training images, then it is scored
on the search split carved out of the training set, under `no_grad` and autocast: by its top-1
accuracy, or (`--score nll`) by minus its mean cross-entropy, which, unlike a count of right answers,
still tells apart subnets of an under-trained supernet whose accuracies tie. The test split is
never loaded into the evaluator. Scores are cached by canonical architecture. Under `torchrun`, each
rank scores a share of every proposal batch and the results are gathered in proposal order.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from core import amp as amp_lib
from core import distributed
from core.checkpoint import contents_of, load_checkpoint
from core.data import TensorLoader, load_data
from core.data.folder import TransformOptions, decode_split
from core.errors import CheckpointError, UserError
from core.rundir import RunDir
from core.runtime import select_device
from search.evaluators import register_evaluator
from supernet.evaluate import recal_subset, score_arch
from supernet.spaces.base import Space

log = logging.getLogger(__name__)
SCORES = ("acc", "nll")  # top-1 accuracy (%), or minus the mean cross-entropy (higher is better for both)


def find_supernet_checkpoint(run_dir: str, given: str = "") -> Path:
    """`given`, else the run's best supernet checkpoint, else its last one."""
    if given:
        return Path(given)
    supernet = RunDir(run_dir).supernet
    for path in (supernet.best, supernet.last):
        if path.exists():
            return path
    raise UserError(
        f"no supernet checkpoint in {supernet.path}; run `run.py supernet` first or pass --supernet-ckpt PATH"
    )


class SupernetEvaluator:
    """Scores architectures with a trained supernet's shared weights."""

    def __init__(
        self,
        space: Space,
        checkpoint: str | Path,
        *,
        device: str = "auto",
        amp: str = "off",
        recal_images: int = 2000,
        batch_size: int = 256,
        data_dir: str | None = None,
        score: str = "acc",
        loader: str = "memory",
        transform: TransformOptions | None = None,
        workers: int = -1,
        timeout: float = 300.0,
        strict: bool = False,
    ) -> None:
        if score not in SCORES:
            raise UserError(f"unknown supernet score {score!r}: choose one of {', '.join(SCORES)}")
        self.space, self.score_name = space, score
        self.device = select_device(device)
        amp_lib.check_amp(amp, self.device)
        state = load_checkpoint(checkpoint, map_location=self.device)
        if state.get("kind") != "supernet":
            raise CheckpointError(f"{checkpoint} is a {state.get('kind')} checkpoint, not a supernet")
        if state.get("space_opts") != space.options() or state.get("space") not in (space.name, None):
            raise CheckpointError(
                f"{checkpoint} is a supernet of space {state.get('space')!r} with options "
                f"{state.get('space_opts')}, not of this search's {space.name!r} {space.options()}; "
                "pass the matching --space and --space-opts"
            )
        d = state["data"]
        # The same dataset and the same search split as the supernet's training run.
        data = load_data(
            d["dataset"],
            data_dir if data_dir is not None else d["data_dir"],
            search_size=d["search_size"],
            split_seed=d["split_seed"],
            image_size=d["image_size"],
            loader=loader,
        )
        if data.num_classes != state["num_classes"]:
            raise CheckpointError(f"{checkpoint} has {state['num_classes']} classes, the data {data.num_classes}")
        data.test = None  # type: ignore[assignment]  # search estimates never touch the test split
        if not len(data.search):
            raise UserError(f"{checkpoint} was trained with an empty search split: nothing to score architectures "
                            "on; train the supernet again with --search-size N (e.g. 1000)")  # fmt: skip
        self.data = data
        self.net = space.supernet(state["num_classes"]).to(self.device)
        with contents_of(checkpoint, "pass a supernet last.pt that this tool wrote"):
            self.net.load_state_dict(state["model"])
        self.net.eval()
        self.autocast = lambda: amp_lib.autocast(amp, self.device)
        kw = {"mean": data.mean, "std": data.std, "device": self.device}
        self.recal_images = recal_images if recal_images else 0
        self.cache: dict[Hashable, dict[str, Any]] = {}
        self.recal_set = recal_subset(data.train, recal_images, d["split_seed"]) if recal_images else None
        if data.search.on_workers:
            # decoded once per resolution with the evaluation transform, kept as uint8 for the whole search
            opt = transform or TransformOptions()
            self.decode = lambda split, size: decode_split(split, size, opt, workers, timeout, strict)
            self.loaders: dict[int, tuple[TensorLoader | None, TensorLoader]] = {}
            self.kw, self.batch_size = kw, batch_size
            log.info("search split on the worker path: decoded once per resolution (evaluation transform)")
            return
        self.recal = TensorLoader(self.recal_set, 128, **kw) if self.recal_set is not None else None
        self.eval_loader = TensorLoader(data.search, batch_size, **kw)

    def loaders_for(self, arch: Hashable) -> tuple[TensorLoader | None, TensorLoader]:
        """The recalibration and evaluation loaders of `arch`'s resolution (made once per resolution)."""
        if not self.data.search.on_workers:
            return self.recal, self.eval_loader
        size = int(getattr(arch, "resolution", 0) or 0) or self.data.image_size
        if size not in self.loaders:
            recal = None
            if self.recal_set is not None:
                recal = TensorLoader(self.decode(self.recal_set, size), 128, **self.kw)
            self.loaders[size] = (recal, TensorLoader(self.decode(self.data.search, size), self.batch_size, **self.kw))
        return self.loaders[size]

    def score(self, arch: Hashable) -> dict[str, Any]:
        key = self.space.canonical(arch)
        if key not in self.cache:
            recal, evaluate = self.loaders_for(arch)
            result = score_arch(self.net, arch, recal, evaluate, self.autocast())
            metric = result["acc"] if self.score_name == "acc" else -result["loss"]
            self.cache[key] = {"metric": metric, "score": self.score_name, "acc": result["acc"],
                               "loss": round(result["loss"], 6), "n_recal": result["n_recal"],
                               "n_eval": result["n_eval"]}  # fmt: skip
        return dict(self.cache[key])

    def evaluate(self, archs: list[Hashable]) -> list[dict[str, Any]]:
        """Scores in the order of `archs`; each rank computes every world-th one."""
        rank, world = distributed.rank(), distributed.world_size()
        mine = {i: self.score(a) for i, a in enumerate(archs) if i % world == rank}
        merged: dict[int, dict[str, Any]] = {}
        for part in distributed.all_gather_object(mine):
            merged.update(part)
        for i, a in enumerate(archs):  # fill this rank's cache with the others' results too
            self.cache.setdefault(self.space.canonical(a), merged[i])
        return [merged[i] for i in range(len(archs))]


def _factory(cfg: Any, space: Space) -> SupernetEvaluator:
    distributed.init_distributed(select_device(cfg.device))
    ckpt = find_supernet_checkpoint(cfg.run_dir, getattr(cfg, "supernet_ckpt", ""))
    return SupernetEvaluator(
        space,
        ckpt,
        device=cfg.device,
        amp=getattr(cfg, "amp", "off"),
        recal_images=getattr(cfg, "recal_images", 2000),
        data_dir=cfg.data_dir or None,
        score=getattr(cfg, "score", "acc"),
        loader=getattr(cfg, "loader", "memory"),
        transform=TransformOptions.from_config(cfg),
        workers=getattr(cfg, "workers", -1),
        timeout=getattr(cfg, "loader_timeout", 300.0),
        strict=getattr(cfg, "strict_images", False),
    )


register_evaluator("supernet", _factory)

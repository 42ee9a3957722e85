"""A folder of real-photo JPEGs at ImageNet's typical size, made deterministically from a shipped photo.

    python -m bench.photos OUT [--per-class N] [--classes C] [--seed S]

The only photograph that the installed packages ship is matplotlib's sample `grace_hopper.jpg`
(512x600; scikit-image is not installed, matplotlib's other samples are charts and data). Each image
is a random crop of it (60-100% of the area, aspect 3/4-4/3), a random flip, small brightness,
contrast and colour changes, resized to about 500x375 (landscape or portrait, as ImageNet's median),
and re-encoded as a baseline JPEG at quality 94-98 with 4:2:0 chroma: decoding costs what an
ImageNet JPEG of that size costs. Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np


def source_photo() -> object:
    """matplotlib's sample photograph, as a PIL RGB image."""
    import matplotlib.cbook
    from PIL import Image

    return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")


def photo_jpeg(photo: object, rng: np.random.Generator) -> bytes:
    """One JPEG: a random crop of `photo`, varied, at about 500x375 (or 375x500)."""
    from PIL import Image, ImageEnhance

    w, h = photo.size  # type: ignore[attr-defined]
    area = w * h * rng.uniform(0.6, 1.0)
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    cw, ch = min(w, int(round((area * aspect) ** 0.5))), min(h, int(round((area / aspect) ** 0.5)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = photo.crop((x0, y0, x0 + cw, y0 + ch))  # type: ignore[attr-defined]
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    side = int(rng.integers(460, 541))
    size = (side, side * 3 // 4) if rng.random() < 0.75 else (side * 3 // 4, side)
    img = img.resize(size, Image.Resampling.BICUBIC)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.7, 1.3))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=int(rng.integers(94, 99)), subsampling=2)
    return out.getvalue()


def make_photo_folder(root: Path | str, per_class: int = 20, classes: int = 4, val_per_class: int = 0,
                      seed: int = 0) -> Path:  # fmt: skip
    """`root/train/<class>/*.JPEG` and `root/val/<class>/*.JPEG`; returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    photo = source_photo()
    val = val_per_class or max(1, per_class // 4)
    for split, n in (("train", per_class), ("val", val)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"img_{i:05d}.JPEG").write_bytes(photo_jpeg(photo, rng))
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    make_photo_folder(a.out, a.per_class, a.classes, seed=a.seed)


if __name__ == "__main__":
    main()

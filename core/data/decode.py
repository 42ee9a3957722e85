"""Decoding one encoded image into pixels: shared by the eager loader (`core.data.datasets`) and the lazy one
(`core.data.lazy`), so both give the same array for the same file."""

from __future__ import annotations

import io

import numpy as np

from core.errors import UserError


def decode_image(raw: bytes, name: str, size: int) -> np.ndarray:
    """One encoded image as uint8 (H, W, 3) RGB, fitted to `size` (`fit_square`); both load paths use this."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(raw)).convert("RGB")
    except Exception as exc:
        raise UserError(f"cannot decode image {name}: {failure_reason(exc)}; replace or delete that file") from None
    return np.asarray(fit_square(img, size), dtype=np.uint8)


def failure_reason(exc: BaseException) -> str:
    """A one-line reason for a decode failure (PIL's messages can name an in-memory buffer)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image file PIL can read (truncated, corrupt or another format)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no details'}"


def fit_square(img: object, size: int) -> object:
    """Resize the shorter side to `size` and centre-crop a square (no-op when size is 0 or equal)."""
    if not size or img.size == (size, size):  # type: ignore[attr-defined]
        return img
    from torchvision.transforms.functional import center_crop, resize

    return center_crop(resize(img, size), [size, size])

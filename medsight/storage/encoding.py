"""How values become what the History database stores: 16-bit image blobs, thumbnails, JSON payloads."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

# Arrays bigger than this are not turned into JSON lists: images belong in the studies table.
_MAX_JSON_ARRAY = 4096


def _json_default(value: Any) -> Any:
    """Turn the objects results are made of (numpy values, dataclasses, paths) into JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size > _MAX_JSON_ARRAY:
            raise TypeError(
                f"array of shape {value.shape} is too large to store in a record; store images with save_study"
            )
        return value.tolist()
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (Path, _dt.date, _dt.datetime)):
        return str(value) if isinstance(value, Path) else value.isoformat()
    raise TypeError(f"cannot store a {type(value).__name__} in a history record")


def to_json(value: Any) -> str:
    """Serialise a payload for storage (numpy values and dataclasses are converted)."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=True)


def encode_image(image: np.ndarray) -> bytes:
    """Lossless-enough image blob: [0,1] float image quantised to 16 bits, saved as a 16-bit PNG."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {array.shape}")
    quantised = np.round(np.clip(np.nan_to_num(array), 0.0, 1.0) * 65535.0).astype(np.uint16)
    buffer = io.BytesIO()
    # Level 1: a film's noise barely compresses (8.34 against 8.19 MB for a 2000 × 2500 film) and it is
    # 1.5× faster to write (0.53 against 0.77 s) while the reader waits for the study to open.
    Image.fromarray(quantised).save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def decode_image(blob: bytes) -> np.ndarray:
    """Inverse of `encode_image`: float32 HxW in [0, 1]."""
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        array = np.asarray(img)
    return (array.astype(np.float32) / 65535.0).astype(np.float32)


def make_thumbnail(image: np.ndarray, size: int = 256) -> bytes:
    """8-bit PNG thumbnail (longest side `size`) of a [0,1] image."""
    from PIL import Image

    array = np.round(np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(array)
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()

"""PNG and JPEG ingest through Pillow (OpenCV only for 16-bit colour PNG, which Pillow reduces to 8 bits)."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from medsight.ingest.errors import IngestError
from medsight.ingest.study import CodedImage, Study, colour_measures, luminance, pixel_hash

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

# EXIF Orientation (0x0112) → numpy operation, matching PIL.ImageOps.exif_transpose.
_ORIENTATION_OPS = {
    2: lambda a: a[:, ::-1],  # mirror left-right
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1, :],  # mirror top-bottom
    5: lambda a: a.T,  # transpose
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].T,  # transverse
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise
}


def sniff_raster(data: bytes) -> str | None:
    """Return "png" or "jpeg" when ``data`` starts with that format's signature."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    return None


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from the PNG IHDR chunk, or None if it is not where it should be."""
    if len(data) >= 33 and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _decode_png16_colour(data: bytes) -> np.ndarray:
    """Decode a 16-bit colour PNG at full depth (Pillow would return 8-bit RGB)."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise IngestError("The PNG file is truncated or corrupt and could not be decoded.")
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return arr[..., 2::-1]  # BGR(A) → RGB, alpha dropped
    if arr.ndim == 3:
        return arr[..., 0]  # grey + alpha
    return arr


def _is_synthetic(info: dict[str, Any]) -> bool:
    """True when a PNG text chunk or JPEG comment marks the image as synthetic."""
    for key, value in info.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1", errors="replace")
        if not isinstance(value, str):
            continue
        if key.lower() in {"icc_profile", "exif", "xmp", "dpi", "gamma"}:
            continue
        if "synthetic" in key.lower() or "synthetic" in value.lower():
            return True
    return False


def load_raster(data: bytes, fmt: str, filename: str | None, *, max_pixels: int) -> Study:
    """Decode PNG/JPEG bytes into a Study.

    The display image is the stored grey level divided by the full scale of the bit depth
    (no contrast stretching: a PNG/JPEG is already a rendered image). 16-bit files stay 16-bit
    until that final division.

    Args:
        data: File content.
        fmt: "png" or "jpeg" (from the file signature).
        filename: Original file name, for the Study only.
        max_pixels: Largest accepted width x height.

    Returns:
        The Study (``raw`` is None).

    Raises:
        IngestError: For corrupt, truncated, oversized or unsupported images.
    """
    from PIL import Image

    label = fmt.upper()
    notices: list[str] = []
    with warnings.catch_warnings():
        # Pillow warns (and at twice its limit raises) for decompression bombs; both must stop ingest.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "MPO"])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise IngestError(
                f"The {label} image declares an enormous size (possible decompression bomb) and was refused."
            ) from None
        except Exception:
            raise IngestError(f"The {label} file is corrupt or not a valid {label} image.") from None

        width, height = im.size
        if width <= 0 or height <= 0:
            raise IngestError(f"The {label} image has zero width or height.")
        if width * height > max_pixels:
            raise IngestError(
                f"The {label} image is {width}×{height} pixels, more than the {max_pixels:,}-pixel limit "
                "(absurd size or decompression bomb); it was refused."
            )
        if min(width, height) < 2:
            raise IngestError(f"The {label} image is {width}×{height} pixels: not a 2-D radiograph.")
        if getattr(im, "n_frames", 1) > 1:
            notices.append(f"The {label} file holds {im.n_frames} frames; only the first is shown.")

        header = _png_header(data) if fmt == "png" else None
        try:
            if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
                pixels = _decode_png16_colour(data)
                mode, bits = "RGB;16" if pixels.ndim == 3 else "LA;16", 16
            else:
                im.load()
                pixels, mode, bits = _pixels_from_pil(im)
        except IngestError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise IngestError(f"The {label} image was refused as a possible decompression bomb.") from None
        except Exception:
            raise IngestError(
                f"The {label} file is truncated or corrupt; its pixels could not be decoded."
            ) from None

    info = dict(getattr(im, "info", {}) or {})
    text = getattr(im, "text", None) if fmt == "png" else None
    if isinstance(text, dict):
        info.update(text)
    synthetic = _is_synthetic(info)
    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:
        orientation = 1
        notices.append("The EXIF block is unreadable; orientation was left as stored.")

    colour = {"colour": False, "colourfulness": 0.0, "chromatic_fraction": 0.0}
    alpha = {"alpha": mode in ("LA", "La", "RGBA", "RGBa", "PA", "LA;16") or (pixels.ndim == 3 and pixels.shape[2] == 4)}
    if pixels.ndim == 3:
        if pixels.shape[2] == 4:
            alpha_channel = pixels[..., 3]
            opaque = alpha_channel.max(initial=0)
            alpha["transparent_fraction"] = round(float(np.mean(alpha_channel < opaque)), 4)
            if np.any(alpha_channel < opaque):
                notices.append("Transparency in the image was ignored.")
        colour = colour_measures(pixels[..., :3], float(2**bits - 1))
        levels = luminance(pixels[..., :3])
    else:
        levels = pixels.astype(np.float32)
    # 8- and 16-bit grey levels are their own codes: the display image is a per-level table looked up.
    codes = pixels if pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint16) else None
    if orientation in _ORIENTATION_OPS:
        levels = np.ascontiguousarray(_ORIENTATION_OPS[orientation](levels))
        if codes is not None:
            codes = np.ascontiguousarray(_ORIENTATION_OPS[orientation](codes))

    full_scale_bits = bits
    if bits == 16 and levels.size:
        # Many 16-bit radiograph PNGs carry 10-14 significant bits; scaling by 65535 would
        # leave them nearly black.
        peak = float(levels.max())
        for candidate in (10, 12, 14):
            if peak < 2**candidate:
                full_scale_bits = candidate
                notices.append(
                    f"16-bit image uses only {candidate} significant bits; scaled to that range."
                )
                break
    full_scale = float(2**full_scale_bits - 1)
    coded = None
    if codes is not None:
        every_level = np.arange(2 ** (8 * codes.dtype.itemsize), dtype=np.float32)
        coded = CodedImage.build(codes, np.clip(every_level / full_scale, 0.0, 1.0).astype(np.float32))
        image = coded.image
    else:
        image = np.clip(levels / full_scale, 0.0, 1.0).astype(np.float32)

    metadata = {
        "format": label,
        "pixel_mode": mode,
        "bit_depth": bits,
        "significant_bits": full_scale_bits,
        "rows": int(levels.shape[0]),
        "columns": int(levels.shape[1]),
        "exif_orientation": orientation,
        "icc_profile": bool(info.get("icc_profile")),
        **colour,
        **alpha,
    }
    return Study(
        study_id=coded.image_hash if coded is not None else pixel_hash(image),
        image=image,
        raw=None,
        source_format=fmt,
        filename=filename,
        modality=None,
        view_position=None,
        pixel_spacing=None,
        original_size=(int(height), int(width)),
        bits=int(bits),
        windows=[],
        window_used=None,
        metadata=metadata,
        notices=notices,
        synthetic=synthetic,
        _levels=levels.astype(np.float32, copy=False),
        _invert=False,
        _voi_function="LINEAR",
        _coded=coded,
    )


def _pixels_from_pil(im: Any) -> tuple[np.ndarray, str, int]:
    """Pixels of a loaded Pillow image as grey (HxW) or colour (HxWx3/4), with mode and bit depth."""
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), mode, 16
    if mode == "I":
        arr = np.asarray(im)
        peak = int(arr.max(initial=0))
        arr = np.clip(arr, 0, None)
        return arr, mode, 16 if peak <= 65535 else 32
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32))
        return np.clip(arr, 0, None), mode, 16
    if mode == "L":
        return np.asarray(im), mode, 8
    if mode in ("LA", "La"):
        return np.asarray(im)[..., 0], mode, 8
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        return np.asarray(im), mode, 8
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB")), mode, 8
    if mode == "1":
        return np.asarray(im.convert("L")), mode, 8
    # CMYK, YCbCr, LAB, HSV and anything else Pillow can express as RGB.
    return np.asarray(im.convert("RGB")), mode, 8

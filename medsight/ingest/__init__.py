"""Image and DICOM ingest: any PNG, JPEG or DICOM file in, one de-identified `Study` out.

Everything that can go wrong with a file surfaces as :class:`IngestError` with a message fit for
the user; no other exception type leaves :func:`load_study`.

Example:
    >>> study = load_study("chest.dcm")            # doctest: +SKIP
    >>> study.image.shape, study.window_used, study.notices  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from medsight.ingest.deid import deidentify_dataset, technical_metadata
from medsight.ingest.errors import IngestError
from medsight.ingest.study import Study, apply_window, percentile_window, pixel_hash

__all__ = [
    "IngestError",
    "Study",
    "apply_window",
    "deidentify_dataset",
    "load_study",
    "percentile_window",
    "pixel_hash",
    "technical_metadata",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
]

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_PIXELS = 80_000_000

_SUPPORTED = "Please upload a PNG, JPEG or DICOM file."

# Leading bytes of common non-image (or unsupported image) files → what to call them.
_KNOWN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"GIF87a", "a GIF image, which is not supported"),
    (b"GIF89a", "a GIF image, which is not supported"),
    (b"BM", "a BMP image, which is not supported"),
    (b"II*\x00", "a TIFF image, which is not supported"),
    (b"MM\x00*", "a TIFF image, which is not supported"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image file, which is not supported outside DICOM"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"),
)


def _describe_non_image(data: bytes) -> str:
    for signature, name in _KNOWN_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image, which is not supported"
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\r\n\t" for ch in text[:1000]):
        return "a text file"
    return "in a format that was not recognised"


def _read_source(source: Any, max_bytes: int) -> tuple[bytes, str | None]:
    """Bytes and file name from bytes, a path or a file-like object, honouring ``max_bytes``."""
    limit_mb = max_bytes / (1024 * 1024)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source))
        name = path.name
        try:
            if path.is_dir():
                raise IngestError(f"'{name}' is a folder, not an image file.")
            size = path.stat().st_size
            if size > max_bytes:
                raise IngestError(f"The file is {size / 1048576:.1f} MB, over the {limit_mb:.0f} MB limit.")
            data = path.read_bytes()
        except FileNotFoundError:
            raise IngestError(f"The file '{name}' was not found.") from None
        except PermissionError:
            raise IngestError(f"The file '{name}' could not be opened (permission denied).") from None
        except OSError:
            raise IngestError(f"The file '{name}' could not be read.") from None
    elif hasattr(source, "read"):
        raw_name = getattr(source, "name", None)
        name = Path(raw_name).name if isinstance(raw_name, str) else None
        try:
            if hasattr(source, "seek"):
                source.seek(0)  # uploads that were already read once start again from the top
            data = source.read(max_bytes + 1)
        except Exception:
            raise IngestError("The uploaded file could not be read.") from None
        if isinstance(data, str):
            raise IngestError(f"The upload was opened as text; it is {_describe_non_image(data.encode())}.")
        data = bytes(data or b"")
    else:
        raise IngestError(f"Cannot read an image from a {type(source).__name__}. {_SUPPORTED}")
    if len(data) > max_bytes:
        raise IngestError(f"The file is larger than the {limit_mb:.0f} MB limit.")
    return data, name


def load_study(
    source: bytes | str | os.PathLike | BinaryIO,
    filename: str | None = None,
    *,
    window_index: int = 0,
    window: tuple[float, float] | None = None,
    store_identifiers: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Study:
    """Load a PNG, JPEG or DICOM image into a de-identified Study.

    The format is detected from the content, not the file name. DICOM is displayed through
    its Modality LUT / rescale, then its VOI LUT table or window (``window_index`` picks one,
    ``window`` overrides), or an automatic percentile window when it has none; MONOCHROME1 is
    inverted; multi-frame files show the first frame.

    Args:
        source: File content, a path, or a binary file-like object (e.g. an upload).
        filename: Name to record; defaults to the path's or upload's name.
        window_index: Which of the file's windows / VOI LUT tables to apply (0 = first).
        window: Explicit (centre, width) in modality units, overriding the file.
        store_identifiers: Keep patient name and ID in ``metadata["identifiers"]`` (opt-in).
        max_bytes: Largest accepted file size.
        max_pixels: Largest accepted width x height (guards against decompression bombs).

    Returns:
        The Study.

    Raises:
        IngestError: For every problem with the input, with a message for the user.
    """
    try:
        if window is not None:
            try:
                window = (float(window[0]), float(window[1]))
            except (TypeError, ValueError, IndexError):
                raise IngestError("The window must be a (centre, width) pair of numbers.") from None
        try:
            window_index = int(window_index)
        except (TypeError, ValueError):
            raise IngestError("The window index must be a whole number.") from None
        if window_index < 0:
            raise IngestError("The window index must be 0 or more.")

        data, source_name = _read_source(source, int(max_bytes))
        name = filename or source_name
        if not data:
            raise IngestError("The file is empty.")

        from medsight.ingest.raster import load_raster, sniff_raster

        with warnings.catch_warnings():
            # pydicom and Pillow warn about every oddity of real-world files; ingest reports
            # what matters through Study.notices instead.
            warnings.simplefilter("ignore")
            fmt = sniff_raster(data)
            if fmt is not None:
                study = load_raster(data, fmt, name, max_pixels=int(max_pixels))
                if window is not None:
                    study = study.with_window(*window)
                return study

            from medsight.ingest.dicom import load_dicom, read_dicom

            # A deflated data set may hold at most ~8 bytes per accepted pixel plus headers.
            ds = read_dicom(data, max_inflated=max(64 * 2**20, 8 * int(max_pixels)))
            if ds is None:
                raise IngestError(f"This file is {_describe_non_image(data)}, not a supported image. {_SUPPORTED}")
            return load_dicom(
                ds,
                name,
                window_index=window_index,
                window=window,
                store_identifiers=store_identifiers,
                max_pixels=int(max_pixels),
            )
    except IngestError:
        raise
    except MemoryError:
        raise IngestError("The image is too large to load in the available memory.") from None
    except BaseException as exc:  # noqa: BLE001 - last line of defence: no traceback reaches the UI
        # Compiled decoders can raise BaseException subclasses (pyo3 PanicException).
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise IngestError(
            f"The file could not be read as an image ({type(exc).__name__}). {_SUPPORTED}"
        ) from None

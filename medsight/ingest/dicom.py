"""DICOM ingest through pydicom (pylibjpeg, pyjpegls and pydicom's RLE decoder for compressed data).

Display pipeline, in DICOM order: stored values → Modality LUT / rescale (raw) → VOI LUT table or
window (PS3.3 C.11.2) → MONOCHROME1 inversion. Colour images (RGB, YBR, palette) become luminance.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.deid.metadata import BURNED_IN_WARNING, technical_metadata
from medsight.ingest.errors import IngestError
from medsight.ingest.study import (
    CodedImage,
    Study,
    apply_window,
    colour_measures,
    lookup,
    luminance,
    percentile_window,
    pixel_hash,
)

#: Modalities that are plain projection radiographs; others load with a notice.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# pydicom decoder plugin → what to install.
_PLUGIN_PACKAGES = {
    "pylibjpeg": "pylibjpeg with pylibjpeg-libjpeg / pylibjpeg-openjpeg / pylibjpeg-rle",
    "pyjpegls": "pyjpegls",
    "gdcm": "python-gdcm",
    "pillow": "pillow",
    "pydicom": "pydicom",
}


def _plausible_raw_dataset(data: bytes) -> bool:
    """Whether headerless bytes start like a DICOM data set (group 0002 or 0008, small element)."""
    if len(data) < 8:
        return False
    group_le = int.from_bytes(data[0:2], "little")
    group_be = int.from_bytes(data[0:2], "big")
    element = int.from_bytes(data[2:4], "little")
    element_be = int.from_bytes(data[2:4], "big")
    return (group_le in (0x0002, 0x0008) and element < 0x0100) or (
        group_be == 0x0008 and element_be < 0x0100
    )


def refuse_deflate_bomb(data: bytes, max_inflated: int) -> None:
    """Refuse a Deflated Explicit VR data set that would inflate beyond `max_inflated` bytes.

    pydicom inflates a deflated data set whole before anything can be checked, so a small upload could
    allocate gigabytes; the header is read first and the stream inflated with a hard output limit.

    Raises:
        IngestError: when the inflated data set would exceed the limit.
    """
    import zlib

    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble

    handle = io.BytesIO(data)
    try:
        read_preamble(handle, False)
        meta = _read_file_meta_info(handle)
    except Exception:
        return  # not a well-formed file header; the normal reader reports it
    if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(handle.read(), max_inflated + 1)
    except zlib.error:
        raise IngestError("The deflated DICOM data set is corrupt and could not be read.") from None
    if len(inflated) > max_inflated or inflater.unconsumed_tail:
        raise IngestError(
            f"The deflated DICOM data set expands to more than {max_inflated // 2**20} MB "
            "(possible decompression bomb); it was refused."
        )


def read_dicom(data: bytes, max_inflated: int = 640 * 2**20) -> Any | None:
    """Parse ``data`` as DICOM, or return None when it is not DICOM at all.

    A file with the "DICM" marker is read normally. Without it (raw data sets written with no
    preamble) pydicom's forced read is tried only when the first tag looks like DICOM, and the
    result is accepted only when it holds attributes an image or DICOM object must have.

    Raises:
        IngestError: If the file is DICOM but its header is corrupt or truncated.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    has_marker = len(data) >= 132 and data[128:132] == b"DICM"
    if has_marker:
        refuse_deflate_bomb(data, max_inflated)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
            ds.keys()  # reading is lazy; make sure the top level parsed
            return ds
    except InvalidDicomError:
        if has_marker:
            raise IngestError("The DICOM file header is corrupt and could not be read.") from None
    except Exception:
        if has_marker:
            raise IngestError("The DICOM file is truncated or corrupt; its header could not be read.") from None
        return None
    if not _plausible_raw_dataset(data):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            keys = set(ds.keys())
    except Exception:
        raise IngestError(
            "The file looks like DICOM without a file header but is truncated or corrupt."
        ) from None
    # Forced reads "succeed" on many non-DICOM files; insist on real DICOM content.
    from pydicom.tag import Tag

    required = {Tag("SOPClassUID"), Tag("Modality"), Tag("PixelData"), Tag("Rows"), Tag("StudyInstanceUID")}
    if len(keys & required) < 2:
        return None
    return ds


def _int(ds: Any, keyword: str, default: int | None = None) -> int | None:
    try:
        value = ds.get(keyword, default)
        return default if value is None or value == "" else int(value)
    except Exception:
        return default


def _uid_name(value: Any) -> str:
    """Registered name of a UID, or the UID itself when it is well formed, else a placeholder."""
    from pydicom.uid import UID

    text = str(value).strip().rstrip("\x00")
    name = UID(text).name if text else ""
    if name and name != text:
        return name
    if text and len(text) <= 64 and all(ch.isdigit() or ch == "." for ch in text):
        return text
    return "unrecognised UID"


def _kind(ds: Any) -> str:
    """Human name of the DICOM object type (e.g. "RT Plan Storage", "Media Storage Directory")."""
    for source, keyword in ((ds, "SOPClassUID"), (getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")):
        try:
            value = source.get(keyword) if source is not None else None
        except Exception:
            value = None
        if value:
            return _uid_name(value)
    if "DirectoryRecordSequence" in ds:
        return "Media Storage Directory"
    return "unknown object type"


# SOP Class name fragment → what a radiologist would call the object (PS3.4 Annex B storage classes
# that hold no pixel data). Checked in order; the first match wins.
_NON_IMAGE_OBJECTS: tuple[tuple[str, str], ...] = (
    ("SR Storage", "a DICOM Structured Report (a document, not an image)"),
    ("Encapsulated PDF", "a PDF document wrapped in DICOM (Encapsulated PDF), not an image"),
    ("Encapsulated CDA", "a clinical document wrapped in DICOM (Encapsulated CDA), not an image"),
    ("Encapsulated STL", "a 3-D surface model wrapped in DICOM (Encapsulated STL), not an image"),
    ("Presentation State", "a DICOM presentation state (display settings for another image), not an image"),
    ("Key Object Selection", "a DICOM Key Object Selection (a list of references to other images), not an image"),
    ("RT Ion Plan", "a radiotherapy ion plan, not an image"),
    ("RT Plan", "a radiotherapy plan, not an image"),
    ("RT Structure Set", "a radiotherapy structure set (contours), not an image"),
    ("RT Beams Treatment Record", "a radiotherapy treatment record, not an image"),
    ("Treatment Record", "a radiotherapy treatment record, not an image"),
    ("Waveform", "a DICOM waveform recording (for example an ECG), not an image"),
    ("Raw Data", "a DICOM raw data object (vendor acquisition data), not an image"),
    ("Spatial Registration", "a DICOM spatial registration (alignment between images), not an image"),
    ("Surface Segmentation", "a DICOM surface segmentation (a 3-D mesh), not an image"),
    ("Measurement Report", "a DICOM measurement report (a document, not an image)"),
)


def describe_non_image_object(sop_class_name: str) -> str | None:
    """What a pixel-less DICOM object is, from its SOP Class name; None when it is not a known kind."""
    for fragment, description in _NON_IMAGE_OBJECTS:
        if fragment.lower() in (sop_class_name or "").lower():
            return description
    return None


def _ensure_transfer_syntax(ds: Any) -> Any:
    """Make sure ``ds.file_meta.TransferSyntaxUID`` exists (headerless files lack it)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom import uid

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if meta.get("TransferSyntaxUID"):
        return meta.TransferSyntaxUID
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if little is False:
        tsuid = uid.ExplicitVRBigEndian
    elif implicit is False:
        tsuid = uid.ExplicitVRLittleEndian
    else:
        tsuid = uid.ImplicitVRLittleEndian
    meta.TransferSyntaxUID = tsuid
    return tsuid


def _check_decoder(tsuid: Any) -> None:
    """Raise a clear IngestError when no installed plugin can decode ``tsuid``."""
    from pydicom.pixels import get_decoder

    name = _uid_name(tsuid)
    try:
        decoder = get_decoder(tsuid)
    except Exception:
        raise IngestError(
            f"The DICOM transfer syntax '{name}' is not supported: no pixel data decoder exists for it."
        ) from None
    if not decoder.is_available:
        missing = "; ".join(str(m) for m in decoder.missing_dependencies) or "a decoder plugin"
        plugins = sorted({m.split(" ")[0] for m in decoder.missing_dependencies})
        packages = ", ".join(_PLUGIN_PACKAGES.get(p, p) for p in plugins) or "a pydicom decoder plugin"
        raise IngestError(
            f"The DICOM transfer syntax '{name}' needs a decoder that is not installed "
            f"(install one of: {packages}). Details: {missing}."
        )


def _decode_first_frame(ds: Any, frames: int, tsuid: Any) -> np.ndarray:
    """Decode frame 0 only (multi-frame files are not decoded whole).

    The Rust RLE decoder in pylibjpeg-rle panics (a BaseException) on some corrupt streams
    instead of raising; pydicom's own RLE decoder then gets a second chance.
    """
    from pydicom import uid
    from pydicom.pixels import pixel_array

    index = 0 if frames > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pixel_array(ds, index=index)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)) or tsuid != uid.RLELossless:
                raise
            return pixel_array(ds, index=index, decoding_plugin="pydicom")


def _window_list(ds: Any) -> list[tuple[float, float]]:
    """(centre, width) pairs from Window Center / Window Width (both may be multi-valued)."""
    try:
        centers, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    except Exception:
        return []
    if centers is None or widths is None:
        return []
    from pydicom.multival import MultiValue

    centers = list(centers) if isinstance(centers, (list, tuple, MultiValue)) else [centers]
    widths = list(widths) if isinstance(widths, (list, tuple, MultiValue)) else [widths]
    windows = []
    for c, w in zip(centers, widths):
        try:
            c, w = float(c), float(w)
        except (TypeError, ValueError):
            continue
        if math.isfinite(c) and math.isfinite(w):
            windows.append((c, w))
    return windows


def _voi_lut_display(values: np.ndarray, ds: Any, index: int, raw: np.ndarray) -> np.ndarray | None:
    """Apply item ``index`` of the VOI LUT Sequence (PS3.3 C.11.2.1.1) to modality ``values``; None if absent/unusable.

    ``raw`` is the whole image's modality values (``values`` may be a per-code table of them); it decides
    whether a descriptor stored as US really means a negative first value.

    The table lookup is done here rather than with ``pydicom.pixels.apply_voi`` because pydicom
    3.0.2 builds its index array in the LUT's output type, so an 8-bit table with more than 256
    entries (common in CR/DX files) wraps its indices and displays garbage.
    """
    try:
        seq = ds.get("VOILUTSequence")
        if not seq or index >= len(seq):
            return None
        item = seq[index]
        descriptor = [int(v) for v in item.LUTDescriptor]
        table = item.get("LUTData")
        if table is None:
            return None
        entries = descriptor[0] or 2**16
        first = descriptor[1]
        if first >= 2**15 and raw.min(initial=0) < 0:
            first -= 2**16  # descriptor stored as US although the first value is signed
        if isinstance(table, (bytes, bytearray)):
            little = ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2"
            table = np.frombuffer(bytes(table)[: 2 * entries], dtype="<u2" if little else ">u2")
        else:
            table = np.asarray(list(table) if not isinstance(table, int) else [table], dtype=np.float64)
        if table.size == 0:
            return None
        table = table.astype(np.float32)
        lo, hi = float(table.min()), float(table.max())
        if hi <= lo:
            return None
        idx = np.clip(np.round(values) - first, 0, table.size - 1).astype(np.int64)
        return np.clip((table[idx] - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    except Exception:
        return None


def _spacing(ds: Any) -> tuple[tuple[float, float] | None, str | None]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            if value is None or len(value) != 2:
                continue
            row, col = float(value[0]), float(value[1])
        except Exception:
            continue
        if math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0:
            return (row, col), keyword
    return None, None


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
        return "" if value is None else str(value)
    except Exception:
        return ""


def load_dicom(
    ds: Any,
    filename: str | None,
    *,
    window_index: int = 0,
    window: tuple[float, float] | None = None,
    store_identifiers: bool = False,
    max_pixels: int,
) -> Study:
    """Turn a parsed DICOM dataset into a Study.

    Args:
        ds: pydicom Dataset.
        filename: Original file name, for the Study only.
        window_index: Which window (or VOI LUT table) of the file to apply.
        window: Explicit (centre, width) in modality units; overrides the file's windows.
        store_identifiers: Keep patient name/ID in ``metadata["identifiers"]``.
        max_pixels: Largest accepted rows x columns.

    Returns:
        The Study.

    Raises:
        IngestError: For missing pixel data, unsupported encodings, absurd sizes or corrupt data.
    """
    _refuse_without_pixels(ds)
    rows, cols, frames = _checked_geometry(ds, max_pixels)
    notices: list[str] = []
    arr = _read_pixels(ds, frames, notices)
    photometric = _text(ds, "PhotometricInterpretation").strip().upper() or "MONOCHROME2"
    bits = _int(ds, "BitsStored") or _int(ds, "BitsAllocated") or int(arr.dtype.itemsize * 8)
    modality = _text(ds, "Modality").strip().upper() or None
    view = _text(ds, "ViewPosition").strip().upper() or None
    metadata = technical_metadata(ds, store_identifiers=store_identifiers)
    shown = _display(ds, arr, photometric, bits, window, window_index, metadata, notices)
    notices.extend(_content_notices(ds, modality))
    spacing, spacing_source = _spacing(ds)
    if spacing_source:
        metadata["pixel_spacing_source"] = spacing_source
    return Study(
        study_id=shown.coded.image_hash if shown.coded is not None else pixel_hash(shown.image),
        image=shown.image,
        raw=shown.raw,
        source_format="dicom",
        filename=filename,
        modality=modality,
        view_position=view,
        pixel_spacing=spacing,
        original_size=(int(rows), int(cols)),
        bits=int(bits),
        windows=shown.windows,
        window_used=shown.window_used,
        metadata=metadata,
        notices=notices,
        synthetic=_is_synthetic(ds),
        _levels=shown.raw if shown.raw is not None else shown.levels.astype(np.float32),
        _invert=shown.invert,
        _voi_function=shown.voi_function,
        _coded=shown.coded,
    )


def _refuse_without_pixels(ds: Any) -> None:
    """Refuse a DICOM object with no pixel data, saying what it is (DICOMDIR, report, RT plan...)."""
    if any(k in ds for k in _PIXEL_KEYWORDS):
        return
    if "DirectoryRecordSequence" in ds or "Directory" in _kind(ds):
        raise IngestError(
            "This is a DICOMDIR (the index of a DICOM disc or folder), not an image; "
            "open one of the image files it lists instead."
        )
    kind = _kind(ds)
    what = describe_non_image_object(kind)
    if what:
        raise IngestError(
            f"This is {what}: it contains no image pixel data, so there is nothing to display or analyse."
        )
    hint = " (the file may be truncated)" if "Image Storage" in kind else ""
    raise IngestError(
        f"This DICOM file ({kind}) contains no image pixel data{hint}, so there is nothing to display."
    )


def _checked_geometry(ds: Any, max_pixels: int) -> tuple[int, int, int]:
    """(rows, columns, frames) from the header, refusing missing, absurd or oversized images."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or cols is None:
        raise IngestError("The DICOM image has no Rows/Columns; the file is incomplete or corrupt.")
    if rows <= 0 or cols <= 0:
        raise IngestError(f"The DICOM image has zero size ({rows}×{cols}).")
    if rows * cols > max_pixels:
        raise IngestError(
            f"The DICOM image is {cols}×{rows} pixels, more than the {max_pixels:,}-pixel limit; it was refused."
        )
    if min(rows, cols) < 2:
        raise IngestError(f"The DICOM image is {cols}×{rows} pixels: not a 2-D radiograph.")
    frames = _int(ds, "NumberOfFrames", 1) or 1
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    if frames < 0 or samples not in (1, 3):
        raise IngestError("The DICOM image header is inconsistent (frames or samples per pixel).")
    return rows, cols, frames


def _read_pixels(ds: Any, frames: int, notices: list[str]) -> np.ndarray:
    """Stored values of the first frame; decoder failures become plain-language IngestErrors."""
    tsuid = _ensure_transfer_syntax(ds)
    if "PixelData" in ds:
        _check_decoder(tsuid)
    try:
        arr = _decode_first_frame(ds, frames, tsuid)
    except IngestError:
        raise
    except MemoryError:
        raise IngestError("The DICOM image is too large to decode in the available memory.") from None
    except BaseException as exc:  # noqa: BLE001 - Rust decoders raise pyo3 PanicException
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise IngestError(
            f"The DICOM pixel data ({_uid_name(tsuid)}) is truncated or corrupt and could not "
            f"be decoded: {detail}"
        ) from None
    if frames > 1:
        notices.append(f"Multi-frame DICOM ({frames} frames): only the first frame is shown.")
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4) and arr.shape[0] > 1:
        arr = arr[0]  # decoders that ignored the frame index
        if frames <= 1:
            notices.append("The DICOM holds several frames; only the first is shown.")
    if arr.ndim not in (2, 3) or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise IngestError("The DICOM pixel data is not a 2-D image.")
    return arr


@dataclass
class _Display:
    """What the display pipeline made of the stored values.

    With ``codes`` set, ``image`` holds one display value per stored code until `_display` looks the image up
    (``coded``).
    """

    image: np.ndarray
    levels: np.ndarray
    raw: np.ndarray | None = None
    codes: np.ndarray | None = None
    coded: CodedImage | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)
    window_used: tuple[float, float] | None = None
    invert: bool = False
    voi_function: str = "LINEAR"


def _display(ds: Any, arr: np.ndarray, photometric: str, bits: int, window: tuple[float, float] | None,
             window_index: int, metadata: dict, notices: list[str]) -> _Display:
    """The [0, 1] display image of the stored values; malformed LUTs or windows become an IngestError."""
    voi_function = _text(ds, "VOILUTFunction").strip().upper() or "LINEAR"
    try:
        if photometric == "PALETTE COLOR" or arr.ndim == 3:
            shown = _colour_to_grey(arr, ds, photometric, bits, window, metadata, notices)
            shown.voi_function = voi_function
        else:
            shown = _greyscale_display(arr, ds, photometric, window, window_index, voi_function, metadata, notices)
    except IngestError:
        raise
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise IngestError(f"The DICOM display attributes (LUTs/windows) are invalid: {detail}") from None
    shown.image = np.nan_to_num(np.asarray(shown.image, dtype=np.float32), nan=0.0)
    if shown.codes is not None:
        shown.coded = CodedImage.build(shown.codes, shown.image)
        shown.image = shown.coded.image
    return shown


def _colour_to_grey(arr: np.ndarray, ds: Any, photometric: str, bits: int, window: tuple[float, float] | None,
                    metadata: dict, notices: list[str]) -> _Display:
    """Colour (RGB, YBR, palette) as luminance scaled by its bit depth; a user window applies to the luminance."""
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        try:
            depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception:
            depth = 16 if rgb.dtype.itemsize > 1 else 8
    else:
        rgb, depth = arr, bits
    levels = luminance(np.asarray(rgb)[..., :3])
    full_scale = float(2 ** min(max(depth, 1), 32) - 1)
    metadata.update(colour_measures(np.asarray(rgb)[..., :3], full_scale))
    image = np.clip(levels / full_scale, 0.0, 1.0)
    notices.append(f"Colour DICOM ({photometric}) converted to greyscale luminance.")
    metadata["voi"] = "none (colour image scaled by bit depth)"
    window_used = None
    if window is not None:
        image = apply_window(levels, window[0], window[1])
        window_used = (float(window[0]), float(window[1]))
    return _Display(image=image, levels=levels, window_used=window_used)


def _greyscale_display(arr: np.ndarray, ds: Any, photometric: str, window: tuple[float, float] | None,
                       window_index: int, voi_function: str, metadata: dict, notices: list[str]) -> _Display:
    """Modality LUT, then the VOI stage, then MONOCHROME1 inversion (bright = dense).

    Samples of at most 16 bits go through per-code tables (`_stored_codes`): every step is a function of the
    stored value alone, so each is computed once per possible value and the image is looked up, with the same
    numbers as computing it over every pixel.
    """
    coded = _stored_codes(arr)
    if coded is None:
        raw = values = _apply_modality_lut(arr, ds, notices)
    else:
        codes, stored = coded
        raw, values = _coded_modality_values(arr, codes, stored, ds, notices)
    windows = _window_list(ds)
    image, window_used, voi_function = _apply_voi(values, raw, ds, windows, window, window_index, voi_function,
                                                  metadata, notices)
    invert = photometric == "MONOCHROME1"
    if invert:
        image = 1.0 - image
    return _Display(image=image, levels=raw, raw=raw, codes=None if coded is None else coded[0], windows=windows,
                    window_used=window_used, invert=invert, voi_function=voi_function)


def _stored_codes(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes 0…2**bits − 1 of 8- or 16-bit greyscale samples and the stored value of each code; None otherwise.

    Unsigned samples are their own codes; signed ones are offset by half the range (two's complement with the
    sign bit flipped), so code 0 is the lowest value.
    """
    if arr.ndim != 2 or arr.dtype.kind not in "ui" or arr.dtype.itemsize > 2:
        return None
    unsigned = np.dtype(f"u{arr.dtype.itemsize}")
    span = 2 ** (8 * arr.dtype.itemsize)
    if arr.dtype.kind == "u":
        codes = arr.astype(unsigned.newbyteorder("="), copy=False)
        stored = np.arange(span, dtype=unsigned).astype(arr.dtype)
    else:
        codes = arr.astype(arr.dtype.newbyteorder("="), copy=False).view(unsigned) ^ unsigned.type(span // 2)
        stored = np.arange(-(span // 2), span // 2, dtype=arr.dtype.newbyteorder("="))
    return codes, stored


def _apply_modality_lut(arr: np.ndarray, ds: Any, notices: list[str]) -> np.ndarray:
    """Stored values → modality values (Modality LUT or rescale slope/intercept); non-finite values become 0."""
    from pydicom.pixels import apply_modality_lut

    levels = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    if not np.all(np.isfinite(levels)):
        levels = np.nan_to_num(levels, nan=0.0, posinf=0.0, neginf=0.0)
        notices.append("Some pixel values were not finite and were set to 0.")
    return levels


def _coded_modality_values(arr: np.ndarray, codes: np.ndarray, stored: np.ndarray, ds: Any,
                           notices: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`_apply_modality_lut` through a per-code table: (the image's modality values, the table).

    The image is converted arithmetically when that is provably the same as the table (a float32 offset of
    the stored values that reproduces every entry, as for slope 1 and a whole-number intercept), else looked up.
    """
    from pydicom.pixels import apply_modality_lut

    table = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    finite = np.isfinite(table)
    if not finite.all():
        if not finite[codes].all():
            notices.append("Some pixel values were not finite and were set to 0.")
        table = np.nan_to_num(table, nan=0.0, posinf=0.0, neginf=0.0)
    as_float = stored.astype(np.float32)
    offset = table[0] - as_float[0]
    if np.array_equal(as_float + offset, table):
        raw = arr.astype(np.float32)
        if offset:
            raw += offset
        return raw, table
    return lookup(table, codes), table


def _apply_voi(values: np.ndarray, raw: np.ndarray, ds: Any, windows: list[tuple[float, float]],
               window: tuple[float, float] | None, window_index: int, voi_function: str, metadata: dict,
               notices: list[str]) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """VOI stage: the user's window, else the file's VOI LUT table, else its window, else an automatic one.

    ``values`` are the modality values transformed (the image's, or a per-code table of them); ``raw`` is the
    image's, for the statistics some choices need. Returns the [0, 1] transform of ``values``, the window used
    (None for a LUT table) and the VOI LUT function applied.
    """
    if window is not None:
        image = apply_window(values, window[0], window[1], voi_function)
        metadata["voi"] = "window (user)"
        return image, (float(window[0]), float(window[1])), voi_function
    image = _voi_lut_display(values, ds, window_index, raw)
    if image is not None:
        metadata["voi"] = f"VOI LUT sequence item {window_index}"
        return image, None, voi_function
    if windows:
        index = window_index
        if not 0 <= index < len(windows):
            notices.append(f"Window {index + 1} does not exist (the file has {len(windows)}); the first was used.")
            index = 0
        try:
            image = apply_window(values, *windows[index], voi_function)
            metadata["voi"] = f"window {index} from file"
            return image, windows[index], voi_function
        except IngestError:
            notices.append("The window stored in the file is invalid; an automatic window was used.")
    return _automatic_window(values, raw, windows, metadata, notices)


def _automatic_window(values: np.ndarray, raw: np.ndarray, windows: list[tuple[float, float]], metadata: dict,
                      notices: list[str]) -> tuple[np.ndarray, tuple[float, float], str]:
    """A linear window over the 0.5th–99.5th percentile of the image's modality values, applied to ``values``."""
    center, width = percentile_window(raw)
    voi_function = "LINEAR_EXACT"
    image = apply_window(values, center, width, voi_function)
    metadata["voi"] = "automatic (0.5–99.5 percentile)"
    if not windows:
        notices.append(
            "The file has no display window; an automatic window "
            "(0.5th–99.5th percentile of pixel values) was used."
        )
    return image, (center, width), voi_function


def _content_notices(ds: Any, modality: str | None) -> list[str]:
    """Warnings about what the file says it is: no or another modality, text burned into the pixels."""
    notices = []
    if modality is None:
        notices.append("The file does not state its modality; the input gate judges it by its content.")
    elif modality not in RADIOGRAPH_MODALITIES:
        notices.append(f"Modality {modality} is not a plain radiograph (CR/DX); the chest X-ray models were not "
                       "made for it.")
    if _text(ds, "BurnedInAnnotation").strip().upper() == "YES":
        notices.append(BURNED_IN_WARNING)
    return notices


def _is_synthetic(ds: Any) -> bool:
    """Whether the file labels itself a synthetic phantom."""
    return any(
        "SYNTHETIC" in _text(ds, keyword).upper()
        for keyword in ("ImageComments", "SeriesDescription", "StudyDescription")
    )

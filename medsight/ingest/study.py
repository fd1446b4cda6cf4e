"""The `Study` result object and the display (VOI) transform shared by every input format."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.ingest.errors import IngestError

#: VOI LUT functions defined in PS3.3 C.11.2.1.2 / C.11.2.1.3.
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def apply_window(
    raw: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Map modality values to display intensities with a DICOM window.

    Implements the VOI LUT functions of PS3.3 C.11.2.1.2 (LINEAR, the default) and
    C.11.2.1.3 (LINEAR_EXACT, SIGMOID) through pydicom's own implementation, with the output
    range fixed to [0, 1].

    Args:
        raw: Modality values (after Modality LUT / rescale), any shape.
        center: Window centre, in the same units as ``raw``.
        width: Window width, in the same units as ``raw`` (>= 1 for LINEAR, > 0 otherwise).
        function: VOI LUT function name (LINEAR, LINEAR_EXACT or SIGMOID).

    Returns:
        float32 array of the same shape with values in [0, 1] (0 = dark).

    Raises:
        IngestError: If the window or function is not valid.
    """
    from pydicom import Dataset
    from pydicom.pixels import apply_windowing

    try:
        center = float(center)
        width = float(width)
    except (TypeError, ValueError):
        raise IngestError("Window centre and width must be numbers.") from None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise IngestError("Window centre and width must be finite numbers.")
    function = (function or "LINEAR").strip().upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    if function == "LINEAR" and width < 1:
        raise IngestError(f"Window width must be at least 1 (got {width:g}).")
    if width <= 0:
        raise IngestError(f"Window width must be greater than 0 (got {width:g}).")

    # A one-bit unsigned "image" makes pydicom's output range exactly [0, 1].
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 1
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    out = apply_windowing(np.asarray(raw, dtype=np.float64), voi)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def percentile_window(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Robust (centre, width) spanning the ``low``–``high`` percentile range of ``values``.

    Used when a file carries no window of its own, with the LINEAR_EXACT function (PS3.3
    C.11.2.1.3.2), whose edges are exactly centre ± width/2 and which, unlike LINEAR, allows
    widths below 1 for data with a small value range. Large images are subsampled, which
    does not move the percentiles noticeably but keeps ingest fast.
    """
    sample = np.asarray(values)
    step = max(1, int(math.sqrt(sample.size / 1_000_000)))
    sample = sample[::step, ::step] if sample.ndim == 2 else sample.ravel()[:: step * step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.5, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if not hi > lo:
        return lo, 1.0  # flat image: any positive width shows it as mid-grey
    return (lo + hi) / 2.0, hi - lo


def _quantise(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype("<u2")


def pixel_hash(image: np.ndarray) -> str:
    """Stable 16-hex-digit id of a display image (quantised to 16 bits, shape included)."""
    quantised = _quantise(image)
    digest = _pixel_digest(quantised.shape)
    digest.update(memoryview(np.ascontiguousarray(quantised)))  # the same bytes, without a copy
    return digest.hexdigest()[:16]


def _pixel_digest(shape: tuple[int, ...]) -> Any:
    """The `pixel_hash` digest before the quantised pixels (fed whole, or row block by row block)."""
    digest = hashlib.sha256()
    digest.update(f"{shape[0]}x{shape[1]}:".encode())
    return digest


#: Rows looked up per step: the step's int64 codes (16 rows x 2,500 columns = 320 kB) stay in the CPU cache.
_LOOKUP_ROWS = 16


def lookup(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``table[codes]`` for a 2-D array of uint8/uint16 codes, in row blocks (numpy's take is several times
    faster with native int64 indices, and a block's indices stay in the cache)."""
    out = np.empty(codes.shape, dtype=table.dtype)
    for rows, index in _index_blocks(codes):
        np.take(table, index, out=out[rows], mode="clip")
    return out


def _index_blocks(codes: np.ndarray) -> Any:
    """(row slice, the codes of those rows as int64) for each block of `_LOOKUP_ROWS` rows; one buffer reused."""
    block = np.empty((min(_LOOKUP_ROWS, codes.shape[0]), codes.shape[1]), dtype=np.intp)
    for top in range(0, codes.shape[0], _LOOKUP_ROWS):
        rows = slice(top, min(top + _LOOKUP_ROWS, codes.shape[0]))
        index = block[: rows.stop - top]
        np.copyto(index, codes[rows])
        yield rows, index


@dataclass(frozen=True, eq=False)
class CodedImage:
    """A display image kept as its stored pixel codes and one display value per code: ``image == values[codes]``.

    A film of integer samples has at most 65,536 distinct stored values, so any per-pixel function of the
    display image (a rescale, a window, a byte conversion) can be computed exactly once per code and looked
    up, instead of in floating point over millions of pixels.

    Attributes:
        codes: uint8 or uint16 HxW codes (signed samples are offset so that the lowest value is code 0).
        values: float32 display value of each code (256 or 65,536 entries).
        image: The display image these describe.
        image_hash: `pixel_hash` of the image.
    """

    codes: np.ndarray
    values: np.ndarray
    image: np.ndarray
    image_hash: str

    @classmethod
    def build(cls, codes: np.ndarray, values: np.ndarray) -> CodedImage:
        """The coded image with its display image, ``values[codes]``, and that image's `pixel_hash`."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        per_value_quantised = _quantise(values)
        image = np.empty(codes.shape, dtype=np.float32)
        quantised = np.empty((min(_LOOKUP_ROWS, codes.shape[0]), codes.shape[1]), dtype=per_value_quantised.dtype)
        digest = _pixel_digest(codes.shape)
        # One pass over the codes; the hash takes each quantised block while it is in the cache.
        for rows, index in _index_blocks(codes):
            np.take(values, index, out=image[rows], mode="clip")
            block = quantised[: index.shape[0]]
            np.take(per_value_quantised, index, out=block, mode="clip")
            digest.update(memoryview(block))
        return cls(codes, values, image, digest.hexdigest()[:16])

    def describes(self, image: Any) -> bool:
        """Whether this is still the image in use (a re-windowed or replaced image is not)."""
        return image is self.image

    def map(self, per_value: Any) -> np.ndarray:
        """``per_value(image)`` for an elementwise function, computed once per code and looked up."""
        return lookup(np.asarray(per_value(self.values)), self.codes)


def _jsonable(value: Any) -> Any:
    """Convert numpy / pydicom scalar types into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


@dataclass
class Study:
    """One ingested image, ready for display and analysis.

    Attributes:
        study_id: Hash of the final display pixels (16 hex digits); same pixels, same id.
        image: float32 HxW in [0, 1], windowed, MONOCHROME2 convention (air dark, bone bright).
        raw: float32 modality values after Modality LUT / rescale (DICOM greyscale), else None.
        source_format: "png", "jpeg" or "dicom".
        filename: Name of the uploaded file, if known.
        modality: DICOM modality code (e.g. "CR", "DX"), None for PNG/JPEG.
        view_position: DICOM view position (e.g. "PA", "AP"), if known.
        pixel_spacing: (row, column) spacing in mm, if known.
        original_size: (height, width) of the stored image before any processing.
        bits: Bit depth of the stored samples (BitsStored for DICOM).
        windows: (centre, width) windows the file offers, in modality units.
        window_used: (centre, width) applied to ``image``, None when a VOI LUT table or plain
            bit-depth scaling was used.
        metadata: De-identified technical metadata (JSON-serialisable).
        notices: Warnings for the user (non-radiograph modality, first frame only, ...).
        synthetic: True for images marked as synthetic phantoms.
    """

    study_id: str
    image: np.ndarray
    raw: np.ndarray | None
    source_format: str
    filename: str | None
    modality: str | None
    view_position: str | None
    pixel_spacing: tuple[float, float] | None
    original_size: tuple[int, int]
    bits: int
    windows: list[tuple[float, float]] = field(default_factory=list)
    window_used: tuple[float, float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    synthetic: bool = False
    # Values the window/level control works on: modality values for greyscale DICOM, stored
    # grey levels (luminance) for PNG/JPEG and colour DICOM.
    _levels: np.ndarray | None = field(default=None, repr=False, compare=False)
    _invert: bool = field(default=False, repr=False, compare=False)
    _voi_function: str = field(default="LINEAR", repr=False, compare=False)
    _coded: CodedImage | None = field(default=None, repr=False, compare=False)

    @property
    def coded_image(self) -> CodedImage | None:
        """The display image as stored codes and per-code values, when ingest kept them and ``image`` is unchanged."""
        coded = self._coded
        return coded if coded is not None and coded.describes(self.image) else None

    @property
    def value_range(self) -> tuple[float, float] | None:
        """(min, max) of the values the window applies to, for a window/level slider."""
        levels = self._levels if self._levels is not None else self.raw
        if levels is None or levels.size == 0:
            return None
        return float(np.nanmin(levels)), float(np.nanmax(levels))

    def to_dict(self) -> dict[str, Any]:
        """Everything except pixel arrays, as plain JSON types."""
        data = {
            "study_id": self.study_id,
            "source_format": self.source_format,
            "filename": self.filename,
            "modality": self.modality,
            "view_position": self.view_position,
            "pixel_spacing": self.pixel_spacing,
            "original_size": self.original_size,
            "image_size": tuple(self.image.shape[:2]),
            "bits": self.bits,
            "windows": self.windows,
            "window_used": self.window_used,
            "value_range": self.value_range,
            "metadata": self.metadata,
            "notices": self.notices,
            "synthetic": self.synthetic,
        }
        return _jsonable(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any], image: np.ndarray, raw: np.ndarray | None = None) -> Study:
        """Rebuild a study from `to_dict` output and the pixel arrays `to_dict` leaves out.

        Keys `to_dict` derives from the pixels (image_size, value_range) and unknown keys are
        ignored; JSON lists become the tuples the fields hold. The window/level state of the
        original file is not part of `to_dict`, so the result re-windows only from ``raw``.

        Args:
            data: A `to_dict` result (possibly read back from JSON).
            image: The display image (float32 HxW in [0, 1]).
            raw: Modality values, if kept.

        Returns:
            A new Study; ``data`` is not modified.
        """
        names = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
        values = {key: value for key, value in data.items() if key in names}
        for key in ("original_size", "pixel_spacing", "window_used"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        values["windows"] = [tuple(w) if isinstance(w, list) else w for w in values.get("windows") or []]
        values["metadata"] = dict(values.get("metadata") or {})
        values["notices"] = list(values.get("notices") or [])
        values.update(image=image, raw=raw)
        return cls(**values)

    def with_window(self, center: float, width: float) -> Study:
        """Re-render the display image with another window (the UI window/level control).

        The window is in modality units for greyscale DICOM and in stored grey levels
        (0–255 or 0–65535) for PNG/JPEG. MONOCHROME1 images stay inverted. Because the
        display pixels change, the returned study has a new ``study_id``.

        Args:
            center: Window centre.
            width: Window width.

        Returns:
            A new Study; this one is unchanged.

        Raises:
            IngestError: If the window is invalid or there are no values to window.
        """
        levels = self._levels if self._levels is not None else self.raw
        if levels is None:
            raise IngestError("This image has no stored values to re-window.")
        image = apply_window(levels, center, width, self._voi_function)
        if self._invert:
            image = 1.0 - image
        return dataclasses.replace(
            self,
            image=image,
            study_id=pixel_hash(image),
            window_used=(float(center), float(width)),
            notices=list(self.notices),
            metadata=dict(self.metadata),
            windows=list(self.windows),
            _coded=None,
        )

    def thumbnail_png(self, size: int = 256) -> bytes:
        """PNG bytes of the display image scaled to fit in ``size`` x ``size`` pixels."""
        from PIL import Image

        grey = np.round(np.clip(self.image, 0.0, 1.0) * 255.0).astype(np.uint8)
        thumb = Image.fromarray(grey)
        thumb.thumbnail((max(1, int(size)), max(1, int(size))), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        thumb.save(out, format="PNG")
        return out.getvalue()


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an HxWx3 array, kept in float so 16-bit precision survives."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def colour_measures(rgb: np.ndarray, full_scale: float = 255.0) -> dict[str, Any]:
    """How colourful an RGB image is, measured before it is reduced to luminance.

    ``colourfulness`` is the Hasler–Süsstrunk metric (2003) on a 0–255 scale: about 0 for a grey
    image stored as RGB, ~15 "slightly", ~33 "moderately" and >45 "highly" colourful.
    ``chromatic_fraction`` is the share of pixels whose channels differ by more than 10% of full
    scale (a small coloured annotation on a grey film keeps it low). Large images are subsampled.

    Args:
        rgb: HxWx3 array (any numeric type).
        full_scale: The value of full intensity (255 for 8-bit, 65535 for 16-bit).

    Returns:
        ``{"colour": bool, "colourfulness": float, "chromatic_fraction": float}``; ``colour`` is
        True when any pixel's channels differ at all.
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[-1] < 3 or arr.size == 0:
        return {"colour": False, "colourfulness": 0.0, "chromatic_fraction": 0.0}
    step = max(1, int(math.sqrt(arr.shape[0] * arr.shape[1] / 250_000)))
    sample = arr[::step, ::step, :3].astype(np.float32) * (255.0 / max(float(full_scale), 1.0))
    r, g, b = sample[..., 0], sample[..., 1], sample[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    colourfulness = float(
        math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
    )
    spread = sample.max(axis=-1) - sample.min(axis=-1)
    return {
        "colour": bool(np.any(spread > 0)),
        "colourfulness": round(colourfulness, 3),
        "chromatic_fraction": round(float(np.mean(spread > 25.5)), 4),
    }

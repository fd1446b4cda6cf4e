"""What the reading-room viewer shows: a study's pixel values, windows, calibration and map layers.

`viewer_payload` turns a `medsight.ingest.Study` (and optional maps) into a `ViewerPayload`; `pack` writes it as
one binary message the viewer decodes without JSON number lists:

    b"MSVIEW01" | uint32 little-endian header length | header (UTF-8 JSON) | padding to 8 | blocks

The header names each block (offset, length, dtype, shape). The image block holds modality values (the
DICOM Modality LUT / rescale applied, before any VOI window), at the stored resolution, as int16 / uint16
when they are whole numbers in range, else float32. Maps are uint8 (0–255 over 0–1) at their own
resolution, each with the image rectangle it covers, so the viewer scales them onto the image exactly.

No Streamlit here: the component wrapper is `components.viewer`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

MAGIC = b"MSVIEW01"

#: Chest presets as percentile ranges of the film's own values: projection radiograph values have no
#: fixed unit (unlike CT's Hounsfield units), so fixed numbers would mean nothing across detectors.
#: Ranges are for MONOCHROME2 order (dense = high); MONOCHROME1 films use the mirrored ranges.
CHEST_PRESETS: tuple[tuple[str, float, float], ...] = (
    ("Lung", 1.0, 65.0),
    ("Mediastinum", 35.0, 99.8),
    ("Bone", 0.1, 99.95),
)
AUTO_PERCENTILES = (0.5, 99.5)


@dataclass
class ViewerPayload:
    """Header (JSON-ready dict) and named binary blocks of one viewer message."""

    header: dict[str, Any]
    blocks: dict[str, np.ndarray] = field(default_factory=dict)


def display_values(study: Any) -> np.ndarray:
    """The values window/level applies to: modality values for greyscale DICOM, grey levels otherwise."""
    levels = getattr(study, "raw", None)
    if levels is None:
        levels = getattr(study, "_levels", None)
    if levels is None:  # a study without stored values: its display image, as 0–65535
        return np.round(np.clip(np.asarray(study.image, dtype=np.float32), 0, 1) * 65535.0).astype(np.float32)
    return np.asarray(levels, dtype=np.float32)


def _compact(values: np.ndarray) -> np.ndarray:
    """The smallest exact typed array for the values: uint16 / int16 for whole numbers in range, else float32."""
    lo, hi = (float(values.min(initial=0.0)), float(values.max(initial=0.0))) if values.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    for dtype, low, high in ((np.uint16, 0, 65535), (np.int16, -32768, 32767)):
        if lo >= low and hi <= high:
            candidate = values.astype(dtype)
            if np.array_equal(candidate, values):  # whole numbers: exact in 16 bits
                return candidate
            break
    return values.astype(np.float32)


def _percentiles(values: np.ndarray, qs: Iterable[float]) -> list[float]:
    step = max(1, int(math.sqrt(values.size / 250_000)))  # a subsample moves percentiles negligibly
    sample = values[::step, ::step].ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return [0.0 for _ in qs]
    return [float(v) for v in np.percentile(sample, list(qs))]


def _window_from_range(lo: float, hi: float) -> tuple[float, float]:
    width = max(hi - lo, 1e-3)
    return (lo + hi) / 2.0, width


def voi_presets(study: Any, values: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Window presets: the file's own VOI windows first, then "Auto" (percentiles), then chest presets.

    Each preset is {"name", "center", "width", "source"} in the units of `display_values`.
    """
    values = display_values(study) if values is None else values
    presets: list[dict[str, Any]] = []
    explanations = (getattr(study, "metadata", None) or {}).get("window_explanations")
    if isinstance(explanations, str):
        explanations = [explanations]
    for i, (center, width) in enumerate(getattr(study, "windows", None) or []):
        name = str(explanations[i]).strip() if explanations and i < len(explanations) and explanations[i] else ""
        presets.append({"name": name or f"Window {i + 1}", "center": float(center), "width": float(width),
                        "source": "header"})
    mirrored = bool(getattr(study, "_invert", False))
    wanted = [AUTO_PERCENTILES[0], AUTO_PERCENTILES[1]]
    for _, lo, hi in CHEST_PRESETS:
        wanted += [100 - hi, 100 - lo] if mirrored else [lo, hi]
    found = _percentiles(values, wanted)
    center, width = _window_from_range(found[0], found[1])
    presets.append({"name": "Auto", "center": center, "width": width, "source": "auto (0.5–99.5 percentile)"})
    for i, (name, lo, hi) in enumerate(CHEST_PRESETS):
        center, width = _window_from_range(found[2 + 2 * i], found[3 + 2 * i])
        presets.append({"name": name, "center": center, "width": width,
                        "source": f"chest preset ({lo:g}–{hi:g} percentile of this film)"})
    return presets


def _pair(value: Any) -> tuple[float, float] | None:
    try:
        row, col = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0:
        return row, col
    return None


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def calibration(study: Any) -> dict[str, Any]:
    """Which spacing measurements use, and where it is calibrated.

    PixelSpacing is used when present (PS3.3 C.7.6.3 / 10.7.1.3): when it equals ImagerPixelSpacing the file
    made no magnification correction, so it is at the detector; when it differs, or a calibration type is
    given, it is corrected to the patient. ImagerPixelSpacing alone is at the detector (the patient is
    magnified onto it, so distances read slightly large). Without either, measurements are in pixels.
    """
    meta = getattr(study, "metadata", None) or {}
    pixel = _pair(meta.get("pixel_spacing"))
    imager = _pair(meta.get("imager_pixel_spacing"))
    if pixel is None and imager is None and meta.get("pixel_spacing_source") is None:
        pixel = _pair(getattr(study, "pixel_spacing", None))  # a Study built without the metadata keys
    if pixel is not None:
        calibrated_type = meta.get("pixel_spacing_calibration_type")
        if calibrated_type or (imager is not None and not np.allclose(pixel, imager, rtol=1e-6)):
            described = meta.get("pixel_spacing_calibration_type") or "differs from ImagerPixelSpacing"
            plane, note = "patient", f"PixelSpacing, corrected to the patient plane ({str(described).lower()})"
        elif imager is not None:
            plane, note = "detector", "PixelSpacing (equal to ImagerPixelSpacing): at the detector, not magnification-corrected"
        else:
            plane, note = "unstated", "PixelSpacing (the file does not say where it is calibrated)"
        return {"calibrated": True, "source": "PixelSpacing", "row_mm": pixel[0], "col_mm": pixel[1],
                "plane": plane, "unit": "mm", "label": note}
    if imager is not None:
        label = "ImagerPixelSpacing: at the detector, not magnification-corrected"
        magnification = _positive(meta.get("estimated_magnification"))
        if magnification is not None and magnification != 1.0:
            # PS3.3 C.8.11.7: dividing by the file's estimate gives lengths at the patient; the reader decides.
            label += f" (the file estimates the magnification at ×{magnification:.2f})"
        return {"calibrated": True, "source": "ImagerPixelSpacing", "row_mm": imager[0], "col_mm": imager[1],
                "plane": "detector", "unit": "mm", "label": label, "estimated_magnification": magnification}
    return {"calibrated": False, "source": None, "row_mm": None, "col_mm": None, "plane": None, "unit": "px",
            "label": "uncalibrated: no pixel spacing in the file, lengths in image pixels"}


def map_layer(key: str, heat: np.ndarray, image_shape: tuple[int, int], *, title: str = "",
              caption: str = "", extent: tuple[float, float, float, float] | None = None, visible: bool = False,
              opacity: float | None = None) -> tuple[dict, np.ndarray]:
    """One overlay layer: its header entry and uint8 block.

    Args:
        key: stable id of the map (e.g. "patch_deviation" or "pathology:Effusion").
        heat: float HxW map in [0, 1], at any resolution.
        image_shape: (rows, columns) of the study's image.
        extent: (x0, y0, x1, y1) image-pixel rectangle the map covers, edges not centres; default the whole
            image, (0, 0, columns, rows).

    Raises:
        ValueError: for a map that is not 2-D or an empty extent.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"a map must be a non-empty 2-D array; got shape {heat.shape}")
    rows, cols = int(image_shape[0]), int(image_shape[1])
    x0, y0, x1, y1 = extent if extent is not None else (0.0, 0.0, float(cols), float(rows))
    if not (x1 > x0 and y1 > y0):
        raise ValueError("a map's extent must have a positive width and height")
    quantised = np.rint(np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    # Drawn like the PNG maps (medsight.explain.render.overlay_alpha): transparent up to the threshold (the
    # 30th percentile at first), then opacity rising as a power of the value above it.
    from medsight.explain.render import ALPHA_GAMMA, ALPHA_PERCENTILE, DEFAULT_OPACITY

    threshold = float(np.percentile(quantised, ALPHA_PERCENTILE)) / 255.0
    entry = {"key": key, "title": title or key, "caption": caption, "threshold": round(threshold, 3),
             "opacity": float(DEFAULT_OPACITY if opacity is None else opacity), "gamma": ALPHA_GAMMA,
             "visible": bool(visible),
             "rows": int(heat.shape[0]),
             "columns": int(heat.shape[1]), "extent": [float(x0), float(y0), float(x1), float(y1)],
             "aligned": heat.shape == (rows, cols) and extent is None}
    return entry, quantised


def _colour_table() -> list[list[int]]:
    from medsight.explain.render import LUT  # the same colours as the maps in the PNGs and the PDF

    return np.asarray(LUT, dtype=np.uint8).tolist()


def viewer_payload(study: Any, maps: Mapping[str, Any] | None = None, *, window: tuple[float, float] | None = None,
                   show_maps: bool = False, link_group: str | None = None) -> ViewerPayload:
    """The viewer's payload for a study and its image-space maps.

    Args:
        study: a `medsight.ingest.Study`.
        maps: key → a `HeatmapResult`-like object (``heat``, ``title``, ``caption``, ``kind``) or a plain
            array. The paper's latent attention is not an image-space map and is left out.
        window: (centre, width) to open with; default the study's current window, else the first preset.
        show_maps: open with the map layers shown (at the map's own opacity when it has one).
        link_group: name of a group of viewers on the page whose zoom, pan and window follow each other
            (the window only between films of the same modality and photometric interpretation).
    """
    values = display_values(study)
    pixels = _compact(values)
    rows, cols = int(pixels.shape[0]), int(pixels.shape[1])
    presets = voi_presets(study, values)
    # A study reopened from History keeps only its displayed image (already windowed): the file's windows are in
    # values it no longer has, so it opens at the full range of what was displayed.
    displayed_only = getattr(study, "raw", None) is None and getattr(study, "_levels", None) is None
    bits = 16 if displayed_only else int(getattr(study, "bits", 8) or 8)
    if displayed_only:
        presets = [p for p in presets if p["source"] != "header"]
    if getattr(study, "raw", None) is None:  # PNG/JPEG: the stored range is how the file looks by itself
        full = float(2 ** bits - 1)
        presets.insert(0, {"name": "Full range", "center": full / 2.0, "width": full + 1.0,
                           "source": "displayed range" if displayed_only else "stored range"})
    opened = None if displayed_only else getattr(study, "window_used", None)
    current = window or opened or (presets[0]["center"], presets[0]["width"])
    units = ("modality values (Modality LUT applied)" if getattr(study, "raw", None) is not None
             else "displayed grey levels (the original values are not stored)" if displayed_only
             else "stored grey levels")
    header: dict[str, Any] = {
        "study_id": str(getattr(study, "study_id", "")),
        "filename": getattr(study, "filename", None),
        "source_format": getattr(study, "source_format", None),
        "modality": getattr(study, "modality", None),
        "photometric": (getattr(study, "metadata", None) or {}).get("photometric"),
        "bits": bits,
        "link_group": str(link_group) if link_group else None,
        "rows": rows,
        "columns": cols,
        "min": float(pixels.min(initial=0)),
        "max": float(pixels.max(initial=0)),
        "units": units,
        "invert": bool(getattr(study, "_invert", False)),
        "window": {"center": float(current[0]), "width": float(current[1])},
        "presets": presets,
        "calibration": calibration(study),
        "colour_table": _colour_table(),
        "maps": [],
    }
    blocks: dict[str, np.ndarray] = {"image": pixels}
    for key, item in (maps or {}).items():
        if getattr(item, "kind", None) == "paper_attention":
            continue  # attention over latent segments, not image regions
        heat = getattr(item, "heat", item)
        entry, block = map_layer(str(key), heat, (rows, cols), title=str(getattr(item, "title", "") or key),
                                 caption=str(getattr(item, "caption", "") or ""), visible=show_maps,
                                 opacity=getattr(item, "opacity", None))
        header["maps"].append(entry)
        blocks[f"map:{key}"] = block
    return ViewerPayload(header, blocks)


def pack(payload: ViewerPayload) -> bytes:
    """The payload as one binary message (see the module docstring); the header gains the block table and a
    content id, so the viewer keeps its state when the same payload arrives again."""
    table, chunks, offset = [], [], 0
    for name, array in payload.blocks.items():
        data = np.ascontiguousarray(array)
        data = data.astype(data.dtype.newbyteorder("<"), copy=False)
        raw = memoryview(data).cast("B")  # no copy until the final join
        table.append({"name": name, "offset": offset, "length": raw.nbytes, "dtype": data.dtype.name,
                      "shape": list(data.shape)})
        pad = (-raw.nbytes) % 8
        chunks += [raw, b"\0" * pad]
        offset += raw.nbytes + pad
    digest = hashlib.blake2b(digest_size=8)
    for chunk in chunks:
        digest.update(chunk)
    header = dict(payload.header, blocks=table)
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    header["content_id"] = digest.hexdigest()[:16]
    text = json.dumps(header, default=_json_default).encode("utf-8")
    text += b" " * ((-(len(MAGIC) + 4 + len(text))) % 8)
    return b"".join([MAGIC, struct.pack("<I", len(text)), text, *chunks])


def unpack(message: bytes) -> ViewerPayload:
    """Read a message written by `pack` (for tests and tools)."""
    if message[:8] != MAGIC:
        raise ValueError("not a viewer message")
    (length,) = struct.unpack("<I", message[8:12])
    header = json.loads(message[12:12 + length].decode("utf-8"))
    base = 12 + length
    blocks = {}
    for entry in header.get("blocks", []):
        start = base + entry["offset"]
        blocks[entry["name"]] = np.frombuffer(message[start:start + entry["length"]],
                                              dtype=np.dtype(entry["dtype"]).newbyteorder("<")).reshape(entry["shape"])
    return ViewerPayload(header, blocks)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


def report_measurements(state: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The viewer's measurements in the form the PDF and the DICOM SR take.

    Each: kind ("length" or "angle"), value, unit ("mm", "px" or "deg"), calibrated, calibration (which spacing
    was used and where it applies, or "uncalibrated"), label (the text the viewer showed). An uncalibrated length
    stays in pixels: it is printed as such and never written as millimetres.
    """
    out = []
    for m in (state or {}).get("measurements") or []:
        try:
            value = float(m["value"])
        except (KeyError, TypeError, ValueError):
            continue
        kind = "angle" if m.get("type") == "angle" else "length"
        unit = "deg" if kind == "angle" else ("mm" if m.get("calibrated") else "px")
        calibration = ("not applicable" if kind == "angle" else
                       str(m.get("calibration") or m.get("spacing_source") or "") if unit == "mm" else "uncalibrated")
        label = m.get("text") or (f"{value:.1f}°" if kind == "angle" else f"{value:.1f} {unit}")
        out.append({"kind": kind, "value": value, "unit": unit, "calibrated": unit != "px",
                    "calibration": calibration, "label": str(label)})
    return out

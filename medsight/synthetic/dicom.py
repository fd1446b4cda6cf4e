"""Write synthetic phantoms as DICOM files that exercise real-world ingest paths.

Covers CR / DX (and other modality strings for "unsupported modality" tests), 8-16 bit stored
pixels, MONOCHROME1 and MONOCHROME2, Modality LUT (rescale slope/intercept), one or several VOI
windows, an optional VOI LUT Sequence, multi-frame pixel data and compressed transfer syntaxes
through pydicom's own encoders (``Dataset.compress``). Fake patient identifiers are filled in so
de-identification can be tested; every file is marked "SYNTHETIC PHANTOM".

Stored pixel convention: a [0, 1] display image ``v`` becomes stored value ``round(v * (2**bits - 1))``
(MONOCHROME2) or its complement (MONOCHROME1), and modality value = stored * slope + intercept.
The default window spans the whole stored range, so the first window reproduces the phantom.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
import pydicom.uid as uid
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence

from medsight.synthetic import SYNTHETIC_LABEL, Phantom

__all__ = ["SOP_CLASSES", "UNCOMPRESSED_SYNTAXES", "available_compressed_syntaxes", "write_dicom"]

SOP_CLASSES = {
    "CR": uid.ComputedRadiographyImageStorage,
    "DX": uid.DigitalXRayImageStorageForPresentation,
}

UNCOMPRESSED_SYNTAXES = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
)

_LOSSLESS_ENCODERS = {
    uid.RLELossless: "RLELosslessEncoder",
    uid.JPEGLSLossless: "JPEGLSLosslessEncoder",
    uid.JPEG2000Lossless: "JPEG2000LosslessEncoder",
}


def available_compressed_syntaxes() -> list[str]:
    """Lossless compressed transfer syntaxes pydicom can encode with the installed plugins.

    Returns:
        UIDs among RLE Lossless, JPEG-LS Lossless and JPEG 2000 Lossless whose encoder is usable.
    """
    from pydicom.pixels import encoders

    out = []
    for ts, name in _LOSSLESS_ENCODERS.items():
        enc = getattr(encoders, name, None)
        if enc is not None and enc.is_available:
            out.append(ts)
    return out


def _frames_from(image_or_phantom: Phantom | np.ndarray, n_frames: int, bits_stored: int) -> tuple[np.ndarray, bool]:
    """Frames as (F, H, W); the flag says whether values are already stored integers."""
    img = image_or_phantom.image if isinstance(image_or_phantom, Phantom) else np.asarray(image_or_phantom)
    if img.ndim not in (2, 3) or min(img.shape[-2:]) < 1:
        raise ValueError(f"Expected a 2-D image or a (frames, rows, columns) stack, got shape {img.shape}.")
    is_int = np.issubdtype(img.dtype, np.integer)
    if is_int:
        if img.min() < 0 or img.max() > 2**bits_stored - 1:
            raise ValueError(f"Integer pixel values must lie in 0..{2**bits_stored - 1} for {bits_stored} bits stored.")
    else:
        img = np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0)
    if img.ndim == 3:
        return img, is_int
    if n_frames < 1:
        raise ValueError("n_frames must be at least 1.")
    if n_frames == 1:
        return img[None], is_int
    # Extra frames: the same view at slightly different exposures, like a repeated acquisition.
    frames = [img]
    for k in range(1, n_frames):
        f = img.astype(np.float64) * (1.0 - 0.04 * k)
        frames.append(np.round(f).astype(img.dtype) if is_int else f)
    return np.stack(frames), is_int


def _entropy(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
    return h.hexdigest()


def _default_voi_lut(lo: int, hi: int) -> np.ndarray:
    """A sigmoid VOI LUT over modality values lo..hi (16-bit output)."""
    v = np.arange(lo, hi + 1, dtype=np.float64)
    mid, spread = (lo + hi) / 2.0, max((hi - lo) / 8.0, 1.0)
    return np.round(65535.0 / (1.0 + np.exp(-(v - mid) / spread))).astype(np.uint16)


def write_dicom(
    image_or_phantom: Phantom | np.ndarray,
    path: str | Path,
    *,
    modality: str = "CR",
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    windows: Sequence[tuple[float, float]] | None = None,
    window_explanations: Sequence[str] | None = None,
    transfer_syntax: str = uid.ExplicitVRLittleEndian,
    n_frames: int = 1,
    patient_name: str = "DOE^JANE",
    patient_id: str = "PID-0001",
    view_position: str = "PA",
    pixel_spacing: tuple[float, float] = (0.2, 0.2),
    voi_lut: bool | np.ndarray | None = None,
    study_date: str | None = None,
) -> Path:
    """Write a phantom (or image) as a DICOM file.

    Args:
        image_or_phantom: a Phantom, a float image in [0, 1] (display convention), an integer array of
            stored values, or a (frames, rows, columns) stack of either.
        path: output file; parent folders are created.
        modality: "CR" or "DX" (their X-ray SOP classes); any other value writes Secondary Capture with
            that Modality, for "unsupported modality" tests.
        bits_stored: 8 to 16 (8 uses 8 bits allocated, otherwise 16).
        photometric: "MONOCHROME2" (bright = dense) or "MONOCHROME1" (stored inverted).
        rescale_slope: Modality LUT slope (modality value = stored * slope + intercept).
        rescale_intercept: Modality LUT intercept.
        windows: VOI windows as (center, width) in modality units, first = default. None: one window
            spanning the full stored range.
        window_explanations: one label per window (default "WINDOW 1", ...).
        transfer_syntax: an uncompressed syntax, or RLE / JPEG-LS / JPEG 2000 Lossless (see
            ``available_compressed_syntaxes``).
        n_frames: frames to write for a 2-D input (extra frames vary the exposure slightly).
        patient_name: fake PatientName.
        patient_id: fake PatientID.
        view_position: "PA", "AP", ...
        pixel_spacing: (row, column) spacing in mm.
        voi_lut: True for a sigmoid VOI LUT Sequence over the modality range, or an array of LUT
            output values (one per modality value starting at the lowest one).
        study_date: StudyDate/AcquisitionDate as YYYYMMDD (e.g. to date a prior before its follow-up);
            None derives a date from the pixels.

    Returns:
        The written path.

    Raises:
        ValueError: unsupported bit depth, photometric interpretation, transfer syntax, bad windows or
            pixel values out of range.
        RuntimeError: the compressed syntax has no usable encoder installed.
    """
    bits_stored = _checked_bits(bits_stored, photometric, rescale_slope)
    bits_allocated = 8 if bits_stored == 8 else 16
    stored = _stored_pixels(image_or_phantom, n_frames, bits_stored, bits_allocated, photometric)
    lo_mod, hi_mod = _modality_range(rescale_slope, rescale_intercept, bits_stored)
    windows, explanations = _window_settings(windows, window_explanations, lo_mod, hi_mod, rescale_slope)
    ids = _identifiers(stored, modality, bits_stored, photometric, rescale_slope, rescale_intercept, windows,
                       transfer_syntax, patient_id, view_position, voi_lut)
    if study_date is not None:
        ids["date"] = str(study_date)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _new_file(path, ids)
    _describe_study(ds, ids, modality, patient_name, patient_id, view_position, pixel_spacing, photometric)
    _describe_pixels(ds, stored, bits_allocated, bits_stored, photometric, rescale_slope, rescale_intercept,
                     windows, explanations)
    if voi_lut is not None and voi_lut is not False:
        ds.VOILUTSequence = _voi_lut_sequence(voi_lut, lo_mod, hi_mod)
    ts = _encode_pixels(ds, stored, transfer_syntax, bits_allocated)
    _save(ds, path, ts)
    return path


def _checked_bits(bits_stored: int, photometric: str, rescale_slope: float) -> int:
    """Bits stored as an int, after refusing bit depths, photometrics and slopes DICOM does not allow."""
    if not 8 <= int(bits_stored) <= 16:
        raise ValueError("bits_stored must be between 8 and 16.")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError("photometric must be MONOCHROME1 or MONOCHROME2.")
    if rescale_slope == 0:
        raise ValueError("rescale_slope must be non-zero.")
    return int(bits_stored)


def _stored_pixels(image_or_phantom: Phantom | np.ndarray, n_frames: int, bits_stored: int, bits_allocated: int,
                   photometric: str) -> np.ndarray:
    """Stored values (F, H, W) as the scanner would write them; MONOCHROME1 stores the complement."""
    maxval = 2**bits_stored - 1
    frames, is_int = _frames_from(image_or_phantom, n_frames, bits_stored)
    if not is_int:
        frames = np.round(frames * maxval)
    stored = frames.astype(np.uint8 if bits_allocated == 8 else np.uint16)
    if photometric == "MONOCHROME1":
        stored = (maxval - stored).astype(stored.dtype)
    return stored


def _modality_range(rescale_slope: float, rescale_intercept: float, bits_stored: int) -> tuple[float, float]:
    """Modality values of the lowest and highest stored value (Modality LUT applied)."""
    return rescale_intercept, rescale_intercept + rescale_slope * (2**bits_stored - 1)


def _window_settings(windows: Sequence[tuple[float, float]] | None, window_explanations: Sequence[str] | None,
                     lo_mod: float, hi_mod: float, rescale_slope: float) -> tuple[list[tuple[float, float]], list[str]]:
    """VOI windows (default: one spanning the whole modality range) and one explanation per window."""
    if windows is None:
        windows = (((lo_mod + hi_mod) / 2.0, abs(hi_mod - lo_mod) + abs(rescale_slope)),)
    windows = [(float(c), float(w)) for c, w in windows]
    if not windows or any(w < 1 for _, w in windows):
        raise ValueError("Each window needs a width of at least 1.")
    explanations = list(window_explanations or [f"WINDOW {i + 1}" for i in range(len(windows))])
    if len(explanations) != len(windows):
        raise ValueError("Give one explanation per window.")
    return windows, explanations


def _identifiers(stored: np.ndarray, modality: str, bits_stored: int, photometric: str, rescale_slope: float,
                 rescale_intercept: float, windows: list[tuple[float, float]], transfer_syntax: str,
                 patient_id: str, view_position: str, voi_lut: Any) -> dict[str, str]:
    """UIDs, SOP class, acquisition date/time and accession number, all derived from the content.

    The same pixels and patient give the same study and series; any other option gives another instance.
    """
    digest = _entropy(stored.tobytes(), modality, bits_stored, photometric, rescale_slope, rescale_intercept,
                      windows, str(transfer_syntax), patient_id, view_position, voi_lut is not None)
    content = _entropy(stored.tobytes())
    when = _dt.datetime(2024, 1, 1, 8, 0) + _dt.timedelta(minutes=int(content[:8], 16) % (700 * 24 * 60))
    return {
        "study_uid": uid.generate_uid(entropy_srcs=[content, patient_id, "study"]),
        "series_uid": uid.generate_uid(entropy_srcs=[content, patient_id, "series", modality]),
        "sop_uid": uid.generate_uid(entropy_srcs=[digest, "instance"]),
        "sop_class": SOP_CLASSES.get(modality.upper(), uid.SecondaryCaptureImageStorage),
        "date": when.strftime("%Y%m%d"),
        "time": when.strftime("%H%M%S"),
        "accession": f"ACC{int(content[8:16], 16) % 10_000_000:07d}",
    }


def _new_file(path: Path, ids: dict[str, str]) -> FileDataset:
    """An empty DICOM file data set with its file meta information (Part 10 header)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ids["sop_class"]
    meta.MediaStorageSOPInstanceUID = ids["sop_uid"]
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid.PYDICOM_IMPLEMENTATION_UID
    return FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)


def _describe_study(ds: FileDataset, ids: dict[str, str], modality: str, patient_name: str, patient_id: str,
                    view_position: str, pixel_spacing: tuple[float, float], photometric: str) -> None:
    """Patient, study, series and equipment attributes, with fake identifiers and the SYNTHETIC label."""
    date, time = ids["date"], ids["time"]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = ids["sop_class"]
    ds.SOPInstanceUID = ids["sop_uid"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.AccessionNumber = ids["accession"]
    ds.Modality = modality.upper()
    if ids["sop_class"] == uid.SecondaryCaptureImageStorage:
        ds.ConversionType = "WSD"
    ds.Manufacturer = "MedSight"
    ds.ManufacturerModelName = "Synthetic chest phantom generator"
    ds.InstitutionName = "Springfield General Hospital"
    ds.InstitutionAddress = "742 Evergreen Terrace, Springfield"
    ds.ReferringPhysicianName = "SMITH^JOHN^^DR"
    ds.OperatorsName = "TECH^ALEX"
    ds.StudyDescription = "CHEST " + view_position.upper()
    ds.SeriesDescription = SYNTHETIC_LABEL
    ds.ImageComments = SYNTHETIC_LABEL
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19580412"
    ds.PatientSex = "F"
    ds.PatientAge = "066Y"
    ds.PatientAddress = "1 Example Road, Springfield"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position.upper()
    # Row direction points to the patient's left on a PA film, to the right on an AP film.
    ds.PatientOrientation = ["L", "F"] if view_position.upper() == "PA" else ["R", "F"]
    ds.StudyInstanceUID = ids["study_uid"]
    ds.SeriesInstanceUID = ids["series_uid"]
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"
    ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    ds.ImagerPixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    if ds.Modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME2" else -1


def _describe_pixels(ds: FileDataset, stored: np.ndarray, bits_allocated: int, bits_stored: int, photometric: str,
                     rescale_slope: float, rescale_intercept: float, windows: list[tuple[float, float]],
                     explanations: list[str]) -> None:
    """Image pixel, multi-frame, Modality LUT (rescale) and VOI window attributes."""
    n, rows, cols = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if n > 1:
        ds.NumberOfFrames = n
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
        ds.FrameTime = 1000.0
    ds.RescaleSlope = float(rescale_slope)
    ds.RescaleIntercept = float(rescale_intercept)
    ds.RescaleType = "US"
    ds.WindowCenter = windows[0][0] if len(windows) == 1 else [c for c, _ in windows]
    ds.WindowWidth = windows[0][1] if len(windows) == 1 else [w for _, w in windows]
    ds.WindowCenterWidthExplanation = explanations[0] if len(explanations) == 1 else explanations
    ds.VOILUTFunction = "LINEAR"


def _voi_lut_sequence(voi_lut: bool | np.ndarray, lo_mod: float, hi_mod: float) -> DicomSequence:
    """A one-item VOI LUT Sequence: the sigmoid default (True) or the given table, from the lowest modality value."""
    lo = int(np.floor(min(lo_mod, hi_mod)))
    hi = int(np.ceil(max(lo_mod, hi_mod)))
    data = _default_voi_lut(lo, hi) if voi_lut is True else np.asarray(voi_lut, dtype=np.uint16)
    if not 1 <= data.size <= 65536:
        raise ValueError("A VOI LUT needs 1 to 65536 entries.")
    item = Dataset()
    item.add(DataElement(0x00283002, "SS" if lo < 0 else "US", [data.size % 65536, lo, 16]))
    item.LUTExplanation = "SIGMOID"
    item.add(DataElement(0x00283006, "OW", data.astype("<u2").tobytes()))
    return DicomSequence([item])


def _encode_pixels(ds: FileDataset, stored: np.ndarray, transfer_syntax: str, bits_allocated: int) -> uid.UID:
    """Put the pixels in Pixel Data, raw or through pydicom's lossless encoders; returns the transfer syntax."""
    ts = uid.UID(str(transfer_syntax))
    pixels = stored if stored.shape[0] > 1 else stored[0]
    if ts in UNCOMPRESSED_SYNTAXES:
        ds.file_meta.TransferSyntaxUID = ts
        raw = pixels.astype(pixels.dtype.newbyteorder(">")) if ts == uid.ExplicitVRBigEndian else pixels
        ds.PixelData = raw.tobytes()
        ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    elif ts in _LOSSLESS_ENCODERS or ts in (uid.JPEGLSNearLossless, uid.JPEG2000):
        if ts in _LOSSLESS_ENCODERS and ts not in available_compressed_syntaxes():
            raise RuntimeError(f"No encoder is installed for {ts.name}; install the pydicom plugin for it.")
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
        ds.compress(ts, pixels, generate_instance_uid=False)
    else:
        raise ValueError(f"Unsupported transfer syntax for writing: {ts} ({ts.name}).")
    return ts


def _save(ds: FileDataset, path: Path, ts: uid.UID) -> None:
    """Write the file; big endian is re-encoded by dcmwrite from the little-endian data set in memory."""
    if ts == uid.ExplicitVRBigEndian:
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
    else:
        ds.save_as(path, enforce_file_format=True)

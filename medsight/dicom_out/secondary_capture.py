"""Secondary Capture images: each explanation map as an overlay picture with its warning burned in.

IOD: Secondary Capture Image (1.2.840.10008.5.1.4.1.1.7), RGB, one instance per map, in one series. Each map
is one rendered picture, which every PACS viewer shows; Multi-frame True Color SC would add frame modules for
no gain, and a Parametric Map would present a rendered explanation as if it were a quantitative image.
A study derived from a non-DICOM file also gets the analysed image itself as a greyscale SC, so the
report has an image in its own study to refer to.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from medsight.dicom_out.common import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSIS,
    SERIES_ANALYSED_IMAGE,
    SERIES_MAPS,
    Filing,
    ModelDescription,
    contributing_equipment,
    lt,
    mark_derived,
)

_BAND = (14, 17, 23)  # dark caption band, as the app's rendered figures
_WARNING = (255, 210, 0)
_TEXT = (235, 235, 235)


def _font(size: int, bold: bool = False) -> Any:
    """DejaVu Sans (ships with matplotlib), so the caption draws the same on every platform."""
    import matplotlib
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def burn_caption(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """`rgb` with a caption band added on top: the warning line first, then `lines` (the picture is not covered)."""
    from PIL import Image, ImageDraw

    height, width = rgb.shape[:2]
    size = max(11, width // 42)
    big, small = _font(int(size * 1.3), bold=True), _font(size)
    chars = max(20, int(width / (size * 0.58)))
    wrapped = [part for line in lines for part in textwrap.wrap(line, chars)]
    line_height = int(size * 1.35)
    band = int(size * 1.3 * 1.35) + line_height * len(wrapped) + size
    canvas = Image.new("RGB", (width, height + band), _BAND)
    canvas.paste(Image.fromarray(np.ascontiguousarray(rgb)), (0, band))
    draw = ImageDraw.Draw(canvas)
    y = size // 2
    draw.text((size // 2, y), NOT_FOR_DIAGNOSIS, font=big, fill=_WARNING)
    y += int(size * 1.3 * 1.35)
    for line in wrapped:
        draw.text((size // 2, y), line, font=small, fill=_TEXT)
        y += line_height
    return np.asarray(canvas, dtype=np.uint8)


def _orientation(filing: Filing) -> tuple[str, str] | None:
    value = (filing.source.image.get("PatientOrientation") if filing.source else None) or []
    value = [str(v) for v in value]
    return (value[0], value[1]) if len(value) == 2 and all(value) else None


def _sc(pixels: np.ndarray, photometric: str, filing: Filing, series_uid: str, series_number: int,
        instance_number: int, models: list[ModelDescription]) -> Any:
    """A highdicom SC image in the filing's study; the patient orientation is the source's, or left empty."""
    from highdicom.sc import SCImage
    from pydicom.uid import generate_uid

    orientation = _orientation(filing)
    ds = SCImage(
        pixel_array=pixels, photometric_interpretation=photometric, bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=filing.study_instance_uid, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=str(generate_uid()), instance_number=instance_number, manufacturer=MANUFACTURER,
        patient_orientation=orientation or ("L", "F"), contributing_equipment=contributing_equipment(models) or None,
        **filing.identity_kwargs(),
    )
    if orientation is None:
        ds.PatientOrientation = ""  # unknown: type 2, so empty rather than guessed
    _body_part(ds, filing)
    ds.ConversionType = "WSD"  # made on a workstation, not digitised
    ds.LossyImageCompression = "00"
    return ds


def _body_part(ds: Any, filing: Filing) -> None:
    """The chest is not a paired part, so Laterality stays absent; for an unknown part it is empty (unknown)."""
    part = str((filing.source.image.get("BodyPartExamined") if filing.source else "") or filing.body_part or "")
    if part:
        ds.BodyPartExamined = part[:16]
    else:
        ds.Laterality = ""


def _refer_to_source(ds: Any, source_header: Any) -> None:
    """SourceImageSequence: the image the picture was derived from."""
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    item = Dataset()
    item.ReferencedSOPClassUID = source_header.SOPClassUID
    item.ReferencedSOPInstanceUID = source_header.SOPInstanceUID
    purpose = Dataset()
    code = codes.DCM.SourceImageForImageProcessingOperation
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = code.value, code.scheme_designator, code.meaning
    item.PurposeOfReferenceCodeSequence = [purpose]
    ds.SourceImageSequence = [item]


def analysed_image(study: Any, filing: Filing) -> Any:
    """The analysed image as a greyscale SC, for a new study that has no DICOM source to refer to."""
    from pydicom.uid import generate_uid

    grey = np.rint(np.clip(np.asarray(study.image, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    ds = _sc(grey, "MONOCHROME2", filing, str(generate_uid()), SERIES_ANALYSED_IMAGE, 1, [])
    mark_derived(ds, filing, "Image as analysed by MedSight", [])
    ds.DerivationDescription = lt(filing.derived_from + "; display image as analysed, 8-bit greyscale", 1024)
    ds.ImageComments = lt(filing.derived_from)
    # The source file cannot say what text it carries in its pixels, so assume it may, unless DICOM said NO.
    said = str((getattr(study, "metadata", None) or {}).get("burned_in_annotation") or "").upper()
    ds.BurnedInAnnotation = "NO" if said == "NO" else "YES"
    return ds


def map_images(study: Any, maps: list[tuple[str, Any, ModelDescription]], filing: Filing, source_header: Any) -> list[Any]:
    """One RGB SC per map: the overlay at the image's resolution under a burned-in warning and model caption.

    Args:
        study: the analysed `Study` (its display image is the overlay's background).
        maps: (key, HeatmapResult, model that drew it) per map that may be shown.
        filing: where the objects go.
        source_header: the image the maps were computed on (for SourceImageSequence).
    """
    from medsight.explain.render import overlay
    from pydicom.uid import generate_uid

    series_uid = str(generate_uid())
    out = []
    for number, (key, heatmap, model) in enumerate(maps, start=1):
        image = heatmap.image if getattr(heatmap, "image", None) is not None else study.image
        lines = [heatmap.title or key, f"Model: {model.line}"]
        if heatmap.score_text:
            lines.append(heatmap.score_text)
        pixels = burn_caption(overlay(image, heatmap.heat, heatmap.opacity), lines)
        ds = _sc(pixels, "RGB", filing, series_uid, SERIES_MAPS, number, [model])
        mark_derived(ds, filing, f"MedSight maps - {NOT_FOR_DIAGNOSIS}", [model])
        ds.BurnedInAnnotation = "YES"
        ds.DerivationDescription = lt(
            f"{heatmap.title or key} ({key}) drawn by {model.line} over the analysed image; caption "
            f"'{NOT_FOR_DIAGNOSIS}' burned in above the picture. {filing.derived_from}.", 1024)
        ds.ImageComments = lt(f"{NOT_FOR_DIAGNOSIS}. {heatmap.caption}".strip())
        _refer_to_source(ds, source_header)
        out.append(ds)
    return out

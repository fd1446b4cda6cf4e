"""DICOM results: an analysis as objects a PACS can file with its study.

`derived_objects` writes, for one analysed study:

- a Secondary Capture per explanation map (overlay with "NOT FOR DIAGNOSTIC USE" and the model burned in);
- a Comprehensive SR (TID 1500) with the gate decision, scores against thresholds, tiers, withheld outputs
  (no number), the radiologist's measurements and the verification outcome;
- the PDF report as Encapsulated PDF.

With the original identifiers (`SourceReference`, or the original header as a pydicom dataset) the objects go
into the source study and refer to the source instance; without them (PNG/JPEG, or DICOM whose identifiers
were not kept) they form a new anonymous study that says what it was derived from, with the analysed image
as its first series. `zip_bytes` packs the objects as DICOM files.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from medsight.dicom_out.common import SourceReference, filing_for, map_slot, model_description
from medsight.dicom_out.encapsulated_pdf import encapsulated_pdf, pdf_bytes_of
from medsight.dicom_out.secondary_capture import analysed_image, map_images
from medsight.dicom_out.structured_report import report

__all__ = ["SourceReference", "derived_objects", "pdf_bytes_of", "zip_bytes", "file_name"]


def _as_dict_and_heatmaps(analysis: Any, heatmaps: dict | None) -> tuple[dict, dict]:
    if hasattr(analysis, "to_dict"):
        objects = getattr(analysis, "objects", {}) or {}
        return analysis.to_dict(), dict(heatmaps if heatmaps is not None else objects.get("heatmaps") or {})
    return dict(analysis), dict(heatmaps or {})


def _shown_maps(data: dict, heatmaps: dict) -> list[tuple[str, Any, Any]]:
    """The maps the analysis shows: computed, listed in the result, and not from a withheld model."""
    withheld = data.get("withheld") or {}
    listed = data.get("maps") or {}
    return [(key, heatmap, model_description(data, map_slot(key))) for key, heatmap in heatmaps.items()
            if key in listed and map_slot(key) not in withheld and getattr(heatmap, "heat", None) is not None]


def derived_objects(study: Any, analysis: Any, *, source: Any = None, heatmaps: dict | None = None,
                    pdf_bytes: bytes | None = None, measurements: list[dict] | None = None,
                    verification: dict | None = None, verifying_observer: str | None = None,
                    verifying_organization: str = "") -> list[Any]:
    """The DICOM objects of one analysed study: map SCs, the SR and the Encapsulated PDF (in that order).

    Args:
        study: the analysed `medsight.ingest.Study`.
        analysis: the `AnalysisResult` (its live heatmaps are used) or its `to_dict()`.
        source: the source instance's original identifiers, as a `SourceReference` or the original pydicom
            header; None writes a new anonymous study (ingest keeps only pseudonyms of the UIDs).
        heatmaps: key → `HeatmapResult`, when `analysis` is a dict (the Analyze page keeps them apart).
        pdf_bytes: the PDF report; None builds it with `medsight.report.build_pdf`.
        measurements: the radiologist's measurements, dicts with "kind" ("length" in mm or "angle" in degrees),
            "value", "calibration" (e.g. "PixelSpacing", "ImagerPixelSpacing", "user calibration") and "label".
        verification: `VerificationResult.to_dict()`, when the report was verified.
        verifying_observer: the radiologist who signed the results; the SR is VERIFIED only then.
        verifying_organization: their organisation (recorded with a signature).

    Returns:
        pydicom datasets: for a new study first the analysed image as SC, then one SC per map, the SR, the PDF.
    """
    data, live = _as_dict_and_heatmaps(analysis, heatmaps)
    filing = filing_for(study, data, source)
    out: list[Any] = []
    if filing.source is not None:
        source_header = filing.source.header()
    else:
        source_header = analysed_image(study, filing)
        out.append(source_header)
    maps = _shown_maps(data, live)
    out += map_images(study, maps, filing, source_header)
    models = [model_description(data, slot) for slot in (data.get("models") or {})]
    sr = report(data, filing, source_header, [source_header, *out[len(out) - len(maps):]], measurements=measurements,
                verification=verification, verifying_observer=verifying_observer,
                verifying_organization=verifying_organization, models=models)
    if pdf_bytes is None:
        from medsight.report import build_pdf

        pdf_bytes = build_pdf(data, verification=verification)
    out += [sr, encapsulated_pdf(bytes(pdf_bytes), filing, source_header, models)]
    return out


def file_name(ds: Any) -> str:
    """A file name for one object: modality, series number and instance number."""
    return f"{ds.Modality}_{int(ds.SeriesNumber):04d}_{int(ds.InstanceNumber):03d}.dcm"


def zip_bytes(objects: list[Any]) -> bytes:
    """The objects as DICOM Part 10 files in one zip."""
    from pydicom import dcmwrite

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for ds in objects:
            part10 = io.BytesIO()
            dcmwrite(part10, ds, enforce_file_format=True)
            archive.writestr(file_name(ds), part10.getvalue())
    return buffer.getvalue()

"""The "DICOM results" download on the Analyze page: map captures, SR and PDF report as DICOM files in a zip."""

from __future__ import annotations

from typing import Any

import streamlit as st

from components.viewer import viewer_state
from medsight.display import report_measurements
from views import _media as media
from views import _shared as ui


def _original_header(key: str = "analyze") -> Any | None:
    """The opened file's own DICOM header (upload or sample), when this session still has the file."""
    import io

    import pydicom

    opened = st.session_state.get(f"{key}_opened") or ()
    try:
        if opened[:1] == ("upload",) and st.session_state.get(f"{key}_upload") is not None:
            data = io.BytesIO(st.session_state[f"{key}_upload"].getvalue())
        elif opened[:1] == ("sample",):
            data = opened[1]
        else:
            return None
        return pydicom.dcmread(data, stop_before_pixels=True)
    except Exception:  # not DICOM, or no longer readable: the results form a new study
        return None


def dicom_results_block(analysis: dict, study: Any) -> None:
    """Offer the analysis as DICOM objects (SC per map, Comprehensive SR, Encapsulated PDF) in one zip."""
    from medsight import audit as audit_trail
    from medsight.dicom_out import derived_objects, zip_bytes
    from medsight.report import study_pdf

    if not st.toggle("DICOM results for a PACS", key=f"dicom_results_{study.study_id}",
                     help="Each map as a Secondary Capture with “NOT FOR DIAGNOSTIC USE” burned in, the findings as a "
                          "Comprehensive SR (unverified until signed) and the PDF report as Encapsulated PDF."):
        return
    header = _original_header() if getattr(study, "source_format", "") == "dicom" else None
    into_source = header is not None and st.checkbox(
        "File into the original study", key=f"dicom_into_source_{study.study_id}",
        help="Uses the original study's UIDs, patient name and ID so a PACS files the results with the study. "
             "The zip then holds patient identifiers: handle it as patient data. Unticked, the results form a "
             "new anonymous study.")
    if header is None and getattr(study, "source_format", "") == "dicom":
        st.caption("The original file is no longer open in this session, so the results form a new anonymous "
                   "study.")
    sign = st.checkbox("Sign the SR as verified by me", key=f"dicom_sign_{study.study_id}")
    heatmaps = dict((st.session_state.get("analysis_objects") or {}).get("heatmaps") or {})
    user, report_text = ui.current_user() or "", st.session_state.get("report_text", "")
    verification = st.session_state.get("verification")
    measurements = report_measurements(viewer_state(study.study_id))

    def build() -> bytes:  # runs only when the button is clicked
        pdf = study_pdf(analysis, study, heatmaps, user=user, report_text=report_text, verification=verification,
                        measurements=measurements)
        objects = derived_objects(study, analysis, source=header if into_source else None, heatmaps=heatmaps,
                                  pdf_bytes=bytes(pdf), measurements=measurements, verification=verification,
                                  verifying_observer=user if sign else None)
        # recorded with the user captured above: the file is built outside the page's run
        audit_trail.record(ui.history, user, "dicom_results", {
            "study_id": study.study_id, "objects": len(objects), "into_source_study": bool(into_source),
            "signed": bool(sign)})
        return zip_bytes(objects)

    media.download_on_request("Download DICOM results (zip)", build, f"medsight_{study.study_id}_dicom.zip",
                              "application/zip", icon=":material/download:")

"""Analyze: open a study, add clinical context, run the staged analysis and read one coherent result."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from components.viewer import viewer, viewer_state
from medsight import analysis_summary as summary, registry
from medsight.pipeline import STATUS_COMPLETE, STATUS_FAILED, run_analysis
from medsight.display import report_measurements
from medsight.report import study_pdf
from views import _media as media
from views import _analysis_blocks as blocks
from views._dicom_results import dicom_results_block
from views._priors import prior_comparison_block
from views import _shared as ui
from views import _study as studies

def _model_or_none(slot: str) -> Any:
    try:
        return ui.get_model(slot)
    except registry.ModelUnavailable:
        return None  # the pipeline records the stage as skipped with the registry's explanation


def _window_controls(study: Any) -> Any:
    """Window/level for DICOM studies that keep their modality values."""
    if getattr(study, "raw", None) is None:
        return study
    with st.expander("Window / level", icon=":material/contrast:"):
        windows, options, (low, high) = summary.window_options(study)
        current = getattr(study, "window_used", None)
        choice = st.radio("Window", options, key=f"window_choice_{study.study_id}", horizontal=True)
        if choice == "Custom":
            centre0, width0 = current or ((low + high) / 2, high - low)
            centre = st.slider("Centre (level)", low, high, float(centre0), key=f"wc_{study.study_id}")
            width = st.slider("Width", 1.0, max(2.0, high - low), float(min(max(width0, 1.0), max(2.0, high - low))),
                              key=f"ww_{study.study_id}")
        else:
            centre, width = windows[options.index(choice)]
        if current is None or (abs(current[0] - centre) > 1e-6 or abs(current[1] - width) > 1e-6):
            study = study.with_window(centre, width)
            studies.set_current_study(study, save=False, rewindowed=True)
    return study


def _gate_block(study: Any, gate: dict) -> None:
    """Say what the gate decided; for a refusal, offer "analyse anyway"."""
    if gate.get("decision") == "accepted":
        st.caption(":material/verified: Input gate: accepted as a frontal chest radiograph.")
        return
    if gate.get("decision") == "overridden":
        st.warning(f"**Not a frontal chest radiograph?** {gate.get('reason', '')} You chose to analyse it anyway; "
                   "this is recorded and printed on the result.", icon=":material/gpp_maybe:")
        return
    st.error(f"**Not analysed: {gate.get('reason', '')}** The study is kept; nothing was lost.",
             icon=":material/block:")
    if st.button("Analyse anyway", icon=":material/gpp_maybe:", key=f"override_{study.study_id}",
                 help="For a chest film the gate refused by mistake. Your choice is recorded in the audit log and "
                      "printed on the result and the PDF."):
        ui.override_gate(study)
        st.rerun()


def _run(study: Any, symptoms: str, maps: str, gate: dict) -> dict:
    clicked = time.perf_counter()  # what the reader waits for starts here, model loading included
    detector = _model_or_none("anomaly.detector")
    classifier = _model_or_none("pathology.classifier")
    with st.status("Analysing…", expanded=True) as status:
        bar = st.progress(0.0)

        def progress(name: str, index: int, total: int) -> None:
            bar.progress(index / total, text=f"Stage {index}/{total}: {name}")

        result = run_analysis(study, symptoms, detector=detector, classifier=classifier, maps=maps, progress=progress,
                              gate=gate)
        state = "complete" if result.status == STATUS_COMPLETE else ("error" if result.status == STATUS_FAILED else "complete")
        waited = time.perf_counter() - clicked
        status.update(label=f"Analysis {result.status.lower()}: {waited:.1f} s from the click (analysis stages "
                            f"{sum(s.seconds for s in result.stages):.1f} s)", state=state, expanded=False)
    data = result.to_dict()
    data["study_id"] = study.study_id
    st.session_state["analysis"] = data
    st.session_state["analysis_objects"] = result.objects
    try:
        title = summary.record_title(study.filename, data, result.status)  # History lists by file, then result
        data["record_id"] = ui.history().save_record(ui.current_user(), "analysis", study.study_id, title, data)
        ui.audit("analysis", {"study_id": study.study_id, "status": result.status})
    except Exception as exc:
        ui.report_error(exc, "The analysis finished but could not be saved to History")
    return data


def _maps_of(study: Any) -> dict | None:
    """The maps of the current analysis, when it belongs to the study on screen."""
    if (st.session_state.get("analysis") or {}).get("study_id") != study.study_id:
        return None
    return (st.session_state.get("analysis_objects") or {}).get("heatmaps")


def _pdf_button(analysis: dict, study: Any) -> None:
    heatmaps = dict((st.session_state.get("analysis_objects") or {}).get("heatmaps") or {})
    user, report_text = ui.current_user() or "", st.session_state.get("report_text", "")
    verification = st.session_state.get("verification")

    measurements = report_measurements(viewer_state(study.study_id))

    def build() -> bytes:  # runs only when the button is clicked (see ui.download_on_request)
        return study_pdf(analysis, study, heatmaps, user=user, report_text=report_text, verification=verification,
                         measurements=measurements)

    media.download_on_request("Download PDF report", build, f"medsight_{study.study_id}.pdf", "application/pdf",
                           icon=":material/picture_as_pdf:", type="primary")


@ui.safe_page
def main() -> None:
    ui.require_login()
    ui.page_header("Analyze", "Open a chest X-ray, add clinical context if you have it, and run the analysis.")
    left, right = st.columns([1, 1], gap="large")
    with left:
        study = studies.study_picker("analyze")
        refused = False
        if study is not None:
            study = _window_controls(study)
            viewer_slot = st.container()  # filled after an Analyze click, so the new maps are layered at once
            gate = ui.gate_decision(study)
            _gate_block(study, gate)
            refused = gate.get("decision") == "refused"
    with right:
        if "symptoms_box" not in st.session_state or st.session_state.get("_symptoms_synced") != st.session_state.get("symptoms"):
            st.session_state["symptoms_box"] = st.session_state.get("symptoms", "")
            st.session_state["_symptoms_synced"] = st.session_state.get("symptoms", "")
        symptoms = st.text_area("Symptoms and clinical context (optional)", key="symptoms_box", height=140,
                                placeholder="e.g. 3 days of fever and productive cough, right pleuritic pain")
        st.session_state["symptoms"] = st.session_state["_symptoms_synced"] = symptoms
        st.page_link(ui.PAGES["voice"], label="Dictate instead", icon=":material/mic:")
        maps = st.segmented_control("Maps", ["key", "all", "none"], default="key",
                                    format_func={"key": "Key maps", "all": "All maps", "none": "No maps"}.get,
                                    help="Key maps: anomaly map (deviation from normal, or Grad-CAM without a model of "
                                         "normal features) and Grad-CAM of positive labels.")
        run = st.button("Analyze", type="primary", icon=":material/play_arrow:", disabled=study is None or refused,
                        help="The input gate refused this image; use “Analyse anyway” to override." if refused else None)
        st.caption("Decision support, not a diagnosis.")
    if study is None:
        return
    analysis = st.session_state.get("analysis")
    if run:
        analysis = _run(study, symptoms, maps or "key", gate)
    with viewer_slot:
        viewer(study, _maps_of(study), key="analyze_viewer")
    if not analysis or analysis.get("study_id") != study.study_id:
        return

    st.divider()
    status = analysis.get("status")
    message = " · ".join((analysis.get("summary") or {}).get("headline", []))
    {"COMPLETE": st.success, "PARTIAL": st.warning, "WITHHELD": st.warning,
     "REFUSED": st.warning}.get(status, st.error)(f"**{status}** — {message}")
    blocks.withheld_block(analysis)
    withheld = analysis.get("withheld") or {}
    demo = (analysis.get("summary") or {}).get("demo_models") or []
    if demo:
        st.warning("Demo-tier models were used (" + ", ".join(demo) + "): trained on synthetic phantoms, for "
                   "demonstration only. See the System page for how to install the real weights.",
                   icon=":material/science:")
    stages = {s["name"]: s for s in analysis.get("stages", [])}
    c1, c2 = st.columns(2, gap="large")
    with c1:
        blocks.anomaly_block(analysis.get("anomaly"), stages.get("vision: anomaly detector"), withheld)
    with c2:
        blocks.pathology_block(analysis.get("pathology"), stages.get("vision: pathology classifier"), withheld)
    c3, c4 = st.columns(2, gap="large")
    with c3:
        blocks.fusion_block(analysis.get("fusion"))
        blocks.nlp_block(analysis.get("nlp"))
    with c4:
        blocks.maps_block(analysis)
    blocks.reasoning_block(analysis.get("reasoning"))
    blocks.stages_block(analysis)
    prior_comparison_block(analysis, study)
    _pdf_button(analysis, study)
    dicom_results_block(analysis, study)


main()

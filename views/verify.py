"""Report Verification: check a report against the models' findings and similar past cases."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from medsight import verification_summary as verification
from views import _shared as ui
from views import _verify_tabs as tabs_
from views import _study as studies

from views._verify_tabs import BOX, RESULT
# Material icons render without an emoji font (some Linux workstations have none).


@st.cache_resource(show_spinner=False)
def _casebase(home: str, chroma_url: str) -> Any:
    from medsight.retrieval import CaseBase

    return CaseBase(settings=ui.settings())


def _analysis_for(study: Any) -> dict | None:
    analysis = st.session_state.get("analysis")
    if not isinstance(analysis, dict):
        return None
    if study is not None and analysis.get("study_id") not in (None, getattr(study, "study_id", None)):
        return None
    return analysis


def _similar_cases(study: Any, text: str, k: int, notes: list[str]) -> list[dict]:
    from medsight.retrieval import CaseBaseError

    current = ui.settings()
    try:
        base = _casebase(str(current.home), current.chroma_url)
    except CaseBaseError as exc:
        notes.append(str(exc))
        return []
    return verification.similar_cases(base, study, lambda: ui.gate_decision(study), text, k, current, notes)


def _language_model(mode: str, consent: bool) -> Any:
    from medsight.llm import get_language_model

    if mode == "deterministic":
        return get_language_model(consent=consent, use_local=False) if consent else None
    return get_language_model(consent=consent, use_local=True, include_weak=True)


def _run(study: Any, text: str, mode: str, consent: bool, use_cases: bool, k: int) -> None:
    from medsight.verify import verify_report

    notes: list[str] = []
    clicked = time.perf_counter()  # the label reports what the reader waited for, not only the checks
    with st.status("Verifying the report…", expanded=True) as status:
        cases: list[dict] = []
        if use_cases:
            st.write("Finding similar past cases…")
            cases = _similar_cases(study, text, k, notes)
        st.write("Preparing the language model…" if mode != "deterministic" or consent else "Deterministic engine…")
        llm = _language_model(mode, consent)
        st.write("Checking completeness and discrepancies…")
        try:
            result = verify_report(text, _analysis_for(study), cases, llm)
        except ValueError as exc:
            status.update(label=str(exc), state="error")
            return
        payload = result.to_dict()
        payload["page_notes"] = notes
        st.session_state[RESULT] = payload
        ui.audit("report_verified", {"study_id": getattr(study, "study_id", None), "backend": result.backend,
                                     "discrepancies": len(result.discrepancies)})
        status.update(label=f"Verified: {time.perf_counter() - clicked:.1f} s from the click (checks "
                            f"{result.timings['total_s']:.1f} s) — {result.backend} answered",
                      state="complete", expanded=False)


def _save(study: Any, text: str, result: dict) -> None:
    accepted = st.session_state.get("verify_applied") or []
    title, payload = verification.saved_record(getattr(study, "study_id", None), text, result, accepted)
    record_id = ui.history().save_record(ui.current_user(), "verification", payload["study_id"], title, payload)
    payload["record_id"] = record_id
    st.session_state["verification"] = payload
    ui.audit("verification_saved", {"record_id": record_id})
    st.success(f"Saved to History (record {record_id}).", icon=":material/save:")


@ui.safe_page
def main() -> None:
    from medsight.llm import CLOUD_NOTICE, cloud_allowed

    ui.page_header("Report Verification",
                   "Check a report for completeness and against the models' findings and similar past cases. "
                   "Decision support: every suggestion needs your review.")
    study = ui.current_study()
    if study is None:
        st.info("No study is open. Open one here or on Analyze; without a study only the report itself is checked.",
                icon=":material/info:")
        study = studies.study_picker("verify_picker")
    else:
        studies.study_card(study)
    if study is not None and _analysis_for(study) is None:
        st.warning("This study has not been analysed yet: the report can only be checked for completeness and "
                   "internal consistency. Run Analyze first for model evidence.", icon=":material/warning:")

    # "report_text" is shared with Voice Entry: a change made there since this editor last wrote it wins.
    shared = st.session_state.get("report_text", "")
    if BOX not in st.session_state or shared != st.session_state.get("verify_synced_text"):
        st.session_state[BOX] = shared
    text = st.text_area("Report (FINDINGS and IMPRESSION)", key=BOX, height=260,
                        placeholder="FINDINGS: …\n\nIMPRESSION: …",
                        help="Paste, type, or send a dictation from Voice Entry. Do not type patient names or IDs.")
    st.session_state["report_text"] = st.session_state["verify_synced_text"] = text

    current = ui.settings()
    with st.expander("Review options", icon=":material/tune:"):
        mode_label = st.radio("Review by", ["Deterministic engine only", "Local language model when available"],
                              key="verify_mode", horizontal=True,
                              help="The deterministic engine always runs; a language model can add or confirm "
                                   "discrepancies but never remove them.")
        if mode_label.startswith("Local"):
            st.caption("Uses MedGemma (Apple Silicon, MLX), a model set with MEDSIGHT_LOCAL_LLM, or the small offline "
                       "SmolLM2-135M. Its answer is used only when it validates against the expected structure; on a "
                       "CPU this can take up to a minute.")
        consent = st.toggle("Allow the cloud model (Google Gemini)", value=current.cloud_llm_consent,
                            key="verify_cloud")
        if consent:
            allowed, why = cloud_allowed(current, True)
            st.caption(CLOUD_NOTICE if allowed else f"Cloud model not used: {why}.")
        else:
            st.caption("Nothing leaves this computer.")
        use_cases = st.checkbox("Use similar past cases", value=True, key="verify_use_cases")
        k = st.slider("Number of similar cases", 3, 10, 5, key="verify_k")
    mode = "deterministic" if mode_label.startswith("Deterministic") else "local"

    if st.button("Verify", type="primary", icon=":material/fact_check:", disabled=not text.strip(), key="verify_go"):
        st.session_state.pop("verify_applied", None)
        _run(study, text, mode, consent, use_cases, k)

    reopened = st.session_state.get("verification")
    if isinstance(reopened, dict) and reopened.get("checklist") is not None \
            and st.session_state.get("verify_reopened") != reopened.get("record_id"):
        # A verification reopened from History (or just saved): show it against the report it checked.
        st.session_state["verify_reopened"] = reopened.get("record_id")
        if st.session_state.get(RESULT) is None or reopened.get("record_id") is not None:
            st.session_state[RESULT] = dict(reopened, report_text=reopened.get("verified_report_text",
                                                                               reopened.get("report_text", "")))
    result = st.session_state.get(RESULT)
    if not result:
        return
    if result["report_text"] != text:
        st.info("The report changed since it was verified; press Verify again to re-check it.", icon=":material/sync:")
    summary = result["summary"]
    cols = st.columns(4)
    # Not-applicable items are neither passed nor failed: they are left out of the count.
    applicable = [item for item in result["checklist"] if item.get("status") != "n/a"]
    not_applicable = len(result["checklist"]) - len(applicable)
    cols[0].metric("Checks passed", f"{summary['checks_passed']}/{len(applicable)}",
                   help=f"{not_applicable} item(s) not applicable to this report" if not_applicable else None)
    cols[1].metric("Discrepancies", summary["discrepancies"])
    cols[2].metric("Critical", summary["critical"])
    cols[3].metric("Suggested edits", summary["edits"])
    for note in result.get("notices", []) + result.get("page_notes", []):
        st.caption(f":material/info: {note}")
    # A key keeps the chosen tab across the reruns that ticking an edit or applying edits cause.
    tabs = st.tabs(["Checklist", "Discrepancies", "Suggested edits", "Similar cases", "Backend & timing"],
                   key="verify_tabs", on_change="rerun")
    with tabs[0]:
        tabs_.checklist_tab(result)
    with tabs[1]:
        tabs_.discrepancies_tab(result)
    with tabs[2]:
        tabs_.edits_tab(result, text)
    with tabs[3]:
        tabs_.cases_tab(result)
    with tabs[4]:
        tabs_.backend_tab(result)
    st.caption(result.get("disclaimer", ""))
    if st.button("Save report and verification to History", icon=":material/save:", key="verify_save"):
        _save(study, text, result)


main()

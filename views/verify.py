"""Report Verification: check a report against the models' findings and similar past cases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import streamlit as st

from views import _shared as ui
from views import _study as studies

BOX = "verify_report_box"
RESULT = "verification_result"
# Material icons render without an emoji font (some Linux workstations have none).
STATUS_ICONS = {"pass": ":green[:material/check_circle:]", "fail": ":red[:material/cancel:]", "n/a": ":gray[:material/remove:]"}
SEVERITY_COLOURS = {"critical": "red", "major": "orange", "minor": "gray"}


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
        counts = base.count()
    except CaseBaseError as exc:
        notes.append(str(exc))
        return []
    if not counts.get("case_reports") and not counts.get("case_images"):
        from medsight import reference

        state = reference.status(current)
        if state.running:
            notes.append("The similar-case base is still being prepared in the background "
                         f"({state.message}); this verification used no similar cases.")
            return []
        notes.append("The case base is empty, so no similar cases were used. Build it on the System page "
                     "(Reference data) or with `python -m medsight.retrieval.build`.")
        return []
    image = getattr(study, "image", None) if counts.get("case_images") else None
    if image is not None:
        verdict = base.image_verdict(study, ui.gate_decision(study))
        if not verdict.inside:
            notes.append(f"Similar cases by image withheld: {verdict.reason}. Similar cases by report text only.")
            image = None
    try:
        cases = base.query(image=image, text=text, k=k)
    except CaseBaseError as exc:
        notes.append(str(exc))
        cases = base.query(text=text, k=k)
    tiers = []
    if base.text_provenance is not None:
        tiers.append(f"text: {base.text_provenance.tier}")
    if image is not None and base.image_provenance is not None:
        tiers.append(f"image: {base.image_provenance.tier} ({base._image_embedder.description})")
    if tiers:
        notes.append("Similar-case embeddings — " + "; ".join(tiers))
    return [c.to_dict() for c in cases]


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


def _apply_accepted() -> None:
    from medsight.verify import apply_edits

    result = st.session_state.get(RESULT)
    if not result:
        return
    accepted = [e["id"] for e in result["edits"] if st.session_state.get(f"accept_{e['id']}")]
    new_text = apply_edits(result["report_text"], result["edits"], accepted)
    st.session_state[BOX] = st.session_state["report_text"] = st.session_state["verify_synced_text"] = new_text
    st.session_state["verify_applied"] = accepted


def _checklist_tab(result: dict) -> None:
    for item in result["checklist"]:
        line = f"{STATUS_ICONS.get(item['status'], '')} **{item['title']}** — {item['why']}"
        if item["status"] == "fail":
            line += f"  :{SEVERITY_COLOURS.get(item['severity'], 'gray')}[{item['severity']}]"
        st.markdown(line)
        for sentence in item.get("evidence") or []:
            st.caption(f"“{sentence}”")


def _discrepancies_tab(result: dict) -> None:
    if not result["discrepancies"]:
        st.success("No discrepancy between the report and the available evidence.", icon=":material/check:")
    for d in result["discrepancies"]:
        with st.container(border=True):
            st.markdown(f"**{d['id']} · {d['kind'].replace('_', ' ')} · {d['finding'].replace('_', ' ')}**  "
                        f":{SEVERITY_COLOURS.get(d['severity'], 'gray')}[{d['severity']}]")
            st.write(d["message"])
            if d.get("report_sentence"):
                st.caption(f"Report: “{d['report_sentence']}”")
            ev = d["evidence"]
            facts = []
            if ev.get("probability") is not None:
                facts.append(f"probability {ev['probability']:.2f} (threshold {ev['threshold']:.2f}, "
                             f"{ev.get('model_tier') or 'unknown'} tier)")
            if ev.get("map_ref"):
                facts.append(f"map `{ev['map_ref']}`" + (f", peak on patient {ev['map_side']}" if ev.get("map_side") else ""))
            if ev.get("similar_support"):
                facts.append(f"similar cases: {ev['similar_support']}"
                             + (f" ({', '.join(ev['similar_case_ids'][:5])})" if ev.get("similar_case_ids") else ""))
            if ev.get("anomaly_score") is not None:
                facts.append(f"anomaly score {ev['anomaly_score']:.3f} vs {ev['anomaly_threshold']:.3f}")
            if facts:
                st.caption("Evidence: " + "; ".join(facts) + f" — source: {ev.get('source', 'models')}")
            if d.get("confirmed_by"):
                st.caption("Also raised by: " + ", ".join(d["confirmed_by"]))


def _edits_tab(result: dict, current_text: str) -> None:
    if not result["edits"]:
        st.info("No edit suggested.", icon=":material/info:")
        return
    from medsight.verify.edits import preview

    st.caption("Each edit is a minimal change of the verified report. Tick the ones to accept, then apply.")
    by_id = {e["id"]: e for e in result["edits"]}
    for edit in result["edits"]:
        if edit.get("applies_with"):
            continue  # shown, and applied, with the edit it keeps coherent
        with st.container(border=True):
            st.checkbox(f"Accept {edit['id']}: {edit['title']}", key=f"accept_{edit['id']}")
            st.caption(edit["reason"])
            linked = [by_id[i] for i in edit.get("linked_ids") or [] if i in by_id]
            if linked:
                st.caption("Applied together, so the report does not contradict itself: "
                           + "; ".join(f"{e['id']} {e['title']}" for e in linked))
                st.code(preview(result["report_text"], result["edits"], edit["id"]), language="diff", wrap_lines=True)
            else:
                st.code(edit["diff"] or f"- {edit['original']}\n+ {edit['replacement']}", language="diff",
                        wrap_lines=True)
    st.button("Apply accepted edits", on_click=_apply_accepted, icon=":material/done_all:", key="verify_apply")
    if st.session_state.get("verify_applied") is not None:
        st.success(f"Applied {len(st.session_state['verify_applied'])} edit(s) to the report editor.")


def _cases_tab(result: dict) -> None:
    cases = result.get("similar_cases") or []
    if not cases:
        st.info("No similar cases were used.", icon=":material/info:")
    for case in cases:
        with st.container(border=True):
            cols = st.columns([1, 3])
            path = case.get("image_path")
            if path and Path(path).is_file():
                cols[0].image(path, caption=case["case_id"], width="stretch")
            else:
                cols[0].markdown(f"**{case['case_id']}**  \n(text-only case)")
            sims = [f"combined score {case['score']:.4f}" if case.get("image_similarity") is not None
                    and case.get("text_similarity") is not None else None,
                    f"image similarity {case['image_similarity']:.3f}" if case.get("image_similarity") is not None else None,
                    f"text similarity {case['text_similarity']:.3f}" if case.get("text_similarity") is not None else None]
            cols[1].markdown(" · ".join(s for s in sims if s) + f" · source {case.get('source', '')}")
            cols[1].markdown("Labels: " + (", ".join(l.replace("_", " ") for l in case["labels"]) if case["labels"]
                                           else ("normal" if case.get("normal") else "none recorded")))
            with cols[1].expander("Report"):
                st.text(case.get("report", ""))


def _backend_tab(result: dict) -> None:
    ui.tier_badge(result["tier"])
    st.markdown(f"Review answered by **{result['backend']}**.")
    for attempt in result.get("llm_attempts") or []:
        st.caption(f"{attempt['backend']}: {'ok' if attempt['ok'] else 'failed'} in {attempt['seconds']:.1f} s"
                   + (f" — {attempt['error']}" if attempt.get("error") else ""))
    if result.get("llm_comment"):
        st.markdown("**Language-model comment:** " + result["llm_comment"])
    nlp = result.get("nlp_tier") or {}
    if nlp:
        st.caption(f"Report parsing: {nlp.get('entities', '?')} tier")
    for name, tier in (result.get("model_tiers") or {}).items():
        st.caption(f"{name} model: {tier} tier")
    st.caption("Timings: " + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in result["timings"].items()))


def _save(study: Any, text: str, result: dict) -> None:
    accepted = st.session_state.get("verify_applied") or []
    # Flat: the verification fields at top level (what the PDF reads), "report_text" = the accepted report.
    payload = {**result, "report_text": text, "verified_report_text": result["report_text"],
               "accepted_edits": accepted, "study_id": getattr(study, "study_id", None)}
    summary = result["summary"]
    title = (f"Verification: {summary['checks_failed']} failed check(s), {summary['discrepancies']} "
             f"discrepanc{'y' if summary['discrepancies'] == 1 else 'ies'}")
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
        _checklist_tab(result)
    with tabs[1]:
        _discrepancies_tab(result)
    with tabs[2]:
        _edits_tab(result, text)
    with tabs[3]:
        _cases_tab(result)
    with tabs[4]:
        _backend_tab(result)
    st.caption(result.get("disclaimer", ""))
    if st.button("Save report and verification to History", icon=":material/save:", key="verify_save"):
        _save(study, text, result)


main()

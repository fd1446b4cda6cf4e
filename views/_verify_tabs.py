"""Report Verification page, result tabs: checklist, discrepancies, suggested edits, similar cases, backend."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from medsight import verification_summary as verification
from views import _shared as ui

BOX = "verify_report_box"
RESULT = "verification_result"
# Material icons render without an emoji font (some Linux workstations have none).
STATUS_ICONS = {"pass": ":green[:material/check_circle:]", "fail": ":red[:material/cancel:]", "n/a": ":gray[:material/remove:]"}
SEVERITY_COLOURS = {"critical": "red", "major": "orange", "minor": "gray"}


def apply_accepted() -> None:
    from medsight.verify import apply_edits

    result = st.session_state.get(RESULT)
    if not result:
        return
    accepted = [e["id"] for e in result["edits"] if st.session_state.get(f"accept_{e['id']}")]
    new_text = apply_edits(result["report_text"], result["edits"], accepted)
    st.session_state[BOX] = st.session_state["report_text"] = st.session_state["verify_synced_text"] = new_text
    st.session_state["verify_applied"] = accepted


def checklist_tab(result: dict) -> None:
    for item in result["checklist"]:
        line = f"{STATUS_ICONS.get(item['status'], '')} **{item['title']}** — {item['why']}"
        if item["status"] == "fail":
            line += f"  :{SEVERITY_COLOURS.get(item['severity'], 'gray')}[{item['severity']}]"
        st.markdown(line)
        for sentence in item.get("evidence") or []:
            st.caption(f"“{sentence}”")


def discrepancies_tab(result: dict) -> None:
    if not result["discrepancies"]:
        st.success("No discrepancy between the report and the available evidence.", icon=":material/check:")
    for d in result["discrepancies"]:
        with st.container(border=True):
            st.markdown(f"**{d['id']} · {d['kind'].replace('_', ' ')} · {d['finding'].replace('_', ' ')}**  "
                        f":{SEVERITY_COLOURS.get(d['severity'], 'gray')}[{d['severity']}]")
            st.write(d["message"])
            if d.get("report_sentence"):
                st.caption(f"Report: “{d['report_sentence']}”")
            evidence = verification.evidence_line(d["evidence"])
            if evidence:
                st.caption(evidence)
            if d.get("confirmed_by"):
                st.caption("Also raised by: " + ", ".join(d["confirmed_by"]))


def edits_tab(result: dict, current_text: str) -> None:
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
    st.button("Apply accepted edits", on_click=apply_accepted, icon=":material/done_all:", key="verify_apply")
    if st.session_state.get("verify_applied") is not None:
        st.success(f"Applied {len(st.session_state['verify_applied'])} edit(s) to the report editor.")


def cases_tab(result: dict) -> None:
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
            cols[1].markdown(verification.case_line(case))
            cols[1].markdown(verification.case_labels(case))
            with cols[1].expander("Report"):
                st.text(case.get("report", ""))


def backend_tab(result: dict) -> None:
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

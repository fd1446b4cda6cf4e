"""Analyze: open a study, add clinical context, run the staged analysis and read one coherent result."""

from __future__ import annotations

import io
import textwrap
import time
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from components.viewer import viewer
from medsight import registry
from medsight.pipeline import STATUS_COMPLETE, STATUS_FAILED, run_analysis
from medsight.report import build_pdf
from medsight.report.figures import pathology_bars, score_gauge
from views import _shared as ui

RISK_COLOURS = {"High": "red", "Moderate": "orange", "Low": "green"}


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
        windows = list(getattr(study, "windows", None) or [])
        low, high = (float(v) for v in (study.value_range or (float(np.min(study.raw)), float(np.max(study.raw)))))
        options = [f"Window {i + 1}: centre {c:g}, width {w:g}" for i, (c, w) in enumerate(windows)] + ["Custom"]
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
            ui.set_current_study(study, save=False, rewindowed=True)
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
        headline = "; ".join(data["summary"].get("headline", [])[:2]) or result.status
        title = f"{study.filename or 'unnamed study'} — {headline}"  # History lists analyses by file, then result
        data["record_id"] = ui.history().save_record(ui.current_user(), "analysis", study.study_id,
                                                     textwrap.shorten(title, 200, placeholder=" …"), data)
        ui.audit("analysis", {"study_id": study.study_id, "status": result.status})
    except Exception as exc:
        ui.report_error(exc, "The analysis finished but could not be saved to History")
    return data


def _withheld_block(analysis: dict) -> None:
    """What the domain rule withheld, why, the one step to real weights, and the demo output behind a fold."""
    withheld = analysis.get("withheld") or {}
    if not withheld:
        return
    ui.withheld_notice(list(withheld.values()))
    live = (st.session_state.get("analysis_objects") or {}).get("withheld") or {}
    if not live:
        return
    with st.expander("Show the withheld output anyway (not meaningful for this image)", icon=":material/science:"):
        st.caption("These numbers come from weights that cannot speak about this image. They are not findings, "
                   "are not stored, and are not used anywhere else.")
        for slot, kept in live.items():
            output = kept.get("output") or {}
            if slot == "anomaly.detector" and output:
                st.caption(f"Anomaly score {float(output.get('fused_score', 0)):.3f} (threshold "
                           f"{float(output.get('threshold', 0)):.3f}) — not meaningful for this image.")
            elif output:
                probs = output.get("probabilities") or {}
                st.caption("Pathology probabilities — not meaningful for this image: "
                           + ", ".join(f"{k} {float(v):.2f}" for k, v in probs.items()))
            for key, heatmap in (kept.get("maps") or {}).items():
                # Drawn in grey: a coloured heatmap reads as a finding at a glance.
                grey = Image.open(io.BytesIO(heatmap.png())).convert("L")
                st.image(grey, caption=f"{heatmap.caption or key} — not meaningful for this image", width="stretch")


def _withheld_note(slot: str, withheld: dict) -> bool:
    entry = withheld.get(slot)
    if entry:
        st.info(f"Withheld: {entry.get('what')} (see above).", icon=":material/visibility_off:")
    return bool(entry)


def _anomaly_block(anomaly: dict | None, stage: dict | None, withheld: dict) -> None:
    st.subheader("Anomaly detector", anchor=False)
    if _withheld_note("anomaly.detector", withheld):
        return
    if not anomaly:
        st.info(f"Not run: {(stage or {}).get('message') or 'no anomaly detector available'}", icon=":material/info:")
        return
    ui.tier_badge(anomaly.get("tier", ""))
    st.plotly_chart(score_gauge(float(anomaly["fused_score"]), float(anomaly["threshold"]), "Fused anomaly score"),
                    width="stretch", key="analyze_gauge")
    verdict = "outside the normal range" if anomaly.get("is_anomalous") else "within the normal range"
    st.caption(f"Score {anomaly['fused_score']:.3f} vs threshold {anomaly['threshold']:.3f}: {verdict} "
               f"(margin {anomaly.get('margin', anomaly['fused_score'] - anomaly['threshold']):+.3f}).")
    if anomaly.get("peak_deviation") is not None and anomaly.get("deviation_threshold") is not None:
        unusual = bool(anomaly.get("deviation_unusual"))
        st.metric("Peak deviation from normal", f"{float(anomaly['peak_deviation']):.1f}",
                  delta="above the normal range" if unusual else "within the normal range",
                  delta_color="inverse" if unusual else "off",
                  help="Largest per-position distance of the image's features from normal training images "
                       f"(the deviation map); 95 % of normal images stay below "
                       f"{float(anomaly['deviation_threshold']):.1f}.")


def _pathology_block(pathology: dict | None, stage: dict | None, withheld: dict) -> None:
    st.subheader("Pathology classifier", anchor=False)
    if _withheld_note("pathology.classifier", withheld):
        return
    if not pathology:
        st.info(f"Not run: {(stage or {}).get('message') or 'no classifier available'}", icon=":material/info:")
        return
    ui.tier_badge(pathology.get("tier", ""))
    st.plotly_chart(pathology_bars(pathology.get("probabilities", {}), pathology.get("thresholds", {})),
                    width="stretch", key="analyze_bars")
    positives = pathology.get("positives") or []
    st.caption("Above operating threshold: " + (", ".join(positives) if positives else "none"))


def _maps_block(analysis: dict) -> None:
    heatmaps = (st.session_state.get("analysis_objects") or {}).get("heatmaps") or {}
    if not heatmaps:
        return
    st.subheader("Maps", anchor=False)
    for key, heatmap in list(heatmaps.items())[:4]:
        st.image(heatmap.png(), caption=heatmap.caption, width="stretch")
        kind, _, label = key.partition(":")
        if st.button("Open in Heatmap page", key=f"open_{key}", icon=":material/open_in_new:"):
            st.session_state["heatmap_kind"] = "pathology_gradcam" if kind == "pathology" else kind
            if label:
                st.session_state["heatmap_label"] = label
            st.switch_page(ui.PAGES["heatmap"])


def _nlp_block(nlp: dict | None) -> None:
    if not nlp:
        return
    st.subheader("Clinical text", anchor=False)
    entities = nlp.get("entities") or []
    if entities:
        st.dataframe(
            [{"Text": e.get("text"), "Type": e.get("label"), "Negated": bool(e.get("negated")),
              "Uncertain": bool(e.get("uncertain")), "Side": e.get("laterality") or ""} for e in entities],
            hide_index=True, width="stretch",
        )
    conditions = nlp.get("conditions") or []
    if conditions:
        st.markdown("**Conditions suggested by the text**")
        for c in conditions:
            evidence = "; ".join(f"“{p}”" for p in (c.get("evidence") or [])[:3])
            st.markdown(f"- **{c.get('name')}** — {c.get('status')} (score {float(c.get('score', 0)):.2f}) {evidence}")


def _fusion_block(fusion: dict | None) -> None:
    if not fusion:
        return
    risk = fusion.get("risk") or {}
    level = risk.get("level") if isinstance(risk, dict) else str(risk)
    st.subheader("Risk and agreement", anchor=False)
    if level:
        st.badge(f"Risk: {level}", color=RISK_COLOURS.get(level, "gray"), icon=":material/priority_high:")
        for reason in (risk.get("reasons") if isinstance(risk, dict) else None) or []:
            st.markdown(f"- {reason if isinstance(reason, str) else reason.get('text', reason)}")
        if isinstance(risk, dict) and risk.get("rule"):
            st.caption(f"Rule: {risk['rule']}")
    for key, title, icon in (("agreements", "Agreements", ":material/check_circle:"),
                             ("contradictions", "Contradictions", ":material/warning:")):
        items = fusion.get(key) or []
        if items:
            st.markdown(f"**{title}**")
            for item in items:
                text = item if isinstance(item, str) else item.get("message") or item.get("text") or str(item)
                (st.warning if key == "contradictions" else st.success)(text, icon=icon)
    confidence = fusion.get("confidence") or {}
    if isinstance(confidence, dict) and confidence.get("low_confidence"):
        st.warning(f"Low confidence: {confidence.get('reason', 'see the uncertainty figures')}", icon=":material/help:")
    if fusion.get("rule"):
        st.caption(f"Agreement rule: {fusion['rule']}")


def _reasoning_block(reasoning: dict | None) -> None:
    if not reasoning:
        return
    with st.expander(f"Clinical reasoning — {reasoning.get('backend', 'rules')}", icon=":material/psychology:"):
        st.write(reasoning.get("reasoning", ""))
        for i, item in enumerate(reasoning.get("differential") or [], start=1):
            why = "; ".join(item.get("supporting") or [])
            hedge = " (uncertain)" if item.get("uncertain") else ""
            st.markdown(f"{i}. **{item.get('condition')}**{hedge} — ranking weight {float(item.get('score', 0)):.2f}"
                        + (f"; supported by {why}" if why else ""))
        st.caption("Ranking weights order the differential; they are not probabilities of disease.")
        for c in reasoning.get("contradictions") or []:
            st.warning(c, icon=":material/warning:")


def _stages_block(analysis: dict) -> None:
    with st.expander("Processing stages, timings and model tiers", icon=":material/timer:"):
        st.dataframe(
            [{"Stage": s["name"], "Status": s["status"],
              "Time (s)": round(s["seconds"], 3), "Tier": s.get("tier", ""), "Note": s.get("message", "")}
             for s in analysis.get("stages", [])],
            hide_index=True, width="stretch",
            # The note is the widest column: narrow the others so it is not cut off.
            column_config={"Stage": st.column_config.TextColumn(width="medium"),
                           "Status": st.column_config.TextColumn(width="small"),
                           "Time (s)": st.column_config.NumberColumn(width="small"),
                           "Tier": st.column_config.TextColumn(width="small"),
                           "Note": st.column_config.TextColumn(width="large")},
        )
        for slot, prov in (analysis.get("models") or {}).items():
            ui.tier_badge(prov, details=True)


def _pdf_button(analysis: dict, study: Any) -> None:
    heatmaps = dict((st.session_state.get("analysis_objects") or {}).get("heatmaps") or {})
    user, report_text = ui.current_user() or "", st.session_state.get("report_text", "")
    verification = st.session_state.get("verification")

    def build() -> bytes:  # runs only when the button is clicked (see ui.download_on_request)
        images = [("Radiograph as analysed", study.thumbnail_png(512))]
        images += [(heatmap.caption or key, heatmap.png()) for key, heatmap in heatmaps.items()]
        return bytes(build_pdf(analysis, images=images, user=user, report_text=report_text,
                               verification=verification))

    ui.download_on_request("Download PDF report", build, f"medsight_{study.study_id}.pdf", "application/pdf",
                           icon=":material/picture_as_pdf:", type="primary")


@ui.safe_page
def main() -> None:
    ui.require_login()
    ui.page_header("Analyze", "Open a chest X-ray, add clinical context if you have it, and run the analysis.")
    left, right = st.columns([1, 1], gap="large")
    with left:
        study = ui.study_picker("analyze")
        refused = False
        if study is not None:
            study = _window_controls(study)
            viewer(study, (st.session_state.get("analysis_objects") or {}).get("heatmaps") if (
                st.session_state.get("analysis") or {}).get("study_id") == study.study_id else None, key="analyze_viewer")
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
    if not analysis or analysis.get("study_id") != study.study_id:
        return

    st.divider()
    status = analysis.get("status")
    message = " · ".join((analysis.get("summary") or {}).get("headline", []))
    {"COMPLETE": st.success, "PARTIAL": st.warning, "WITHHELD": st.warning,
     "REFUSED": st.warning}.get(status, st.error)(f"**{status}** — {message}")
    _withheld_block(analysis)
    withheld = analysis.get("withheld") or {}
    demo = (analysis.get("summary") or {}).get("demo_models") or []
    if demo:
        st.warning("Demo-tier models were used (" + ", ".join(demo) + "): trained on synthetic phantoms, for "
                   "demonstration only. See the System page for how to install the real weights.",
                   icon=":material/science:")
    stages = {s["name"]: s for s in analysis.get("stages", [])}
    c1, c2 = st.columns(2, gap="large")
    with c1:
        _anomaly_block(analysis.get("anomaly"), stages.get("vision: anomaly detector"), withheld)
    with c2:
        _pathology_block(analysis.get("pathology"), stages.get("vision: pathology classifier"), withheld)
    c3, c4 = st.columns(2, gap="large")
    with c3:
        _fusion_block(analysis.get("fusion"))
        _nlp_block(analysis.get("nlp"))
    with c4:
        _maps_block(analysis)
    _reasoning_block(analysis.get("reasoning"))
    _stages_block(analysis)
    _pdf_button(analysis, study)


main()

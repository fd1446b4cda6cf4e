"""Analyze page, result part: one block per stage of the analysis (anomaly, pathology, maps, text, fusion)."""

from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from medsight import analysis_summary as summary
from medsight.report.figures import pathology_bars, score_gauge
from views import _shared as ui

RISK_COLOURS = {"High": "red", "Moderate": "orange", "Low": "green"}


def withheld_block(analysis: dict) -> None:
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
            caption = summary.withheld_output_caption(slot, kept.get("output") or {})
            if caption:
                st.caption(caption)
            for key, heatmap in (kept.get("maps") or {}).items():
                # Drawn in grey: a coloured heatmap reads as a finding at a glance.
                grey = Image.open(io.BytesIO(heatmap.preview_jpeg())).convert("L")
                st.image(grey, caption=f"{heatmap.caption or key} — not meaningful for this image", width="stretch")


def _withheld_note(slot: str, withheld: dict) -> bool:
    entry = withheld.get(slot)
    if entry:
        st.info(f"Withheld: {entry.get('what')} (see above).", icon=":material/visibility_off:")
    return bool(entry)


def _model_heading(title: str, slot: str, output: dict | None, stage: dict | None, withheld: dict,
                   missing: str) -> bool:
    """Title and tier of a model's block; False (with the reason shown) when it has nothing to show."""
    st.subheader(title, anchor=False)
    if _withheld_note(slot, withheld):
        return False
    if not output:
        st.info(f"Not run: {(stage or {}).get('message') or missing}", icon=":material/info:")
        return False
    ui.tier_badge(output.get("tier", ""))
    return True


def anomaly_block(anomaly: dict | None, stage: dict | None, withheld: dict) -> None:
    if not _model_heading("Anomaly detector", "anomaly.detector", anomaly, stage, withheld,
                          "no anomaly detector available"):
        return
    st.plotly_chart(score_gauge(float(anomaly["fused_score"]), float(anomaly["threshold"]), "Fused anomaly score"),
                    width="stretch", key="analyze_gauge")
    st.caption(summary.anomaly_caption(anomaly))
    if anomaly.get("peak_deviation") is not None and anomaly.get("deviation_threshold") is not None:
        unusual = bool(anomaly.get("deviation_unusual"))
        st.metric("Peak deviation from normal", f"{float(anomaly['peak_deviation']):.1f}",
                  delta="above the normal range" if unusual else "within the normal range",
                  delta_color="inverse" if unusual else "off",
                  help="Largest per-position distance of the image's features from normal training images "
                       f"(the deviation map); 95 % of normal images stay below "
                       f"{float(anomaly['deviation_threshold']):.1f}.")


def pathology_block(pathology: dict | None, stage: dict | None, withheld: dict) -> None:
    if not _model_heading("Pathology classifier", "pathology.classifier", pathology, stage, withheld,
                          "no classifier available"):
        return
    st.plotly_chart(pathology_bars(pathology.get("probabilities", {}), pathology.get("thresholds", {})),
                    width="stretch", key="analyze_bars")
    positives = pathology.get("positives") or []
    st.caption("Above operating threshold: " + (", ".join(positives) if positives else "none"))


def maps_block(analysis: dict) -> None:
    heatmaps = (st.session_state.get("analysis_objects") or {}).get("heatmaps") or {}
    if not heatmaps:
        return
    st.subheader("Maps", anchor=False)
    st.caption("Also layered over the film in the viewer; the Heatmap page has each map in full.")
    for key, heatmap in list(heatmaps.items())[:4]:
        title = heatmap.title + (f" — {heatmap.score_text}" if heatmap.score_text else "")
        st.image(heatmap.preview_jpeg(), caption=f"{title}. {heatmap.caption}", width="stretch", output_format="JPEG")
        kind, _, label = key.partition(":")
        if st.button("Open in Heatmap page", key=f"open_{key}", icon=":material/open_in_new:"):
            st.session_state["heatmap_kind"] = "pathology_gradcam" if kind == "pathology" else kind
            if label:
                st.session_state["heatmap_label"] = label
            st.switch_page(ui.PAGES["heatmap"])


def nlp_block(nlp: dict | None) -> None:
    if not nlp:
        return
    st.subheader("Clinical text", anchor=False)
    rows = summary.entity_rows(nlp)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    conditions = summary.condition_lines(nlp)
    if conditions:
        st.markdown("**Conditions suggested by the text**")
        for line in conditions:
            st.markdown(line)


def fusion_block(fusion: dict | None) -> None:
    if not fusion:
        return
    level, reasons, rule = summary.risk_of(fusion)
    st.subheader("Risk and agreement", anchor=False)
    if level:
        st.badge(f"Risk: {level}", color=RISK_COLOURS.get(level, "gray"), icon=":material/priority_high:")
        for reason in reasons:
            st.markdown(f"- {reason}")
        if rule:
            st.caption(f"Rule: {rule}")
    for key, title, icon in (("agreements", "Agreements", ":material/check_circle:"),
                             ("contradictions", "Contradictions", ":material/warning:")):
        items = fusion.get(key) or []
        if items:
            st.markdown(f"**{title}**")
            for item in items:
                text = summary.item_text(item)
                (st.warning if key == "contradictions" else st.success)(text, icon=icon)
    confidence = fusion.get("confidence") or {}
    if isinstance(confidence, dict) and confidence.get("low_confidence"):
        st.warning(f"Low confidence: {confidence.get('reason', 'see the uncertainty figures')}", icon=":material/help:")
    if fusion.get("rule"):
        st.caption(f"Agreement rule: {fusion['rule']}")


def reasoning_block(reasoning: dict | None) -> None:
    if not reasoning:
        return
    with st.expander(f"Clinical reasoning — {reasoning.get('backend', 'rules')}", icon=":material/psychology:"):
        st.write(reasoning.get("reasoning", ""))
        for line in summary.differential_lines(reasoning):
            st.markdown(line)
        st.caption("Ranking weights order the differential; they are not probabilities of disease.")
        for c in reasoning.get("contradictions") or []:
            st.warning(c, icon=":material/warning:")


def stages_block(analysis: dict) -> None:
    with st.expander("Processing stages, timings and model tiers", icon=":material/timer:"):
        st.dataframe(
            summary.stage_rows(analysis), hide_index=True, width="stretch",
            # The note is the widest column: narrow the others so it is not cut off.
            column_config={"Stage": st.column_config.TextColumn(width="medium"),
                           "Status": st.column_config.TextColumn(width="small"),
                           "Time (s)": st.column_config.NumberColumn(width="small"),
                           "Tier": st.column_config.TextColumn(width="small"),
                           "Note": st.column_config.TextColumn(width="large")},
        )
        for slot, prov in (analysis.get("models") or {}).items():
            ui.tier_badge(prov, details=True)

"""Heatmap: where in the image the models look, drawn over the current study.

Other pages can pre-select a map before `st.switch_page`: set `st.session_state["heatmap_kind"]` to
"paper_attention", "patch_deviation", "spatial_anomaly" or "pathology_gradcam" and, for the last, `st.session_state["heatmap_label"]`.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from components.viewer import viewer
from medsight import domain, heatmap_choices as choices
from medsight.explain import DEFAULT_OPACITY, MAP_LABELS, HeatmapResult, compute_map
from views import _heatmap_panel as panel
from views import _shared as ui
from views import _study as studies

ANOMALY_SLOT = "anomaly.detector"
PATHOLOGY_SLOT = "pathology.classifier"
CACHE_KEY = "heatmap_cache"
def _load(slot: str) -> tuple[Any | None, str]:
    """(LoadedModel, "") or (None, what is missing)."""
    try:
        return ui.get_model(slot), ""
    except Exception as exc:  # unavailable or broken model: say what is missing, no traceback
        return None, str(exc) or type(exc).__name__


def _pathology() -> tuple[Any | None, str]:
    try:
        import medsight.models.pathology  # noqa: F401  (registers the slot)
    except Exception as exc:
        return None, f"the pathology classifier is not available in this build ({type(exc).__name__})"
    loaded, missing = _load(PATHOLOGY_SLOT)
    if loaded is None:
        return None, missing
    if not hasattr(loaded.model, "gradcam"):
        return None, "the pathology classifier in this build does not provide Grad-CAM maps"
    return loaded, ""


def _cache() -> dict:
    return st.session_state.setdefault(CACHE_KEY, {})


def _remember(key: tuple, result: HeatmapResult) -> None:
    choices.remember(_cache(), key, result)


@ui.safe_page
def main() -> None:
    ui.page_header("Heatmap", "Where in the image the models look, drawn over the radiograph.")
    study = ui.current_study()
    with st.expander("Open another study" if study is not None else "Open a study", expanded=study is None):
        study = studies.study_picker("heatmap")
    if study is None:
        st.info("Open a study (upload or sample) to see its maps.", icon=":material/radiology:")
        return

    anomaly, anomaly_missing = _load(ANOMALY_SLOT)
    pathology, pathology_missing = _pathology()

    kinds = list(MAP_LABELS)
    requested = st.session_state.pop("heatmap_kind", None)
    if requested in kinds:
        st.session_state["heatmap_kind_choice"] = requested
    has_patch_model = anomaly is not None and getattr(anomaly.model, "patch_model", None) is not None
    st.session_state.setdefault("heatmap_kind_choice", "patch_deviation" if has_patch_model else "spatial_anomaly")
    captions = choices.map_captions(anomaly is not None, has_patch_model, pathology is not None)
    captions = [captions[k] for k in kinds]
    controls, preview = st.columns([1, 3])
    with controls:
        kind = st.radio("Map", kinds, format_func=MAP_LABELS.get, captions=captions, key="heatmap_kind_choice")
        st.session_state.setdefault("heatmap_opacity", DEFAULT_OPACITY)
        opacity = st.slider("Overlay opacity", 0.0, 1.0, step=0.05, key="heatmap_opacity",
                            help="Maximum opacity of the map; the weakest 30 % of the map is always transparent.")
        st.caption(choices.KIND_HELP[kind])

    slot = PATHOLOGY_SLOT if kind == "pathology_gradcam" else ANOMALY_SLOT
    loaded = pathology if slot == PATHOLOGY_SLOT else anomaly
    if loaded is not None:
        provenance = loaded.provenance.to_dict()
        verdict = domain.assess(study, {slot: provenance}, gate=ui.gate_decision(study)).verdicts[slot]
        if not verdict.inside:
            with preview:
                ui.withheld_notice([domain.withheld_entry(verdict, provenance)])
            return

    label = ""
    classifier = None
    if kind == "pathology_gradcam":
        if pathology is None:
            with preview:
                st.info(f"Pathology Grad-CAM is not available in this build: {pathology_missing}",
                        icon=":material/block:")
            return
        classifier = pathology.model
        scored = st.session_state.setdefault("heatmap_label_probabilities", {})
        probabilities = scored.get(study.study_id)
        if probabilities is None:
            try:
                with st.spinner("Scoring pathology labels…"):
                    probabilities = choices.label_scores(classifier.predict(study.image))
            except ValueError as exc:
                st.error(str(exc), icon=":material/broken_image:")
                return
            scored.clear()  # only the current study's scores are kept
            scored[study.study_id] = probabilities
        if not probabilities:
            st.warning("The pathology classifier returned no labels for this image.")
            return
        ordered = sorted(probabilities, key=lambda name: probabilities[name][0], reverse=True)
        requested_label = st.session_state.pop("heatmap_label", None)
        if requested_label in ordered:
            st.session_state["heatmap_label_choice"] = requested_label
        with controls:
            label = st.selectbox("Label", ordered, key="heatmap_label_choice",
                                 format_func=lambda name: f"{name} ({probabilities[name][0]:.2f})")
        provenance = pathology.provenance
    else:
        if anomaly is None:
            with preview:
                st.warning("The anomaly detector is not available, so its maps cannot be drawn.",
                           icon=":material/block:")
                st.code(anomaly_missing, language=None)
            return
        provenance = anomaly.provenance

    key = (study.study_id, kind, label)
    result = _cache().get(key)
    if result is None:  # the analysis of this study may have drawn it already
        result = choices.analysis_map_keys(st.session_state.get("analysis"), (st.session_state.get(
            "analysis_objects") or {}).get("heatmaps"), study.study_id).get(key)
        if result is not None:
            _remember(key, result)
    if result is None:
        try:
            with preview, st.status(f"Computing {MAP_LABELS[kind].lower()}…", expanded=False) as status:
                result = compute_map(kind, study.image, detector=anomaly.model if anomaly else None,
                                     classifier=classifier, label=label, opacity=opacity)
                status.update(label=f"{MAP_LABELS[kind]} ready", state="complete")
        except ValueError as exc:
            with preview:
                st.error(str(exc), icon=":material/error:")
            return
        _remember(key, result)
        ui.audit("heatmap_computed", {"study_id": study.study_id, "kind": kind, "label": label})
    if abs(result.opacity - opacity) > 1e-6:
        with preview, st.spinner("Redrawing overlay…"):
            result = result.with_opacity(opacity)
        _remember(key, result)

    with preview:
        if kind == "paper_attention":
            st.warning(result.caption, icon=":material/warning:")
        if kind != "paper_attention":  # the paper's attention is not an image-space map: figure only
            viewer(study, {f"{kind}:{label}" if label else kind: result}, key="heatmap_viewer", show_maps=True)
        st.image(result.png(), width="stretch", output_format="PNG",
                 caption=f"{result.title} — {result.score_text}" if result.score_text else result.title)
    threshold = (result.details or {}).get("threshold")
    if threshold is None and kind == "pathology_gradcam":
        threshold = probabilities[label][1]
    panel.score_panel(result, provenance, threshold)
    panel.downloads(result, study.study_id)


main()

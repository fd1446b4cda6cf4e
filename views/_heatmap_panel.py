"""Heatmap page, under the map: score gauge, score components, provenance and PNG downloads."""

from __future__ import annotations

from typing import Any

import streamlit as st

from medsight import heatmap_choices as choices
from medsight.explain import HeatmapResult, to_png_bytes
from medsight.report.figures import components_bars, score_gauge
from views import _media as media
from views import _shared as ui


def score_panel(result: HeatmapResult, provenance: Any, threshold: float | None) -> None:
    details = result.details or {}
    left, middle, right = st.columns([1.1, 1.3, 1.2])
    with left:
        if result.score is not None:
            title = "Anomaly score" if result.kind != "pathology_gradcam" else f"P({result.label})"
            st.plotly_chart(score_gauge(float(result.score), None if threshold is None else float(threshold), title),
                            width="stretch", key=f"gauge_{result.kind}")
            if threshold is not None:
                above = float(result.score) >= float(threshold)
                st.caption(f"{'Above' if above else 'Below'} the operating threshold {float(threshold):.3f} "
                           f"({'flagged' if above else 'not flagged'}).")
    with middle:
        components = details.get("components")
        if components:
            st.plotly_chart(components_bars({k: float(v) for k, v in components.items()}), width="stretch",
                            key=f"components_{result.kind}")
            raw = {k: details[k] for k in ("recon_error", "kl_divergence", "vit_score") if k in details}
            if raw:
                st.caption(" · ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in raw.items()))
        if details.get("peak_threshold") is not None:
            unusual = bool(details.get("peak_unusual"))
            st.metric("Peak deviation from normal", f"{float(details['peak_deviation']):.1f}",
                      delta="above the normal range" if unusual else "within the normal range",
                      delta_color="inverse" if unusual else "off",
                      help=f"Largest per-position distance from normal features; 95 % of normal images stay "
                           f"below {float(details['peak_threshold']):.1f}.")
    with right:
        if provenance is not None:
            ui.tier_badge(provenance, details=True)
        st.caption(result.caption)
        seconds = choices.computed_seconds(details)
        if seconds is not None:
            st.caption(f"Computed in {float(seconds):.2f} s.")


def downloads(result: HeatmapResult, study_id: str) -> None:
    """The figure and its three panels as PNG files, each drawn only when its button is clicked."""
    stem = f"{study_id}_{result.kind}" + (f"_{result.label}" if result.label else "")
    columns = st.columns(4)
    with columns[0]:
        media.download_on_request("Three panels (PNG)", result.png, f"{stem}_panels.png", "image/png",
                                  icon=":material/download:", key="dl_panels", width="stretch")
    if result.image is None:
        return  # a map without its radiograph has only the combined figure
    for column, name in zip(columns[1:], ("original", "heatmap", "overlay")):
        with column:
            media.download_on_request(f"{name.capitalize()} (PNG)",
                                      lambda name=name: to_png_bytes(result.panel_images()[name]),
                                      f"{stem}_{name}.png", "image/png", icon=":material/download:",
                                      key=f"dl_{name}", width="stretch")

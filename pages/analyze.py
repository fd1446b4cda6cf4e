"""Analyze: open a study now; model analysis arrives with the analysis pipeline."""

from __future__ import annotations

import streamlit as st

from pages import _shared as ui

ui.placeholder(
    "Analyze",
    "Open a chest X-ray and run the analysis models on it.",
    [
        "Anomaly score from a detector trained on normal chest X-rays, against its calibrated threshold",
        "Per-pathology probabilities with their maps, and clinical entities from typed or dictated symptoms",
        "Agreement between image and text, a risk level with its reasons, and the model tier beside every result",
        "Each analysis saved to History, with a downloadable PDF report",
    ],
)
st.subheader("Open a study", anchor=False)
st.caption("You can already open a study: it becomes the current study and is stored in History.")
ui.study_picker("analyze")

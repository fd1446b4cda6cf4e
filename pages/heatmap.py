"""Heatmap: explanation maps of the current analysis (not built yet)."""

from __future__ import annotations

from pages import _shared as ui

ui.placeholder(
    "Heatmap",
    "Where in the image the models looked.",
    [
        "Where the anomaly detector finds the image unlike normal anatomy, over the current study",
        "Original | heatmap | overlay panels with adjustable opacity",
        "Export of the panels as PNG",
    ],
)

"""Chat: questions about the current study and its results (not built yet)."""

from __future__ import annotations

from pages import _shared as ui

ui.placeholder(
    "Chat",
    "Ask questions about the current study, its analysis and the literature.",
    [
        "Answers grounded in the current analysis and retrieved reference text, with citations",
        "A local language model by default; a cloud model only with explicit consent",
        "Chat threads saved to History",
    ],
)

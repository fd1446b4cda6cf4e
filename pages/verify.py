"""Report Verification: check a written report against the image findings (not built yet)."""

from __future__ import annotations

from pages import _shared as ui

ui.placeholder(
    "Report Verification",
    "Compare a radiology report with what the models see in the current study.",
    [
        "Draft or paste a report for the current study",
        "Completeness checks and discrepancies with the models' findings, each with its evidence",
        "Suggested edits to accept one by one, and the similar past cases they rely on",
        "Each verification saved to History",
    ],
)

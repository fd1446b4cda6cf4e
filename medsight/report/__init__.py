"""Printable outputs of an analysis."""

from typing import Any

from medsight.report.pdf import build_pdf

__all__ = ["build_pdf", "study_pdf"]


def study_pdf(analysis: dict, study: Any, heatmaps: dict | None = None, *, user: str = "", report_text: str = "",
              verification: dict | None = None, measurements: list[dict] | None = None) -> bytes:
    """The PDF the pages and the API offer: the analysis with the radiograph as analysed (when the study is
    still stored), its maps and the radiologist's measurements (`medsight.display.report_measurements`)."""
    images = [("Radiograph as analysed", study.thumbnail_png(512))] if study is not None else []
    images += [(heatmap.caption or key, heatmap.png()) for key, heatmap in (heatmaps or {}).items()]
    if measurements:
        analysis = {**analysis, "measurements": measurements}
    return bytes(build_pdf(analysis, images=images, user=user, report_text=report_text, verification=verification))

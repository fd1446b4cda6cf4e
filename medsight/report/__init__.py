"""Printable outputs of an analysis."""

from medsight.report.pdf import build_pdf

__all__ = ["build_pdf"]

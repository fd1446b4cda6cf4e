"""Report verification: completeness checklist, discrepancies with evidence, suggested minimal edits.

Example:
    >>> from medsight.verify import verify_report, apply_edits
    >>> result = verify_report(report, analysis)                    # doctest: +SKIP
    >>> apply_edits(report, result.edits, ["E1"])                   # doctest: +SKIP
"""

from medsight.verify.checklist import ChecklistItem, ReportFacts, parse_report, run_checklist
from medsight.verify.discrepancies import Discrepancy, Evidence, find_discrepancies, side_of_map, side_of_peak
from medsight.verify.edits import SuggestedEdit, apply_edits, make_edit, suggest_edits
from medsight.verify.verifier import LLMVerification, VerificationResult, verify_report

__all__ = [
    "ChecklistItem", "Discrepancy", "Evidence", "LLMVerification", "ReportFacts", "SuggestedEdit",
    "VerificationResult", "apply_edits", "find_discrepancies", "make_edit", "parse_report", "run_checklist",
    "side_of_map", "side_of_peak", "suggest_edits", "verify_report",
]

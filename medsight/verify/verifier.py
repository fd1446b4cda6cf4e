"""Report verification: deterministic checks, optional language-model review, suggested edits.

Verdict path: the checklist and the discrepancies come from the deterministic engine over the parsed report,
the model findings and the similar cases. A language model, when one is given, may only add discrepancies
that are consistent with what the report actually says (checked against the parsed report), or confirm
existing ones; it can never remove a finding, change a checklist status or the output format. Its answer
must validate against `LLMVerification`; invalid answers are retried once and then the next tier answers.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from medsight.llm.base import LanguageModel, as_language_model
from medsight.llm.prompts import verification_prompt
from medsight.llm.rules import canonical, model_findings
from medsight.llm.safety import DISCLAIMER, detect_drug_dosing, screen_injection
from medsight.verify.checklist import DEVICE_LABELS, ChecklistItem, ReportFacts, parse_report, run_checklist
from medsight.verify.discrepancies import Discrepancy, Evidence, find_discrepancies
from medsight.verify.edits import SuggestedEdit, suggest_edits

MAX_REPORT_CHARS = 20_000


class LLMDiscrepancy(BaseModel):
    finding: str = Field(min_length=2, max_length=60)
    kind: Literal["unsupported", "missed", "negated", "laterality"]
    explanation: str = Field(default="", max_length=400)


class LLMVerification(BaseModel):
    """Schema of the language model's review."""

    discrepancies: list[LLMDiscrepancy] = Field(default_factory=list, max_length=12)
    overall_comment: str = Field(default="", max_length=800)


@dataclass
class VerificationResult:
    """Everything one verification produced (`to_dict()` is stored in History and printed in the PDF).

    Attributes:
        checklist: completeness items (pass / fail / n/a with why).
        discrepancies: with evidence; `confirmed_by` lists language models that agreed.
        edits: suggested minimal edits (accept/reject by id, then `apply_edits`).
        similar_cases: cases used as evidence.
        backend / tier: who answered the review ("rules" when no language model did).
        llm_comment: the model's comment when it passed the checks, else "".
        notices: user-facing remarks (instruction-like text found, model output rejected, ...).
        timings: seconds per step.
    """

    report_text: str
    checklist: list[ChecklistItem]
    discrepancies: list[Discrepancy]
    edits: list[SuggestedEdit]
    similar_cases: list[dict] = field(default_factory=list)
    backend: str = "rules"
    tier: str = "rules"
    llm_attempts: list[dict] = field(default_factory=list)
    llm_comment: str = ""
    nlp_tier: dict = field(default_factory=dict)
    model_tiers: dict = field(default_factory=dict)
    injection: dict = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    disclaimer: str = DISCLAIMER

    @property
    def summary(self) -> dict:
        return {
            "checks_passed": sum(i.status == "pass" for i in self.checklist),
            "checks_failed": sum(i.status == "fail" for i in self.checklist),
            "discrepancies": len(self.discrepancies),
            "critical": sum(d.severity == "critical" for d in self.discrepancies)
            + sum(i.status == "fail" and i.severity == "critical" for i in self.checklist),
            "edits": len(self.edits),
        }

    def to_dict(self) -> dict:
        data = asdict(self)
        data["summary"] = self.summary
        return data


_CLEAN_VERDICT = re.compile(r"\b(perfect|flawless|no (discrepanc|issue|error|problem|change)s?|all (checks? )?pass|"
                            r"nothing (to|needs)|fully (correct|accurate|complete)|is (correct|accurate|complete))", re.I)


def _devices_detected(analysis: dict, evidence: dict[str, dict]) -> list[str]:
    found = [ev["label"] for name, ev in evidence.items() if name in DEVICE_LABELS and ev["positive"]]
    found += [str(d) for d in ((analysis or {}).get("devices") or [])]
    return found


def _merge_llm(review: LLMVerification, backend: str, facts: ReportFacts, discrepancies: list[Discrepancy],
               notices: list[str]) -> int:
    """Add or confirm model-proposed discrepancies that the parsed report is consistent with. Returns #rejected."""
    rejected = 0
    for item in review.discrepancies:
        finding = canonical(item.finding)
        existing = next((d for d in discrepancies if d.finding == finding and d.kind == item.kind), None)
        if existing is not None:
            existing.confirmed_by.append(backend)
            continue
        status = facts.status(finding)
        consistent = {"missed": status is None, "negated": status == "negated",
                      "unsupported": status in ("present", "uncertain"),
                      "laterality": bool(facts.sides(finding))}[item.kind]
        text = item.explanation.strip()
        if not consistent or screen_injection(text).flagged or detect_drug_dosing(text).is_dosing:
            rejected += 1
            continue
        discrepancies.append(Discrepancy(
            f"D{len(discrepancies) + 1}", item.kind, finding, "minor",
            f"Language model ({backend}): {text or item.kind + ' ' + finding}", status,
            next((m.sentence for m in facts.findings() if m.finding == finding), ""), None,
            Evidence(source=f"language model: {backend}")))
    if rejected:
        notices.append(f"{rejected} language-model suggestion(s) contradicted the report text and were dropped.")
    return rejected


def verify_report(report_text: str, analysis: dict | None = None, similar_cases: list | None = None,
                  llm: LanguageModel | None = None) -> VerificationResult:
    """Verify a draft report against the analysis and similar cases.

    Args:
        report_text: the draft report.
        analysis: `AnalysisResult.to_dict()` ("anomaly", "pathology", "nlp", "fusion", "maps"; each optional).
        similar_cases: `SimilarCase` objects or their dicts.
        llm: language-model chain; None for the deterministic engine only.

    Returns:
        VerificationResult.

    Raises:
        ValueError: empty report, or longer than `MAX_REPORT_CHARS`.
    """
    if not isinstance(report_text, str) or not report_text.strip():
        raise ValueError("The report is empty: paste or type the report to verify.")
    if len(report_text) > MAX_REPORT_CHARS:
        raise ValueError(f"The report is {len(report_text):,} characters long; the limit is {MAX_REPORT_CHARS:,}.")
    llm = as_language_model(llm)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    analysis = analysis or {}
    cases = [c.to_dict() if hasattr(c, "to_dict") else dict(c) for c in (similar_cases or [])]
    notices: list[str] = []
    screen = screen_injection(report_text)
    if screen.flagged:
        notices.append("The report contains instruction-like text (e.g. “" + screen.matches[0][1][:60]
                       + "”). It was treated as report text only and did not change how the report was checked.")
    facts = parse_report(report_text)
    timings["parse_s"] = round(time.perf_counter() - t0, 3)

    t1 = time.perf_counter()
    evidence = model_findings(analysis)
    model_positive = {name for name, ev in evidence.items() if ev["positive"]}
    checklist = run_checklist(facts, model_positive, _devices_detected(analysis, evidence))
    discrepancies = find_discrepancies(facts, analysis, evidence, cases)
    timings["rules_s"] = round(time.perf_counter() - t1, 3)
    if not evidence:
        withheld = (analysis.get("withheld") or {}).get("pathology.classifier")
        notices.append(f"The pathology model's output was withheld ({withheld.get('reason')}): discrepancies with "
                       "the image could not be checked." if withheld else
                       "No pathology-model result was available: discrepancies with the image could not be checked.")

    backend, tier, attempts, comment = "rules", "rules", [], ""
    if llm is not None and llm.has_model:
        t2 = time.perf_counter()
        structured = {name: {k: ev[k] for k in ("probability", "threshold", "positive")} for name, ev in evidence.items()}
        prompt = verification_prompt(report_text, structured, [(c["case_id"], c.get("report", "")) for c in cases])
        answer = llm.generate_json(LLMVerification, prompt, rules=LLMVerification, max_tokens=512)
        attempts = [asdict(a) for a in answer.attempts]
        backend, tier = answer.backend, answer.tier
        if answer.backend != "rules":
            _merge_llm(answer.value, answer.backend, facts, discrepancies, notices)
            comment = answer.value.overall_comment.strip()
            has_problems = bool(discrepancies) or any(i.status == "fail" for i in checklist)
            if comment and (screen_injection(comment).flagged or detect_drug_dosing(comment).is_dosing
                            or (has_problems and _CLEAN_VERDICT.search(comment))):
                notices.append("The language model's comment conflicted with the checks and was not shown.")
                comment = ""
        else:
            notices.append("No language model produced a valid review; the deterministic engine answered.")
        timings["llm_s"] = round(time.perf_counter() - t2, 3)
    for number, d in enumerate(discrepancies, start=1):
        d.id = f"D{number}"
    t3 = time.perf_counter()
    edits = suggest_edits(report_text, facts, discrepancies, checklist)
    timings["edits_s"] = round(time.perf_counter() - t3, 3)
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    tiers = {k: (analysis.get(k) or {}).get("tier") for k in ("pathology", "anomaly") if analysis.get(k)}
    return VerificationResult(report_text, checklist, discrepancies, edits, cases, backend, tier, attempts, comment,
                              facts.nlp_tier, tiers, screen.to_dict(), notices, timings)

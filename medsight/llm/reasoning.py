"""Clinical reasoning stage: image-model findings + symptoms (+ the radiograph, for backends that take
images) → short reasoning, a ranked differential and a CNN-vs-LLM comparison per pathology.

Comparison rule (documented, applied identically for every backend):
  - The language model states, per pathology, "present" / "absent" / "uncertain" and a confidence c in [0, 1].
  - Agreement (CNN positive and LLM present, or CNN negative and LLM absent) nudges the CNN probability p
    toward the shared verdict: p' = p + BOOST·c·(1 − p) when both say present, p' = p − BOOST·c·p when both
    say absent (BOOST = 0.15). The CNN probability itself is never overwritten; p' is shown beside it.
  - Disagreement is listed as a contradiction; p' = p. "uncertain" changes nothing.
The deterministic tier answers with the rule-based differential (`medsight.llm.rules`) and no LLM opinion.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from medsight.llm.base import LanguageModel, as_language_model
from medsight.llm.prompts import reasoning_prompt
from medsight.llm.rules import DifferentialItem, differential_from_findings, model_findings, summarise_findings
from medsight.llm.safety import DISCLAIMER, detect_drug_dosing

BOOST = 0.15


class LLMPathologyOpinion(BaseModel):
    pathology: str = Field(max_length=60)
    assessment: Literal["present", "absent", "uncertain"]
    confidence: float = Field(ge=0.0, le=1.0)


class LLMDifferentialEntry(BaseModel):
    condition: str = Field(max_length=120)
    rationale: str = Field(default="", max_length=400)


class LLMReasoning(BaseModel):
    """Schema the language model must answer with."""

    reasoning: str = Field(min_length=10, max_length=1500)
    differential: list[LLMDifferentialEntry] = Field(min_length=1, max_length=8)
    pathologies: list[LLMPathologyOpinion] = Field(default_factory=list, max_length=30)

    @field_validator("reasoning")
    @classmethod
    def _no_dosing(cls, value: str) -> str:
        if detect_drug_dosing(value).is_dosing:
            raise ValueError("reasoning must not contain medication dosing")
        return value


@dataclass
class PathologyComparison:
    """CNN vs language model for one pathology."""

    pathology: str
    cnn_probability: float
    cnn_threshold: float
    cnn_positive: bool
    llm_assessment: str | None = None
    llm_confidence: float | None = None
    agreement: bool | None = None
    adjusted_probability: float | None = None


@dataclass
class ReasoningResult:
    """Output of the clinical reasoning stage (serialises for the Analyze page, History and the PDF)."""

    reasoning: str
    differential: list[DifferentialItem]
    comparisons: list[PathologyComparison] = field(default_factory=list)
    contradictions: list[str] = field(default_factory=list)
    backend: str = "rules"
    tier: str = "rules"
    attempts: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    used_image: bool = False
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict:
        return asdict(self)


def compare(evidence: dict[str, dict], opinions: list[LLMPathologyOpinion]) -> tuple[list[PathologyComparison], list[str]]:
    """Apply the documented agreement/contradiction rule."""
    from medsight.llm.rules import canonical

    by_name = {canonical(o.pathology): o for o in opinions}
    rows, contradictions = [], []
    for name, ev in sorted(evidence.items()):
        row = PathologyComparison(name, ev["probability"], ev["threshold"], ev["positive"])
        opinion = by_name.get(name)
        if opinion is not None:
            p, c = ev["probability"], opinion.confidence
            row.llm_assessment, row.llm_confidence = opinion.assessment, c
            if opinion.assessment == "uncertain":
                row.adjusted_probability = p
            elif (opinion.assessment == "present") == ev["positive"]:
                row.agreement = True
                row.adjusted_probability = round(p + BOOST * c * (1 - p) if ev["positive"] else p - BOOST * c * p, 4)
            else:
                row.agreement = False
                row.adjusted_probability = p
                contradictions.append(
                    f"{name.replace('_', ' ')}: image model {'positive' if ev['positive'] else 'negative'} "
                    f"(p={p:.2f}, threshold {ev['threshold']:.2f}) but language model says {opinion.assessment} "
                    f"(confidence {c:.2f})")
        rows.append(row)
    return rows, contradictions


def clinical_reasoning(findings: dict, symptoms: str = "", image: Any = None, llm: LanguageModel | None = None
                       ) -> ReasoningResult:
    """Run the reasoning stage.

    Args:
        findings: analysis dict (`AnalysisResult.to_dict()`: "pathology", "anomaly", ...).
        symptoms: clinician's free text.
        image: HxW float radiograph in [0, 1], sent only to backends that take images.
        llm: backend chain; None means the deterministic tier only.

    Returns:
        ReasoningResult naming the backend that answered.
    """
    llm = as_language_model(llm)
    start = time.perf_counter()
    evidence = model_findings(findings)
    rules_differential = differential_from_findings(evidence, symptoms)
    rules_text = summarise_findings(findings) + " Differential ranked by documented rules from the model findings."

    def rules_answer() -> LLMReasoning:
        return LLMReasoning(reasoning=rules_text,
                            differential=[LLMDifferentialEntry(condition=d.condition) for d in rules_differential])

    if llm is None or not llm.has_model:
        return ReasoningResult(rules_text, rules_differential,
                               compare(evidence, [])[0], [], "rules", "rules", [], time.perf_counter() - start)
    structured = {"pathology": {name: {k: ev[k] for k in ("probability", "threshold", "positive")}
                                for name, ev in evidence.items()},
                  "anomaly": {k: v for k, v in ((findings or {}).get("anomaly") or {}).items()
                              if k in ("fused_score", "threshold", "is_anomalous")}}
    answer = llm.generate_json(LLMReasoning, reasoning_prompt(structured, symptoms), rules=rules_answer, image=image)
    attempts = [asdict(a) for a in answer.attempts]
    if answer.backend == "rules":
        return ReasoningResult(rules_text, rules_differential, compare(evidence, [])[0], [], "rules", "rules",
                               attempts, time.perf_counter() - start)
    value: LLMReasoning = answer.value
    n = len(value.differential)
    # Rank order is the model's; scores are rank-based so they are comparable with the rules tier.
    weights = [n - i for i in range(n)]
    differential = [DifferentialItem(d.condition, round(w / sum(weights), 3), [d.rationale] if d.rationale else [])
                    for d, w in zip(value.differential, weights)]
    rows, contradictions = compare(evidence, value.pathologies)
    return ReasoningResult(value.reasoning, differential, rows, contradictions, answer.backend, answer.tier, attempts,
                           time.perf_counter() - start, used_image=image is not None and any(
                               getattr(b, "supports_images", False) and b.name == answer.backend for b in llm.backends))

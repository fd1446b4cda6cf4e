"""Discrepancies between a report and the evidence (image models, explanation maps, similar cases).

Kinds:
  missed        a model calls a finding positive (probability ≥ its threshold) and the report does not mention it.
  negated       a model calls a finding positive and the report negates it.
  laterality    the report's side differs from the side of the finding's explanation-map peak.
  unsupported   the report asserts a finding the models cover, scored well below threshold (more than
                `medsight.llm.rules.NEAR_MARGIN` below), and fewer than half of the similar cases carry it.
  similar_cases at least `SIMILAR_MAJORITY` of the similar cases (k ≥ 3) carry a finding the report does not
                mention and no model covers it positively.
  anomaly       the report reads normal but the anomaly score is above its threshold.
Each carries its evidence: probability, threshold, map reference, side from the map, similar case ids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from medsight.verify.checklist import CRITICAL_FINDINGS, ReportFacts, display_name

SIMILAR_MAJORITY = 0.6
MIDLINE_BAND = 0.1  # map peaks within ±10 % of the image centre have no side


@dataclass
class Evidence:
    probability: float | None = None
    threshold: float | None = None
    model_label: str | None = None
    model_tier: str | None = None
    map_ref: str | None = None
    map_side: str | None = None
    similar_case_ids: list[str] = field(default_factory=list)
    similar_support: str | None = None
    anomaly_score: float | None = None
    anomaly_threshold: float | None = None
    source: str = "models"  # "models" | "similar_cases" | "language model: <backend>"


@dataclass
class Discrepancy:
    id: str
    kind: str
    finding: str
    severity: str  # "critical" | "major" | "minor"
    message: str
    report_status: str | None = None
    report_sentence: str = ""
    report_side: str | None = None
    evidence: Evidence = field(default_factory=Evidence)
    confirmed_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def side_of_peak(peak_yx, shape) -> str | None:
    """Patient side of a map peak on a PA radiograph (image right = patient left); None near the midline."""
    try:
        x, width = float(peak_yx[1]), float(shape[1])
    except (TypeError, IndexError, ValueError):
        return None
    offset = x / max(width, 1.0) - 0.5
    if abs(offset) < MIDLINE_BAND:
        return None
    return "left" if offset > 0 else "right"


def side_of_map(heat) -> str | None:
    """Patient side of a heatmap's peak (PA view)."""
    import numpy as np

    heat = np.asarray(heat, dtype=np.float32)
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return side_of_peak(peak, heat.shape)


def model_sides(analysis: dict, evidence: dict[str, dict]) -> dict[str, tuple[str | None, str | None]]:
    """{finding: (side, map key)} from `pathology.laterality` or the explanation maps' peaks."""
    maps = (analysis or {}).get("maps") or {}
    out = {}
    for finding, ev in evidence.items():
        key = f"pathology:{ev['label']}"
        if ev.get("laterality"):
            out[finding] = (ev["laterality"], key if key in maps else None)
        elif key in maps:
            m = maps[key]
            out[finding] = (side_of_peak(m.get("heat_peak_yx"), m.get("heat_shape")), key)
    return out


def related(finding: str) -> tuple[str, ...]:
    """The finding and the names that count as the same observation (nodule ↔ mass, consolidation ↔ pneumonia)."""
    try:
        from medsight.nlp import related_findings

        names = related_findings(finding)
    except ImportError:
        names = (finding,)
    return (finding,) + tuple(n for n in names if n != finding)


def _sentence(facts: ReportFacts, findings, status: str | None = None) -> str:
    findings = (findings,) if isinstance(findings, str) else tuple(findings)
    for m in facts.findings():
        if m.finding in findings and (status is None or m.status == status):
            return m.sentence
    return ""


def find_discrepancies(facts: ReportFacts, analysis: dict, evidence: dict[str, dict],
                       similar_cases: list[dict] | None = None) -> list[Discrepancy]:
    """All deterministic discrepancies (see module docstring).

    Args:
        facts: parsed report.
        analysis: the analysis dict (for the anomaly result, maps and tiers).
        evidence: `medsight.llm.rules.model_findings(analysis)`.
        similar_cases: `SimilarCase.to_dict()` items.
    """
    out: list[Discrepancy] = []
    tier = ((analysis or {}).get("pathology") or {}).get("tier")
    sides = model_sides(analysis, evidence)
    similar = similar_cases or []
    reported = facts.positive()

    def similar_with(finding: str) -> list[str]:
        return [c["case_id"] for c in similar if finding in (c.get("labels") or [])]

    def ev_for(finding: str) -> Evidence:
        ev = evidence[finding]
        side, map_ref = sides.get(finding, (None, None))
        ids = similar_with(finding)
        return Evidence(probability=ev["probability"], threshold=ev["threshold"], model_label=ev["label"],
                        model_tier=tier, map_ref=map_ref, map_side=side, similar_case_ids=ids,
                        similar_support=f"{len(ids)} of {len(similar)} similar cases" if similar else None)

    for finding, ev in sorted(evidence.items()):
        group = related(finding)
        status = facts.status_any(group)
        name = display_name(finding)
        if ev["positive"]:
            severity = "critical" if finding in CRITICAL_FINDINGS else "major"
            p = f"p={ev['probability']:.2f} ≥ threshold {ev['threshold']:.2f}"
            if status is None:
                out.append(Discrepancy("", "missed", finding, severity,
                                       f"The image model flags {name} ({p}) but the report does not mention it.",
                                       None, "", None, ev_for(finding)))
            elif status == "negated":
                out.append(Discrepancy("", "negated", finding, severity,
                                       f"The report negates {name}, but the image model flags it ({p}).",
                                       status, _sentence(facts, finding, "negated"), None, ev_for(finding)))
            else:
                side, _ = sides.get(finding, (None, None))
                stated = facts.sides_any(group)
                if side and stated and side not in stated and "bilateral" not in stated:
                    out.append(Discrepancy("", "laterality", finding, "major",
                                           f"The report places {name} on the {'/'.join(sorted(stated))}, but the "
                                           f"model's map peaks on the patient's {side}.", status,
                                           _sentence(facts, group), "/".join(sorted(stated)), ev_for(finding)))
        elif status in ("present", "uncertain") and not ev["near"]:
            if any(evidence.get(r, {}).get("positive") for r in group[1:]):
                continue  # a related label the model does flag covers the report's wording
            ids = similar_with(finding)
            if similar and len(ids) >= len(similar) / 2:
                continue  # similar cases back the report; the model alone is not enough to flag it
            out.append(Discrepancy("", "unsupported", finding, "major",
                                   f"The report states {name}, but the image model scores it "
                                   f"{ev['probability']:.2f} (threshold {ev['threshold']:.2f})"
                                   + (f" and only {len(ids)} of {len(similar)} similar cases show it." if similar
                                      else "."), status, _sentence(facts, group), None,
                                   ev_for(finding)))
    if len(similar) >= 3:
        counts: dict[str, list[str]] = {}
        for case in similar:
            for label in case.get("labels") or []:
                counts.setdefault(label, []).append(case["case_id"])
        for finding, ids in sorted(counts.items()):
            covered = finding in evidence and (evidence[finding]["positive"] or not evidence[finding]["near"])
            if len(ids) / len(similar) >= SIMILAR_MAJORITY and facts.status_any(related(finding)) is None \
                    and not covered:
                out.append(Discrepancy("", "similar_cases", finding, "minor",
                                       f"{len(ids)} of {len(similar)} similar cases show {display_name(finding)}; "
                                       "the report does not mention it.", None, "", None,
                                       Evidence(similar_case_ids=ids, similar_support=f"{len(ids)} of {len(similar)}",
                                                source="similar_cases")))
    anomaly = (analysis or {}).get("anomaly") or {}
    deviating = bool(anomaly.get("deviation_unusual"))
    if (anomaly.get("is_anomalous") or deviating) and not reported:
        reasons = []
        if anomaly.get("is_anomalous"):
            reasons.append(f"the anomaly score {float(anomaly.get('fused_score', 0)):.3f} is above its threshold "
                           f"{float(anomaly.get('threshold', 0)):.3f}")
        if deviating:
            reasons.append(f"the peak deviation from normal {float(anomaly.get('peak_deviation', 0)):.1f} is above the "
                           f"normal range (≤ {float(anomaly.get('deviation_threshold', 0)):.1f})")
        maps = (analysis or {}).get("maps") or {}
        map_ref = next((key for key in ("patch_deviation", "spatial_anomaly") if key in maps), None)
        out.append(Discrepancy("", "anomaly", "abnormality", "major",
                               "The report reads normal but " + " and ".join(reasons) + ".", None, "", None,
                               Evidence(anomaly_score=anomaly.get("fused_score"),
                                        anomaly_threshold=anomaly.get("threshold"), model_tier=anomaly.get("tier"),
                                        map_ref=map_ref)))
    for number, item in enumerate(out, start=1):
        item.id = f"D{number}"
    return out

"""Completeness checklist for a chest radiograph report, and the parsed report facts the verifier uses.

Items (each pass / fail / n/a with the reason):
  sections        FINDINGS and IMPRESSION sections present and not empty.
  laterality      every lateralisable finding stated as present has its side stated.
  comparison      a comparison (or "no prior") is mentioned.
  devices         tubes/lines/devices detected by the models are described in the report.
  impression      the impression carries the positive findings of the findings section, does not assert what
                  the findings negate, and states the same side.
  critical        critical findings (pneumothorax) asserted by the report or flagged by the models are called
                  out in the impression.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

# Findings whose side must be stated when present.
LATERAL_FINDINGS = frozenset({
    "effusion", "pneumothorax", "consolidation", "nodule", "mass", "atelectasis", "lung_opacity", "pneumonia",
    "infiltration", "lung_lesion", "pleural_thickening", "fracture",
})
CRITICAL_FINDINGS = frozenset({"pneumothorax", "pneumoperitoneum"})
# Findings the impression must carry when the findings section states them (the product's image labels).
IMPRESSION_FINDINGS = frozenset({
    "consolidation", "nodule", "effusion", "pneumothorax", "cardiomegaly", "atelectasis", "infiltration", "edema",
    "emphysema", "fibrosis", "pneumonia", "pleural_thickening", "mass", "hernia", "lung_lesion", "fracture",
    "lung_opacity", "enlarged_cardiomediastinum", "pneumoperitoneum",
})
DEVICE_LABELS = frozenset({"support_devices", "devices"})
_COMPARISON_RE = re.compile(r"\b(comparison|compared|prior (study|exam|film|radiograph|imaging)|previous (study|exam|film|"
                            r"radiograph)|no priors?|interval(ly)?|unchanged|since the (prior|previous|last))\b", re.I)
_DEVICE_TEXT_RE = re.compile(r"\b(tube|line|catheter|pacemaker|pacer|defibrillator|aicd|icd|port|stent|clips?|"
                             r"sternotomy wires?|drain|picc|cvc|leads?)\b", re.I)

NAMES = {"effusion": "pleural effusion", "lung_opacity": "lung opacity", "lung_lesion": "lung lesion",
         "pleural_thickening": "pleural thickening", "enlarged_cardiomediastinum": "enlarged cardiomediastinum",
         "support_devices": "support devices"}


def display_name(finding: str) -> str:
    """Radiologist-facing name of a canonical finding."""
    return NAMES.get(finding, finding.replace("_", " "))


@dataclass
class Mention:
    finding: str
    label: str
    status: str  # "present" | "negated" | "uncertain"
    laterality: str | None
    section: str
    sentence: str
    start: int
    end: int
    text: str


@dataclass
class ReportFacts:
    """What the report states, from `medsight.nlp.analyze_text`.

    Attributes:
        sections: section name → text.
        mentions: finding/device mentions with assertion status, side and offsets.
        nlp_tier: tier of the NLP pipeline that parsed it.
    """

    text: str
    sections: dict[str, str]
    mentions: list[Mention]
    nlp_tier: dict = field(default_factory=dict)

    def findings(self, section: str | None = None) -> list[Mention]:
        return [m for m in self.mentions if m.label in ("FINDING", "DISEASE")
                and (section is None or m.section == section)]

    def status(self, finding: str, section: str | None = None) -> str | None:
        """Overall status: "present" if any mention is present, else "uncertain", else "negated"; None if absent."""
        statuses = {m.status for m in self.findings(section) if m.finding == finding}
        for status in ("present", "uncertain", "negated"):
            if status in statuses:
                return status
        return None

    def status_any(self, findings: tuple[str, ...] | list[str], section: str | None = None) -> str | None:
        """Status over a group of related findings (first the group's own name, e.g. nodule → mass).

        Present/uncertain if any member is stated so; negated only when the first (the finding itself) is
        negated, because negating a narrower relative ("no discrete nodule") does not negate the group.
        """
        found = [self.status(f, section) for f in findings]
        for status in ("present", "uncertain"):
            if status in found:
                return status
        return "negated" if found and found[0] == "negated" else None

    def sides_any(self, findings, section: str | None = None) -> set[str]:
        return set().union(*(self.sides(f, section) for f in findings)) if findings else set()

    def sides(self, finding: str, section: str | None = None) -> set[str]:
        return {m.laterality for m in self.findings(section)
                if m.finding == finding and m.laterality and m.status != "negated"}

    def positive(self, section: str | None = None) -> set[str]:
        return {m.finding for m in self.findings(section) if m.status in ("present", "uncertain")}

    def has_devices(self) -> bool:
        return any(m.label == "DEVICE" and m.status != "negated" for m in self.mentions) or bool(
            _DEVICE_TEXT_RE.search(self.text))


def parse_report(text: str) -> ReportFacts:
    """Parse a report with the NLP stage (entities with negation, uncertainty, side and section)."""
    from medsight.nlp import analyze_text

    result = analyze_text(text).to_dict()
    mentions = [Mention(e["canonical"], e["label"], e.get("status", "present"), e.get("laterality"),
                        e.get("section", "TEXT"), e.get("sentence", ""), int(e["start"]), int(e["end"]), e["text"])
                for e in result["entities"] if e["label"] in ("FINDING", "DISEASE", "DEVICE")]
    return ReportFacts(text=text, sections=result.get("sections", {}), mentions=mentions, nlp_tier=result.get("tier", {}))


@dataclass
class ChecklistItem:
    key: str
    title: str
    status: str  # "pass" | "fail" | "n/a"
    why: str
    severity: str = "minor"  # "critical" | "major" | "minor"
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _sections_item(facts: ReportFacts) -> ChecklistItem:
    missing = [name for name in ("FINDINGS", "IMPRESSION") if not facts.sections.get(name, "").strip()]
    if missing:
        return ChecklistItem("sections", "Required sections", "fail",
                             f"Missing or empty: {', '.join(missing)}.", "major")
    return ChecklistItem("sections", "Required sections", "pass", "FINDINGS and IMPRESSION are present.")


def _laterality_item(facts: ReportFacts) -> ChecklistItem:
    lateral = sorted(f for f in facts.positive() if f in LATERAL_FINDINGS)
    if not lateral:
        return ChecklistItem("laterality", "Side stated for lateral findings", "n/a", "No lateralisable finding stated.")
    unsided = [f for f in lateral if not facts.sides(f)]
    if unsided:
        return ChecklistItem("laterality", "Side stated for lateral findings", "fail",
                             "No side given for: " + ", ".join(display_name(f) for f in unsided) + ".", "major",
                             [m.sentence for m in facts.findings() if m.finding in unsided][:4])
    return ChecklistItem("laterality", "Side stated for lateral findings", "pass",
                         "Side stated for " + ", ".join(display_name(f) for f in lateral) + ".")


def _comparison_item(facts: ReportFacts) -> ChecklistItem:
    if facts.sections.get("COMPARISON", "").strip() or _COMPARISON_RE.search(facts.text):
        return ChecklistItem("comparison", "Comparison mentioned", "pass", "A comparison or its absence is stated.")
    return ChecklistItem("comparison", "Comparison mentioned", "fail",
                         "No comparison with prior imaging (or 'no prior available') is stated.", "minor")


def _devices_item(facts: ReportFacts, devices_detected: list[str]) -> ChecklistItem:
    if not devices_detected:
        status = "pass" if facts.has_devices() else "n/a"
        return ChecklistItem("devices", "Devices and lines described", status,
                             "Devices are described." if status == "pass" else "No device detected by the models.")
    if facts.has_devices():
        return ChecklistItem("devices", "Devices and lines described", "pass",
                             "Detected devices are described in the report.")
    return ChecklistItem("devices", "Devices and lines described", "fail",
                         "The models detect " + ", ".join(devices_detected) + " but the report describes no tube, "
                         "line or device.", "major")


def _impression_item(facts: ReportFacts) -> ChecklistItem:
    impression = facts.sections.get("IMPRESSION", "").strip()
    if not impression:
        return ChecklistItem("impression", "Impression consistent with findings", "fail", "There is no impression.",
                             "major")
    problems, evidence = [], []
    in_findings = {f for f in facts.positive("FINDINGS") if f in IMPRESSION_FINDINGS}
    in_impression = facts.positive("IMPRESSION")
    for finding in sorted(in_findings - in_impression):
        problems.append(f"{display_name(finding)} is in the findings but not in the impression")
    for finding in sorted(in_impression):
        if facts.status(finding, "FINDINGS") == "negated" and finding not in facts.positive("FINDINGS"):
            problems.append(f"the impression asserts {display_name(finding)}, which the findings negate")
    for finding in sorted(in_findings & in_impression):
        a, b = facts.sides(finding, "FINDINGS"), facts.sides(finding, "IMPRESSION")
        if a and b and not (a & b):
            problems.append(f"{display_name(finding)} is {'/'.join(sorted(a))} in the findings but "
                            f"{'/'.join(sorted(b))} in the impression")
            evidence += [m.sentence for m in facts.findings() if m.finding == finding]
    if problems:
        return ChecklistItem("impression", "Impression consistent with findings", "fail",
                             "; ".join(problems).capitalize() + ".", "major", evidence[:4])
    return ChecklistItem("impression", "Impression consistent with findings", "pass",
                         "The impression carries the positive findings with the same side.")


def _critical_item(facts: ReportFacts, model_positive: set[str]) -> ChecklistItem:
    critical = sorted((facts.positive() | model_positive) & CRITICAL_FINDINGS)
    if not critical:
        return ChecklistItem("critical", "Critical findings called out", "n/a", "No critical finding stated or detected.")
    missing = [f for f in critical if f not in facts.positive("IMPRESSION")]
    if missing:
        source = ["detected by the models" if f not in facts.positive() else "in the findings" for f in missing]
        return ChecklistItem("critical", "Critical findings called out", "fail",
                             "; ".join(f"{display_name(f)} ({s}) is not called out in the impression"
                                       for f, s in zip(missing, source)).capitalize() + ".", "critical")
    return ChecklistItem("critical", "Critical findings called out", "pass",
                         "Called out in the impression: " + ", ".join(display_name(f) for f in critical) + ".")


def run_checklist(facts: ReportFacts, model_positive: set[str] | None = None,
                  devices_detected: list[str] | None = None) -> list[ChecklistItem]:
    """All checklist items for one report.

    Args:
        facts: parsed report.
        model_positive: canonical findings the image models call positive.
        devices_detected: devices the models detect (names for the message).
    """
    return [_sections_item(facts), _laterality_item(facts), _comparison_item(facts),
            _devices_item(facts, devices_detected or []), _impression_item(facts),
            _critical_item(facts, model_positive or set())]

"""Global normal statements ("the lungs are clear", "no acute cardiopulmonary process", "normal chest") and
the report contradictions they cause.

A global negative denies a whole class of findings at once, so the entity parser sees no finding in it.
When a finding is stated (or an edit states it) while such a sentence stands unqualified, the report
contradicts itself: "The lungs are clear. Right consolidation." Each statement kind has a scope, the
findings it denies, and a qualified form that keeps it true next to the finding ("the lungs are otherwise
clear", "no other acute cardiopulmonary process"); statements with no qualified form ("normal chest") are
dropped instead.

`find_contradictions(facts)` lists what the report, as parsed by the product's own NLP stage, says both
ways: a finding stated and denied by a global negative, or stated and negated on the same side.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from medsight.verify.checklist import ReportFacts, display_name

# Lung parenchyma: what "the lungs are clear" denies (pleura, heart and bones are described separately).
PARENCHYMAL = frozenset({
    "consolidation", "pneumonia", "infiltration", "lung_opacity", "edema", "atelectasis", "nodule", "mass",
    "lung_lesion",
})
PLEURAL = frozenset({"effusion", "pneumothorax", "pleural_thickening"})
# What "no acute / no active cardiopulmonary disease" denies: findings that are new or need action.
# Chronic findings (cardiomegaly, emphysema, fibrosis, hiatal hernia, granuloma) routinely stand beside it.
ACUTE = PARENCHYMAL | {"effusion", "pneumothorax", "pneumoperitoneum", "fracture"}

_QUALIFIED = re.compile(r"\b(otherwise|other|except|apart from|aside from|besides|remaining|no new|no additional|"
                        r"no further)\b", re.I)
_NOT_CHEST = re.compile(r"\b(bon[ey]|osseous|skeletal|rib|ribs|spine|spinal|soft tissues?|abdom\w*|fractures?|"
                        r"thoracic spine|bowel|dislocation)\b", re.I)
_HEADER = re.compile(r"^\s*[A-Z][A-Z /]{2,30}:\s*")
_SENTENCE = re.compile(r"[^.\n;]+(?:[.;]|$)", re.M)

# kind → (pattern, scope). Scope None means every finding.
_KINDS: list[tuple[str, re.Pattern, frozenset | None]] = [
    ("normal", re.compile(
        r"\b(?:normal|negative|unremarkable)\s+(?:chest|study|exam(?:ination)?|radiographs?|x-?rays?|cxr|pa and "
        r"lateral)\b|\b(?:no|without)\s+(?:significant\s+|radiographic\s+|focal\s+)?(?:cardiopulmonary\s+|"
        r"intrathoracic\s+)?(?:abnormalit(?:y|ies)|disease|findings?)\b|^\s*normal\.?\s*$", re.I), None),
    ("no_acute", re.compile(
        r"\b(?:no|negative\s+for|without|not\s+(?:show|demonstrate)\s+(?:any\s+)?)\s*(?:(?:evidence|signs?|"
        r"radiographic\s+evidence)\s+of\s+)?(?:any\s+)?(?:acute|active)\b(?P<mid>[^.;]{0,60}?)\b(?:abnormalit(?:y|ies)|"
        r"findings?|disease|process(?:es)?|pathology|changes?)\b", re.I), ACUTE),
    ("lungs_clear", re.compile(
        r"\b(?:lungs?|lung\s+fields?)\b(?P<mid>[^.;]{0,40}?)\bclear\b|\bclear\s+lungs?\b|\bclear\s+and\s+"
        r"(?:well[- ])?expanded\s+lungs\b", re.I), PARENCHYMAL),
    ("pleura_clear", re.compile(r"\bpleural?\s+spaces?\s+(?:are\s+|is\s+)?clear\b", re.I), PLEURAL),
]


@dataclass
class GlobalNegative:
    """One global normal statement in the report.

    Attributes:
        kind: "normal" | "no_acute" | "lungs_clear" | "pleura_clear".
        section: FINDINGS / IMPRESSION / ... (by offset).
        start / end: the sentence holding it (without its section header).
        match_start / match_end: the statement itself.
        sentence: the sentence text.
    """

    kind: str
    section: str
    start: int
    end: int
    match_start: int
    match_end: int
    sentence: str

    def denies(self, finding: str) -> bool:
        scope = next(s for k, _, s in _KINDS if k == self.kind)
        return scope is None or finding in scope

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Contradiction:
    finding: str
    kind: str  # "global_negative" | "negated"
    stated: str  # the sentence stating the finding
    denied: str  # the sentence denying it
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def _section_at(facts: ReportFacts, offset: int) -> str:
    """Section holding an offset of the report (bodies located in the text in their order)."""
    best, best_start = "TEXT", -1
    for name, body in (facts.sections or {}).items():
        body = body.strip()
        if not body:
            continue
        at = facts.text.find(body)
        if 0 <= at <= offset and at > best_start and offset <= at + len(body):
            best, best_start = name, at
    return best


def _statements(sentence: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of the unqualified global negatives in one sentence."""
    if _QUALIFIED.search(sentence):
        return []
    out = []
    for kind, pattern, _ in _KINDS:
        for m in pattern.finditer(sentence):
            if kind == "no_acute" and (_NOT_CHEST.search(m.group("mid") or "") or _NOT_CHEST.search(sentence[:m.start()])):
                continue
            if kind == "normal" and _NOT_CHEST.search(sentence[m.end():m.end() + 25]):
                continue  # "no abnormality of the bones"
            if kind == "normal" and re.search(r"\b(acute|active)\b", sentence[m.start():m.end()], re.I):
                continue
            if any(s <= m.start() < e for _, s, e in out):
                continue
            out.append((kind, m.start(), m.end()))
    return out


def global_negatives(facts: ReportFacts) -> list[GlobalNegative]:
    """Unqualified global normal statements of the report, in text order."""
    text = facts.text
    out = []
    for sm in _SENTENCE.finditer(text):
        start, raw = sm.start(), sm.group(0)
        header = _HEADER.match(raw)
        if header:
            start += header.end()
            raw = raw[header.end():]
        lead = len(raw) - len(raw.lstrip())
        start, raw = start + lead, raw.strip()
        if not raw:
            continue
        for kind, s, e in _statements(raw):
            out.append(GlobalNegative(kind, _section_at(facts, start), start, start + len(raw), start + s, start + e,
                                      raw))
    return out


def qualify(sentence: str, finding: str | None = None) -> str | None:
    """The sentence with its global negatives qualified ("otherwise clear", "no other acute"), "" when the
    whole sentence is a plain normal statement that has no qualified form, None when nothing needs changing.

    Args:
        finding: only statements that deny this finding are changed (None: all of them).
    """
    found = [(k, s, e) for k, s, e in _statements(sentence)
             if finding is None or GlobalNegative(k, "", 0, 0, 0, 0, "").denies(finding)]
    if not found:
        return None
    out = sentence
    for kind, s, e in sorted(found, key=lambda x: -x[1]):
        phrase = out[s:e]
        if kind == "lungs_clear":
            m = re.search(r"\bclear\b", phrase, re.I)
            phrase = phrase[:m.start()] + "otherwise " + phrase[m.start():] if not phrase.lower().startswith("clear") \
                else "otherwise " + phrase[:1].lower() + phrase[1:]
        elif kind == "pleura_clear":
            m = re.search(r"\bclear\b", phrase, re.I)
            phrase = phrase[:m.start()] + "otherwise " + phrase[m.start():]
        elif kind == "no_acute":
            m = re.search(r"\b(acute|active)\b", phrase, re.I)
            phrase = phrase[:m.start()] + "other " + phrase[m.start():]
        else:  # "normal": "no abnormality" → "no other abnormality"; "normal chest" has no qualified form
            m = re.match(r"(no|without)\s+", phrase, re.I)
            if not m:
                return ""
            phrase = phrase[:m.end()] + "other " + phrase[m.end():]
        out = out[:s] + phrase + out[e:]
    if out[:1].islower() and sentence[:1].isupper():
        out = out[:1].upper() + out[1:]
    return out


def find_contradictions(facts: ReportFacts) -> list[Contradiction]:
    """Findings the report both states (present or uncertain) and denies.

    Two ways: an unqualified global negative whose scope covers the finding ("lungs are clear" and
    "right consolidation"), or a negated mention of the same finding on the same side (or without a side).
    """
    out: list[Contradiction] = []
    stated = [m for m in facts.findings() if m.status in ("present", "uncertain")]
    negatives = global_negatives(facts)
    seen = set()
    for m in stated:
        for g in negatives:
            if g.denies(m.finding) and g.start <= m.start < g.end:
                continue  # the finding is part of the same sentence ("clear lungs apart from ...")
            if g.denies(m.finding) and (m.finding, g.sentence) not in seen:
                seen.add((m.finding, g.sentence))
                out.append(Contradiction(m.finding, "global_negative", m.sentence, g.sentence,
                                         f"The report states {display_name(m.finding)} but also “{g.sentence}”."))
        for n in facts.findings():
            if n.finding != m.finding or n.status != "negated":
                continue
            if m.laterality and n.laterality and m.laterality != n.laterality:
                continue
            if (m.finding, n.sentence) in seen or n.sentence == m.sentence:
                continue
            seen.add((m.finding, n.sentence))
            out.append(Contradiction(m.finding, "negated", m.sentence, n.sentence,
                                     f"The report states {display_name(m.finding)} but also negates it: "
                                     f"“{n.sentence}”."))
    return out

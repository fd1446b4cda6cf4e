"""Suggested edits as minimal text replacements the user accepts or rejects one by one.

Every edit is computed against the original report: a character span [start, end) and its replacement,
shrunk with `difflib.SequenceMatcher` to the part that actually changes, plus a unified diff for display.
`apply_edits` applies the accepted ones from the end of the text backwards, so offsets stay valid;
an edit whose original text no longer matches, or that overlaps one already applied, is skipped.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass

from medsight.verify.checklist import ChecklistItem, ReportFacts, display_name
from medsight.verify.discrepancies import Discrepancy, related


@dataclass
class SuggestedEdit:
    id: str
    title: str
    reason: str
    start: int
    end: int
    original: str
    replacement: str
    diff: str
    discrepancy_id: str | None = None
    checklist_key: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def _minimal(text: str, start: int, end: int, replacement: str) -> tuple[int, int, str]:
    """Shrink a replacement to its changed whole words (common leading and trailing tokens dropped)."""
    original = text[start:end]
    a = [m for m in _TOKEN.finditer(original)]
    b = [m for m in _TOKEN.finditer(replacement)]
    matcher = difflib.SequenceMatcher(a=[m.group(0) for m in a], b=[m.group(0) for m in b], autojunk=False)
    ops = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if not ops:
        return start, start, ""
    (_, a0, _, b0, _), (_, _, a1, _, b1) = ops[0], ops[-1]
    a_start = a[a0].start() if a0 < len(a) else len(original)
    a_end = a[a1 - 1].end() if a1 > 0 else 0
    a_end = max(a_end, a_start)
    b_start = b[b0].start() if b0 < len(b) else len(replacement)
    b_end = b[b1 - 1].end() if b1 > 0 else 0
    b_end = max(b_end, b_start)
    return start + a_start, start + a_end, replacement[b_start:b_end]


def unified_diff(before: str, after: str) -> str:
    """Line diff of the whole report, without context lines (what the diff view shows)."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "report", "suggested", n=0, lineterm="")
    return "\n".join(line for line in lines if not line.startswith(("---", "+++")))


def make_edit(text: str, start: int, end: int, replacement: str, title: str, reason: str,
              discrepancy_id: str | None = None, checklist_key: str | None = None) -> SuggestedEdit | None:
    """An edit replacing text[start:end] with `replacement`, minimised; None when nothing changes."""
    s, e, new = _minimal(text, start, end, replacement)
    if s == e and not new:
        return None
    after = text[:s] + new + text[e:]
    return SuggestedEdit("", title, reason, s, e, text[s:e], new, unified_diff(text, after), discrepancy_id,
                         checklist_key)


def apply_edits(text: str, edits: list[SuggestedEdit] | list[dict], accepted_ids) -> str:
    """Apply the accepted edits to the report they were computed for.

    Args:
        text: the original report.
        edits: `SuggestedEdit`s (or their dicts) from one verification of `text`.
        accepted_ids: ids of the edits the user accepted.

    Returns:
        The edited report. Stale or overlapping edits are skipped.
    """
    accepted = set(accepted_ids)
    items = [e if isinstance(e, SuggestedEdit) else SuggestedEdit(**e) for e in edits]
    chosen = sorted((e for e in items if e.id in accepted), key=lambda e: (e.start, e.end), reverse=True)
    applied_from = len(text) + 1  # start of the leftmost span applied so far
    for edit in chosen:
        if text[edit.start:edit.end] != edit.original:
            continue
        if edit.end > applied_from:  # overlaps an edit already applied to its right
            continue
        text = text[:edit.start] + edit.replacement + text[edit.end:]
        applied_from = edit.start
    return text


# ----------------------------------------------------------------------------------------------------- rules

_SIDE_WORD = re.compile(r"\b(left|right|bilateral)\b", re.I)


def _side_phrase(side: str | None, finding: str) -> str:
    name = display_name(finding)
    return f"{side.capitalize()} {name}" if side in ("left", "right") else (
        f"Bilateral {name}" if side == "bilateral" else name.capitalize())


def _section_end(text: str, facts: ReportFacts, section: str) -> int | None:
    """Offset just after the last sentence of a section (before trailing whitespace)."""
    body = facts.sections.get(section, "").strip()
    if not body:
        return None
    index = text.rfind(body)
    return index + len(body) if index >= 0 else None


def _match_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def suggest_edits(text: str, facts: ReportFacts, discrepancies: list[Discrepancy],
                  checklist: list[ChecklistItem]) -> list[SuggestedEdit]:
    """Edits for the discrepancies and checklist failures that have an unambiguous textual fix."""
    edits: list[SuggestedEdit] = []
    findings_end = _section_end(text, facts, "FINDINGS")
    impression_end = _section_end(text, facts, "IMPRESSION")
    critical_added: set[str] = set()

    for d in discrepancies:
        side = d.evidence.map_side
        if d.kind == "laterality" and side:
            group = related(d.finding)
            for m in facts.findings():
                if m.finding not in group or m.status == "negated" or not m.laterality or m.laterality == side:
                    continue
                # The side word sits in the mention's sentence, usually just before the finding.
                sentence_start = text.rfind(m.sentence, 0, m.end) if m.sentence else -1
                lo = sentence_start if sentence_start >= 0 else max(0, m.start - 60)
                window = text[lo:m.end]
                words = [w for w in _SIDE_WORD.finditer(window) if w.group(1).lower() == m.laterality]
                if not words:
                    continue
                w = words[-1]
                edit = make_edit(text, lo + w.start(), lo + w.end(), _match_case(side, w.group(0)),
                                 f"Change side of {display_name(d.finding)} to {side}", d.message, d.id)
                if edit:
                    edits.append(edit)
        elif d.kind == "negated":
            # Every sentence that negates the finding gets its own edit (FINDINGS and IMPRESSION alike), so
            # accepting them all cannot leave the report contradicting itself.
            restated_in_impression = False
            edited_sentences: set[int] = set()
            for m in facts.findings():
                if m.finding != d.finding or m.status != "negated" or not m.sentence:
                    continue
                s0 = text.rfind(m.sentence, 0, m.start + len(m.sentence))  # the sentence holding this mention
                if s0 < 0 or s0 in edited_sentences:
                    continue
                edited_sentences.add(s0)
                sentence = m.sentence
                local = m.start - s0
                stated = _side_phrase(side, d.finding) + "."
                before, after = sentence[:local], sentence[local + len(m.text):]
                if re.fullmatch(r"\s*(no|there is no|there are no|without|negative for)\s+(evidence of\s+)?"
                                r"(focal\s+|significant\s+|definite\s+)?", before, re.I) and re.fullmatch(r"[\s.]*", after):
                    new_sentence = stated
                elif re.match(r"\s*(or|and|,)\s+", after):
                    joined = re.match(r"\s*(or|and|,)\s+", after)
                    new_sentence = before + after[joined.end():] + " " + stated
                elif re.search(r"\s+(or|and|,)\s*$", before):
                    joined = re.search(r",?\s+(or|and)\s*$|,\s*$", before)
                    new_sentence = before[:joined.start()] + after + " " + stated
                else:
                    new_sentence = stated
                edit = make_edit(text, s0, s0 + len(sentence), new_sentence,
                                 f"State {display_name(d.finding)} instead of negating it", d.message, d.id)
                if edit:
                    edits.append(edit)
                    restated_in_impression |= m.section == "IMPRESSION"
            if (d.severity == "critical" and impression_end is not None and d.finding not in critical_added
                    and not restated_in_impression):
                edit = make_edit(text, impression_end, impression_end, " " + _side_phrase(side, d.finding) + ".",
                                 f"Call out {display_name(d.finding)} in the impression", d.message, d.id)
                if edit:
                    edits.append(edit)
                    critical_added.add(d.finding)
        elif d.kind == "missed" and findings_end is not None:
            edit = make_edit(text, findings_end, findings_end, " " + _side_phrase(side, d.finding) + ".",
                             f"Add {display_name(d.finding)} to the findings", d.message, d.id)
            if edit:
                edits.append(edit)
            if d.severity == "critical" and impression_end is not None:
                edit = make_edit(text, impression_end, impression_end, " " + _side_phrase(side, d.finding) + ".",
                                 f"Call out {display_name(d.finding)} in the impression", d.message, d.id)
                if edit:
                    edits.append(edit)
                    critical_added.add(d.finding)

    for item in checklist:
        if item.status != "fail":
            continue
        if item.key in ("sections", "impression") and impression_end is None and findings_end is not None:
            positives = [f for f in sorted(facts.positive("FINDINGS"))]
            summary = " ".join(_side_phrase(next(iter(sorted(facts.sides(f)))) if facts.sides(f) else None, f) + "."
                               for f in positives) or "No acute cardiopulmonary abnormality."
            edit = make_edit(text, len(text.rstrip()), len(text.rstrip()), f"\n\nIMPRESSION: {summary}",
                             "Add an impression", item.why, checklist_key=item.key)
            if edit and not any(e.checklist_key == item.key or e.title == edit.title for e in edits):
                edits.append(edit)
        elif item.key == "critical" and impression_end is not None:
            for finding in ("pneumothorax", "pneumoperitoneum"):
                if finding in critical_added or finding in facts.positive("IMPRESSION") \
                        or finding not in facts.positive():
                    continue
                sides = facts.sides(finding)
                edit = make_edit(text, impression_end, impression_end,
                                 " " + _side_phrase(next(iter(sorted(sides))) if sides else None, finding) + ".",
                                 f"Call out {display_name(finding)} in the impression", item.why,
                                 checklist_key=item.key)
                if edit:
                    edits.append(edit)
    for number, edit in enumerate(edits, start=1):
        edit.id = f"E{number}"
    return edits

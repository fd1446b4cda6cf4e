"""Suggested edits as minimal text replacements the user accepts or rejects one by one.

Every edit is computed against the original report: a character span [start, end) and its replacement,
shrunk with `difflib.SequenceMatcher` to the part that actually changes, plus a unified diff for display.
`apply_edits` applies the accepted ones from the end of the text backwards, so offsets stay valid;
an edit whose original text no longer matches, or that overlaps one already applied, is skipped.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field

from medsight.verify.checklist import ChecklistItem, ReportFacts, display_name
from medsight.verify.coherence import global_negatives, qualify
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
    # Edits that keep the report coherent travel together: a primary edit lists the edits applied with it
    # (`linked_ids`); a linked edit lists its primaries (`applies_with`) and is applied when any is accepted.
    linked_ids: list[str] = field(default_factory=list)
    applies_with: list[str] = field(default_factory=list)

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
              discrepancy_id: str | None = None, checklist_key: str | None = None,
              minimal: bool = True) -> SuggestedEdit | None:
    """An edit replacing text[start:end] with `replacement`, minimised unless `minimal` is False (a whole
    sentence, so that any other edit inside it counts as overlapping); None when nothing changes."""
    s, e, new = _minimal(text, start, end, replacement) if minimal else (start, end, replacement)
    if minimal is False and text[start:end] == replacement:
        return None
    if s == e and not new:
        return None
    after = text[:s] + new + text[e:]
    return SuggestedEdit("", title, reason, s, e, text[s:e], new, unified_diff(text, after), discrepancy_id,
                         checklist_key)


def apply_edits(text: str, edits: list[SuggestedEdit] | list[dict], accepted_ids) -> str:
    """Apply the accepted edits, and the edits linked to them, to the report they were computed for.

    Args:
        text: the original report.
        edits: `SuggestedEdit`s (or their dicts) from one verification of `text`.
        accepted_ids: ids of the edits the user accepted. A linked edit (`applies_with`) comes along with any
            of its primary edits.

    Returns:
        The edited report. Stale edits are skipped; of two overlapping edits the one accepted explicitly wins
        (then the earlier one), so a linked edit never displaces a primary one.
    """
    accepted = set(accepted_ids)
    items = [e if isinstance(e, SuggestedEdit) else SuggestedEdit(**e) for e in edits]
    explicit = [e for e in items if e.id in accepted]
    linked = [e for e in items if e.id not in accepted and accepted.intersection(e.applies_with)]
    kept: list[tuple[int, SuggestedEdit]] = []
    for order, edit in enumerate(explicit + linked):
        if text[edit.start:edit.end] != edit.original:
            continue
        if any(_overlaps(other, edit.start, edit.end) or _overlaps(edit, other.start, other.end) for _, other in kept):
            continue
        kept.append((order, edit))
    # From the end backwards so offsets stay valid; of insertions at one offset the first listed ends up first.
    for _, edit in sorted(kept, key=lambda item: (item[1].start, item[1].end, item[0]), reverse=True):
        text = text[:edit.start] + edit.replacement + text[edit.end:]
    return text


def preview(text: str, edits: list[SuggestedEdit] | list[dict], edit_id: str) -> str:
    """Diff of the report after accepting one edit (with the edits linked to it): what the user sees."""
    return unified_diff(text, apply_edits(text, edits, [edit_id]))


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


def _drop_negated(sentence: str, local: int, mention: str) -> str | None:
    """The sentence without one negated finding ("No consolidation or effusion." → "No effusion."); None when
    nothing of the sentence is left to keep."""
    before, after = sentence[:local], sentence[local + len(mention):]
    if re.fullmatch(r"\s*(no|there is no|there are no|without|negative for)\s+(evidence of\s+)?"
                    r"(focal\s+|significant\s+|definite\s+)?", before, re.I) and re.fullmatch(r"[\s.]*", after):
        return None
    joined = re.match(r"\s*(or|and|,)\s+", after)
    if joined:
        return before + after[joined.end():]
    joined = re.search(r",?\s+(or|and)\s*$|,\s*$", before)
    if joined:
        return before[:joined.start()] + after
    return None


def _stop(text: str, end: int) -> str:
    """"." when the sentence ending at `end` has no full stop (so an appended sentence stays its own)."""
    return "" if text[:end].rstrip()[-1:] in (".", "!", "?", "") else "."


def _overlaps(edit: SuggestedEdit, start: int, end: int) -> bool:
    return edit.start < end and start < edit.end or (edit.start == edit.end and start < edit.start < end)


def suggest_edits(text: str, facts: ReportFacts, discrepancies: list[Discrepancy],
                  checklist: list[ChecklistItem]) -> list[SuggestedEdit]:
    """Edits for the discrepancies and checklist failures that have an unambiguous textual fix.

    An edit that states a finding (adds it, or un-negates it) keeps the report coherent: global normal
    statements that deny the finding ("the lungs are clear", "no acute cardiopulmonary process", "normal
    chest") are qualified or removed, inside the same edit when they share its sentence, else by linked
    edits (`applies_with`) that are applied whenever one of their primary edits is accepted; a global
    negative in the impression also gets the finding called out in front of it.
    """
    edits: list[SuggestedEdit] = []
    findings_end = _section_end(text, facts, "FINDINGS")
    impression_end = _section_end(text, facts, "IMPRESSION")
    critical_added: set[str] = set()
    adding = {d.finding for d in discrepancies if d.kind in ("missed", "negated")}
    stating: dict[str, list[SuggestedEdit]] = {}  # finding → primary edits that state it
    side_of: dict[str, str | None] = {}
    reason_of: dict[str, Discrepancy] = {}
    in_impression: set[str] = set()
    links: list[tuple[SuggestedEdit, list[SuggestedEdit]]] = []  # (linked edit, the primaries it goes with)

    def qualified(sentence: str) -> str:
        for finding in sorted(adding):
            q = qualify(sentence, finding)
            if q is not None:
                sentence = q
        return sentence

    negated_by_sentence: dict[int, list[tuple[Discrepancy, object]]] = {}
    for d in discrepancies:
        side = d.evidence.map_side
        if d.kind in ("missed", "negated"):
            side_of[d.finding], reason_of[d.finding] = side, d
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
            # Every sentence that negates the finding gets an edit (FINDINGS and IMPRESSION alike), so accepting
            # them all cannot leave the report contradicting itself; findings negated in one sentence share it.
            for m in facts.findings():
                if m.finding != d.finding or m.status != "negated" or not m.sentence:
                    continue
                s0 = text.rfind(m.sentence, 0, m.start + len(m.sentence))  # the sentence holding this mention
                if s0 < 0:
                    continue
                items = negated_by_sentence.setdefault(s0, [])
                if not any(other is m for _, other in items):  # every mention: "airspace disease or consolidation"
                    items.append((d, m))
        elif d.kind == "missed" and findings_end is not None:
            edit = make_edit(text, findings_end, findings_end,
                             _stop(text, findings_end) + " " + _side_phrase(side, d.finding) + ".",
                             f"Add {display_name(d.finding)} to the findings", d.message, d.id)
            if edit:
                edits.append(edit)
                stating.setdefault(d.finding, []).append(edit)

    from medsight.nlp import canonical_finding

    for s0, items in sorted(negated_by_sentence.items()):
        sentence = items[0][1].sentence
        kept: str | None = sentence
        for d, m in sorted(items, key=lambda item: -item[1].start):  # right to left: earlier offsets stay valid
            # A finding denied by a normality statement ("heart size normal") is not named: the whole
            # sentence is what denies it, so the sentence goes.
            named = canonical_finding(m.text) in related(d.finding)
            kept = _drop_negated(kept, m.start - s0, m.text) if kept is not None and named else None
        ordered = []  # one (discrepancy, first mention) per finding, in text order
        for d, m in sorted(items, key=lambda item: item[1].start):
            if not any(other.finding == d.finding for other, _ in ordered):
                ordered.append((d, m))
        stated = " ".join(_side_phrase(d.evidence.map_side, d.finding) + "." for d, _ in ordered)
        kept = qualified(re.sub(r"\.{2,}$", ".", kept.strip())) if kept and kept.strip(" .") else ""
        new_sentence = (kept + " " + stated) if kept else stated
        names = " and ".join(display_name(d.finding) for d, _ in ordered)
        edit = make_edit(text, s0, s0 + len(sentence), new_sentence,
                         f"State {names} instead of negating {'them' if len(ordered) > 1 else 'it'}",
                         " ".join(d.message for d, _ in ordered), ordered[0][0].id)
        if not edit:
            continue
        edits.append(edit)
        for d, m in ordered:
            stating.setdefault(d.finding, []).append(edit)
            if m.section == "IMPRESSION":
                in_impression.add(d.finding)

    # Global normal statements that deny a finding an edit states: qualified once, linked to every such edit.
    negatives = global_negatives(facts)
    shared: dict[int, tuple[SuggestedEdit, list[SuggestedEdit]]] = {}
    for finding in sorted(stating):
        primaries = stating[finding]
        name = display_name(finding)
        for g in negatives:
            if not g.denies(finding) or any(_overlaps(p, g.start, g.end) for p in primaries):
                continue  # out of scope, or inside a sentence the finding's own edit rewrites
            if g.start not in shared:
                replacement = qualified(g.sentence)
                edit = make_edit(text, g.start, g.end, replacement,
                                 (f"Qualify “{g.sentence}”" if replacement else f"Remove “{g.sentence}”"),
                                 f"“{g.sentence}” contradicts {name}, which the linked edit states.",
                                 reason_of[finding].id if finding in reason_of else None, minimal=False)
                if edit is None:
                    continue
                shared[g.start] = (edit, [])
                edits.append(edit)
                links.append(shared[g.start])
            shared[g.start][1].extend(p for p in primaries if p not in shared[g.start][1])
            if g.section == "IMPRESSION" and finding not in in_impression:
                callout = make_edit(text, g.start, g.start, _side_phrase(side_of.get(finding), finding) + ". ",
                                    f"Call out {name} in the impression",
                                    f"The impression’s “{g.sentence}” would otherwise deny {name}.",
                                    reason_of[finding].id if finding in reason_of else None)
                if callout:
                    edits.append(callout)
                    links.append((callout, list(primaries)))
                    in_impression.add(finding)
                    critical_added.add(finding)

    for finding in sorted(adding):
        d = reason_of[finding]
        if d.severity != "critical" or impression_end is None or finding in in_impression or finding in critical_added:
            continue
        edit = make_edit(text, impression_end, impression_end,
                         _stop(text, impression_end) + " " + _side_phrase(d.evidence.map_side, finding) + ".",
                         f"Call out {display_name(finding)} in the impression", d.message, d.id)
        if edit:
            edits.append(edit)
            critical_added.add(finding)

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
                edit = make_edit(text, impression_end, impression_end, _stop(text, impression_end) + " "
                                 + _side_phrase(next(iter(sorted(sides))) if sides else None, finding) + ".",
                                 f"Call out {display_name(finding)} in the impression", item.why,
                                 checklist_key=item.key)
                if edit:
                    edits.append(edit)
    for number, edit in enumerate(edits, start=1):
        edit.id = f"E{number}"
    for linked, primaries in links:
        linked.applies_with = [p.id for p in primaries]
        for p in primaries:
            p.linked_ids.append(linked.id)
    return edits

"""Clinical entity extraction: a spaCy pipeline with a radiology EntityRuler, NegEx and own rules.

The pipeline is built once per process (through the registry slot "nlp.entities") and reused:

    tokeniser + sentence splitter (scispaCy model when installed, else en_core_web_sm)
    → EntityRuler over the radiology lexicon (findings, diseases, anatomy, devices, symptoms, medications)
    → NegEx (negspacy, en_clinical termset + radiology additions)

then, in Python: ConText-style hedge, conditional and differential triggers (`negation.UncertaintyRules`; they
win over NegEx for "cannot exclude", a denial before a hedge wins over it), anatomical qualifiers that move a
mention to another organ ("soft tissue edema"), fractures of device parts, statements of normality
("heart size is normal" → cardiomegaly negated), findings described without their name ("heart size is
mildly enlarged" → cardiomegaly), laterality, severity and the report section of each mention.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from spacy.language import Language
from spacy.tokens import Doc, Span

from medsight.nlp import lexicon
from medsight.nlp.negation import NEGATED, PRESENT, UNCERTAIN, UncertaintyRules, add_negex, assertion
from medsight.nlp.sections import section_spans

RULER_PIPE = "radiology_ruler"
SENTENCE_FIX_PIPE = "medsight_sentence_breaks"
# How many tokens either side of a mention are searched for a laterality / severity word.
LATERALITY_WINDOW = 6
SEVERITY_WINDOW = 3


@Language.component(SENTENCE_FIX_PIPE)
def _sentence_breaks(doc: Doc) -> Doc:
    """Start a sentence after a line break and after a section header ("IMPRESSION:")."""
    if doc.has_annotation("DEP"):  # a parser's sentence boundaries cannot be rewritten (scispaCy)
        return doc
    for i, token in enumerate(doc[:-1]):
        nxt = doc[i + 1]
        if "\n" in token.text or (token.text == ":" and i > 0 and doc[i - 1].text.isupper() and len(doc[i - 1]) > 3):
            nxt.is_sent_start = True
        elif token.text == ":" and i > 0:
            nxt.is_sent_start = False
    return doc


@dataclass
class Entity:
    """One mention in the text.

    Attributes:
        text: the words as written.
        label: FINDING / DISEASE / ANATOMY / DEVICE / SYMPTOM / MEDICATION.
        canonical: normalised name (for findings, the product label set: "effusion", "cardiomegaly", ...).
        start, end: character offsets in the analysed text.
        negated / uncertain: assertion flags; `status` is "present", "negated" or "uncertain".
        cue: the negation / uncertainty / normality phrase that decided the status, if any.
        laterality: "left" / "right" / "bilateral" or None.
        severity: "mild" / "moderate" / "severe" or None.
        section: report section the mention is in (e.g. "FINDINGS"), "TEXT" for unheaded text.
        sentence: the sentence holding the mention (the evidence shown to the user).
        rule: which rule produced it ("lexicon", "normal-statement", "description").
    """

    text: str
    label: str
    canonical: str
    start: int
    end: int
    negated: bool = False
    uncertain: bool = False
    status: str = PRESENT
    cue: str | None = None
    laterality: str | None = None
    severity: str | None = None
    section: str = "TEXT"
    sentence: str = ""
    rule: str = "lexicon"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClinicalPipeline:
    """The loaded spaCy pipeline plus the rule matchers that go with it."""

    nlp: Language
    base_model: str
    uncertainty: UncertaintyRules = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.uncertainty is None:
            self.uncertainty = UncertaintyRules.build(self.nlp)

    def __call__(self, text: str) -> Doc:
        return self.nlp(text)


def build_pipeline(base: Language, base_model: str) -> ClinicalPipeline:
    """Add the radiology EntityRuler and NegEx to a tokenising/sentence-splitting spaCy pipeline.

    Args:
        base: a spaCy pipeline that splits sentences (en_core_web_sm with `senter`, scispaCy, or a blank
            pipeline with a `sentencizer`).
        base_model: its name, recorded in the provenance.
    """
    if SENTENCE_FIX_PIPE not in base.pipe_names:
        base.add_pipe(SENTENCE_FIX_PIPE)
    if RULER_PIPE not in base.pipe_names:
        # overwrite_ents: lexicon matches win over a statistical NER (scispaCy) where they overlap.
        ruler = base.add_pipe(
            "entity_ruler", name=RULER_PIPE,
            config={"phrase_matcher_attr": "LOWER", "overwrite_ents": True, "validate": False},
        )
        ruler.add_patterns(lexicon.ruler_patterns())
    add_negex(base)
    return ClinicalPipeline(nlp=base, base_model=base_model)


def _section_of(offset: int, spans: list[tuple[str, int, int]]) -> str:
    for name, start, end in spans:
        if start <= offset < end:
            return name
    return "TEXT"


def _attribute(doc: Doc, span: Span, table: dict[str, str], window: int, stop_at: set[int]) -> list[str]:
    """Attribute words (laterality, severity) inside `span`, else before it, else after it.

    The search stays in the sentence and stops at another finding (`stop_at` holds their token indices),
    so "effusion and left base atelectasis" gives "left" to atelectasis only.
    """
    inside = [table[t.lower_] for t in span if t.lower_ in table]
    if inside:
        return inside
    sent = span.sent
    found = []
    for i in range(span.start - 1, max(sent.start, span.start - window) - 1, -1):
        if i in stop_at or doc[i].text in {";", "."}:
            break
        if doc[i].lower_ in table:
            found.append(table[doc[i].lower_])
    if found:
        return found
    for i in range(span.end, min(sent.end, span.end + window)):
        if i in stop_at or doc[i].text in {";", ".", ","}:
            break
        if doc[i].lower_ in table:
            found.append(table[doc[i].lower_])
            break
    return found


def _laterality(words: list[str]) -> str | None:
    sides = set(words)
    if not sides:
        return None
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral"
    return sides.pop()


def _severity(words: list[str]) -> str | None:
    order = {"mild": 0, "moderate": 1, "severe": 2}
    return max(words, key=order.__getitem__) if words else None


_CONFLICTS_NORMAL = re.compile(
    r"enlarg|cardiomegaly|\blarge|prominen|widen|upper limits? of normal|top normal|borderline|abnormal",
    re.IGNORECASE,
)
_NORMAL_WORDS = re.compile(r"\b(?:normal|within normal limits|unremarkable|not enlarged)\b", re.IGNORECASE)
_NORMAL_SUBJECTS = {
    "cardiomegaly": re.compile(r"\b(?:heart|cardiac|cardio ?mediastinal|cardiomediastinum)\b", re.IGNORECASE),
    "enlarged_cardiomediastinum": re.compile(
        r"\b(?:mediastinum|mediastinal|cardio ?mediastinal|cardiomediastinum)\b", re.IGNORECASE
    ),
}
_DESCRIBED = [
    (canonical, re.compile(p, re.IGNORECASE))
    for canonical, patterns in lexicon.DESCRIBED_FINDINGS.items()
    for p in patterns
]
_BORDERLINE = re.compile("|".join(lexicon.BORDERLINE_PATTERNS), re.IGNORECASE)
_NEGATION_BEFORE = re.compile(r"\b(?:no|not|without|negative for)\b[^.;]*$", re.IGNORECASE)


def _sentence_rules(doc: Doc, sections: list[tuple[str, int, int]]) -> list[Entity]:
    """Normality statements and described findings, one sentence at a time."""
    out: list[Entity] = []
    for sent in doc.sents:
        text, base = sent.text, sent.start_char
        if _NORMAL_WORDS.search(text) and not _CONFLICTS_NORMAL.search(text):
            for canonical, subject in _NORMAL_SUBJECTS.items():
                m = subject.search(text)
                if m:
                    out.append(Entity(
                        text=m.group(0), label=lexicon.FINDING, canonical=canonical,
                        start=base + m.start(), end=base + m.end(), negated=True, status=NEGATED,
                        cue=_NORMAL_WORDS.search(text).group(0).lower(), section=_section_of(base + m.start(), sections),
                        sentence=text.strip(), rule="normal-statement",
                    ))
        described: set[str] = set()
        for canonical, pattern in _DESCRIBED:
            m = pattern.search(text)
            if not m or canonical in described:
                continue
            described.add(canonical)
            negated = bool(_NEGATION_BEFORE.search(text[: m.start()])) or " not " in f" {m.group(0).lower()} "
            borderline = _BORDERLINE.search(m.group(0))
            out.append(Entity(
                text=m.group(0), label=lexicon.FINDING, canonical=canonical, start=base + m.start(),
                end=base + m.end(), negated=negated and not borderline, uncertain=bool(borderline),
                status=assertion(negated, bool(borderline)), cue=borderline.group(0).lower() if borderline else None,
                section=_section_of(base + m.start(), sections), sentence=text.strip(), rule="description",
            ))
    return out


# The same word in another organ ("soft tissue edema", "subcutaneous emphysema"): a qualifier this close
# before the finding, or in an "of the ..." phrase after it, moves the mention to the other finding.
_ORGAN_QUALIFIERS: dict[str, tuple[re.Pattern, str]] = {
    "edema": (re.compile(r"\b(?:soft[- ]tissues?|subcutaneous|chest wall|extremit\w*|scalp|neck|breasts?|"
                         r"facial|periorbital|abdominal wall|flank)\b", re.IGNORECASE), "soft_tissue_edema"),
    "emphysema": (re.compile(r"\b(?:subcutaneous|soft[- ]tissues?|chest wall|mediastinal|neck|interstitial "
                             r"soft tissue)\b", re.IGNORECASE), "subcutaneous_emphysema"),
    "effusion": (re.compile(r"\b(?:pericardial|pericardium|joint|knee|subpulmonic pericardial)\b", re.IGNORECASE),
                 "pericardial_effusion"),
}
QUALIFIER_WINDOW = 4
# A fracture of a device part (a screw, a lead, a wire) is not a bone fracture.
_DEVICE_PARTS = re.compile(r"^(?:screws?|wires?|leads?|catheters?|hardware|fixation|pacemaker|plates?|prosthes[ie]s|"
                           r"tubes?|lines?|stents?|clips?|generator|devices?)$", re.IGNORECASE)
_BONE_WORDS = re.compile(r"^(?:ribs?|bones?|bony|osseous|clavicles?|vertebra\w*|spine|spinous|humer\w*|femur|"
                         r"femoral|scapula\w*|sternum|sternal|hip|skeletal|compression|scaphoid|wrist|transverse)$",
                         re.IGNORECASE)
FRACTURE_WINDOW = 8


def _organ_of(doc: Doc, ent: Span, canonical: str) -> str:
    """The finding a mention names once its anatomical qualifier is read ("soft tissue edema")."""
    rule = _ORGAN_QUALIFIERS.get(canonical)
    if rule is None:
        return canonical
    pattern, other = rule
    sent = ent.sent
    before = doc[max(sent.start, ent.start - QUALIFIER_WINDOW) : ent.start].text
    after = doc[ent.end : min(sent.end, ent.end + QUALIFIER_WINDOW + 1)].text
    if pattern.search(before) or (re.match(r"\s*(?:of|in|within|along|over)\b", after) and pattern.search(after)):
        return other
    return canonical


def _device_fracture(doc: Doc, ent: Span) -> bool:
    """True when a fracture mention is about a device part rather than a bone (nearest word decides)."""
    sent = ent.sent
    device = bone = None
    for i in range(max(sent.start, ent.start - FRACTURE_WINDOW), min(sent.end, ent.end + FRACTURE_WINDOW)):
        if ent.start <= i < ent.end:
            continue
        distance = ent.start - i if i < ent.start else i - ent.end + 1
        word = doc[i].text
        if _DEVICE_PARTS.match(word) and (device is None or distance < device):
            device = distance
        if _BONE_WORDS.match(word) and (bone is None or distance < bone):
            bone = distance
    return device is not None and (bone is None or device < bone)


NODULAR_CUE = "nodular (a shape, not called a nodule)"
_NEGATION_WORD = re.compile(r"\b(?:no|not|without|negative for)\b", re.IGNORECASE)


def _negation_governs(ent: Span, cue: str) -> bool:
    """True when NegEx's denial comes before the hedge in the sentence ("no opacity to suggest pneumonia").

    Hedges that are themselves denials of certainty ("cannot exclude") always win over NegEx.
    """
    if cue in lexicon.UNCERTAIN_OVERRIDES_NEGATION:
        return False
    before = ent.sent.text[: ent.start_char - ent.sent.start_char].lower()
    found = list(re.finditer(rf"(?<!\w){re.escape(cue)}(?!\w)", before))
    if not found:
        return True  # a following hedge: NegEx's denial before the mention governs it
    return bool(_NEGATION_WORD.search(before[: found[-1].start()]))


def extract_entities(pipeline: ClinicalPipeline, text: str, doc: Doc | None = None) -> list[Entity]:
    """All entities in `text`, with assertion status, laterality, severity and section.

    Args:
        pipeline: the loaded `ClinicalPipeline` (registry slot "nlp.entities").
        text: any clinical free text (report, history, symptoms).
        doc: an already processed doc of `text` (saves a second pass).

    Returns:
        Entities in text order.
    """
    doc = doc if doc is not None else pipeline(text)
    sections = section_spans(text)
    finding_tokens = {
        i for ent in doc.ents if ent.label_ in (lexicon.FINDING, lexicon.DISEASE) for i in range(ent.start, ent.end)
    }
    entities: list[Entity] = []
    for ent in doc.ents:
        if ent.label_ not in lexicon.ENTITY_LABELS:
            continue  # a statistical NER's other labels (scispaCy "ENTITY") are kept out of the findings
        negated = bool(getattr(ent._, "negex", False))
        cue = pipeline.uncertainty.cue(doc, ent) if ent.label_ != lexicon.ANATOMY else None
        label, canonical = ent.label_, ent.ent_id_ or ent.text.lower()
        if label == lexicon.FINDING:
            canonical = _organ_of(doc, ent, canonical)
            if canonical == "fracture" and _device_fracture(doc, ent):
                label, canonical = lexicon.DEVICE, "device_fracture"
            # "nodular opacity / density": a nodule-like shape the reader did not call a nodule
            if canonical == "nodule" and ent[0].lower_ == "nodular" and cue is None and not negated:
                cue = NODULAR_CUE
        if negated and cue and _negation_governs(ent, cue):
            cue = None  # "no focal opacity to suggest pneumonia": the hedge sits inside a denial
        uncertain = cue is not None
        own = set(range(ent.start, ent.end))
        lat_words = _attribute(doc, ent, lexicon.LATERALITY_WORDS, LATERALITY_WINDOW, finding_tokens - own)
        sev_words = _attribute(doc, ent, lexicon.SEVERITY_WORDS, SEVERITY_WINDOW, finding_tokens - own)
        entities.append(Entity(
            text=ent.text, label=label, canonical=canonical,
            start=ent.start_char, end=ent.end_char, negated=negated and not uncertain, uncertain=uncertain,
            status=assertion(negated, uncertain) if label != lexicon.ANATOMY else PRESENT,
            cue=cue if uncertain else ("negation" if negated else None),
            laterality=_laterality(lat_words), severity=_severity(sev_words),
            section=_section_of(ent.start_char, sections), sentence=ent.sent.text.strip(),
        ))
    # Sentence rules add findings the lexicon cannot name; a lexicon mention of the same finding in the
    # same place wins.
    for extra in _sentence_rules(doc, sections):
        overlaps = any(
            e.canonical == extra.canonical and e.start < extra.end and extra.start < e.end for e in entities
        )
        if overlaps:
            continue
        if extra.status == PRESENT:  # a described finding takes the hedges and conditions of its sentence
            span = doc.char_span(extra.start, extra.end, alignment_mode="expand")
            cue = pipeline.uncertainty.cue(doc, span) if span is not None else None
            if cue:
                extra.uncertain, extra.status, extra.cue = True, UNCERTAIN, cue
        entities.append(extra)
    entities.sort(key=lambda e: (e.start, e.end))
    return entities


def summarise_findings(entities: list[Entity]) -> list[dict]:
    """One line per finding/disease named in the text, with its overall status.

    A finding is "present" if any mention asserts it, else "uncertain" if any mention is uncertain, else
    "negated". Evidence lists the sentences that decided it.
    """
    by_name: dict[str, list[Entity]] = {}
    for e in entities:
        if e.label in (lexicon.FINDING, lexicon.DISEASE):
            by_name.setdefault(e.canonical, []).append(e)
    summary = []
    for name, mentions in by_name.items():
        for status in (PRESENT, UNCERTAIN, NEGATED):
            deciding = [m for m in mentions if m.status == status]
            if deciding:
                break
        lats = {m.laterality for m in deciding if m.laterality}
        summary.append({
            "name": name,
            "label": mentions[0].label,
            "status": status,
            "laterality": "bilateral" if len(lats) > 1 else (lats.pop() if lats else None),
            "severity": _severity([m.severity for m in deciding if m.severity]),
            "mentions": len(mentions),
            "evidence": list(dict.fromkeys(m.sentence for m in deciding))[:3],
        })
    return summary

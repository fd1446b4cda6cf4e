"""Chat-specific safety rules on top of `medsight.llm.safety` (which screens injections and detects dosing).

Added here, because they only matter for free conversation:
  - more dosing paraphrases ("can I double the inhaler puffs", "mg of", "how much X should I give") and an
    exception for radiation dose, which is an imaging question, not a medication one;
  - out-of-scope requests (finance, programming, non-chest medicine, ...), refused politely;
  - a check on answers for definitive-diagnosis wording, and a softener that rewrites it;
  - citation checks: markers must point to passages retrieved for this answer;
  - removal of dose statements from quoted literature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

from medsight.llm.safety import DISCLAIMER, DOSING_REFUSAL, detect_drug_dosing, normalise_text, screen_injection

__all__ = [
    "DISCLAIMER", "DOSING_REFUSAL", "OUT_OF_SCOPE_REFUSAL", "AnswerCheck", "QuestionCheck", "check_answer",
    "check_question", "citation_numbers", "definitive_statements", "is_dosing", "is_out_of_scope",
    "grounding_problems", "redact_dosing", "screen_injection", "SentenceGate", "soften_definitive",
    "strip_invalid_citations", "with_disclaimer",
]

OUT_OF_SCOPE_REFUSAL = ("That is outside what I can help with here. I answer questions about chest radiographs, "
                        "this study's results, pulmonary conditions and how the workstation's models work.")

# Imaging "dose" is about radiation, not medication.
_RADIATION = re.compile(r"\b(low[- ]dose (ct|computed tomography|screening)|radiation dose|effective dose|"
                        r"dose of (radiation|x-?rays?)|(x-?ray|ct|radiograph\w*|imaging|scan) (radiation )?dose|"
                        r"dose[- ]area product|msv|millisievert\w*|dose reduction)\b", re.I)

_MED = (r"(medications?|medicines?|meds|drugs?|antibiotics?|steroids?|diuretics?|inhalers?|puffs?|nebuli[sz]er\w*|"
        r"tablets?|pills?|capsules?|injections?|infusions?|drips?|oxygen|o2|\w+(cillin|mycin|floxacin|cycline|"
        r"sone|solone|semide|parin|xaban|farin|terol|tropium|profen|phylline|statin|sartan|olol)|"
        r"amoxicillin|augmentin|azithromycin|doxycycline|vancomycin|heparin|warfarin|apixaban|insulin|morphine|"
        r"fentanyl|prednisone|prednisolone|dexamethasone|hydrocortisone|methylprednisolone|furosemide|lasix|"
        r"albuterol|salbutamol|ventolin|paracetamol|acetaminophen|ibuprofen|aspirin|levofloxacin|ceftriaxone|"
        r"tiotropium|budesonide|fluticasone|montelukast|theophylline|alteplase|tpa)")
_EXTRA_DOSING: list[tuple[str, re.Pattern]] = [
    ("unit_of_drug", re.compile(r"\b(mg|mcg|µg|micrograms?|milligrams?|grams?|ml|millilit\w+|units?|iu|puffs?)\s+"
                                r"(of|per)\b", re.I)),
    ("change_regimen", re.compile(r"\b(double|triple|halve|increase|decrease|reduce|raise|lower|up|taper|wean|"
                                  r"stop|start|restart|switch|adjust|titrate)\b[^?.\n]{0,30}\b" + _MED + r"\b", re.I)),
    ("how_much_drug", re.compile(r"\bhow (much|many|long|often)\b[^?.\n]{0,50}\b" + _MED + r"\b", re.I)),
    ("give_drug", re.compile(r"\b(should|can|could|may|do|shall|would)\b[^?.\n]{0,25}\b(give|take|use|administer|"
                             r"prescribe|put (him|her|them|the patient) on|start|order)\b[^?.\n]{0,40}\b" + _MED + r"\b",
                             re.I)),
    ("drug_for", re.compile(r"\b(dos(e|es|age|ages|ing)|regimens?|mg/kg|per kg|weight[- ]based)\b", re.I)),
    ("treat_with", re.compile(r"\b(what|which|best|first[- ]line|recommended)\b[^?.\n]{0,30}\b(treatment|therapy|"
                              r"antibiotic|medication|drug|regimen|inhaler|steroid)s?\b[^?.\n]{0,30}\b(for|should|to "
                              r"give|to use|to start)\b", re.I)),
    ("drip_rate", re.compile(r"\b(rate|speed)\b[^?.\n]{0,20}\b(drip|infusion|heparin|insulin|fluids?)\b|"
                             r"\b(drip|infusion)\b[^?.\n]{0,20}\b(rate|speed)\b", re.I)),
]


def is_dosing(text: str) -> list[str]:
    """Reasons the text asks for (or states) medication doses, prescriptions or regimens; empty when it does not.

    Radiation-dose wording ("low-dose CT", "radiation dose of a chest X-ray") is masked first.
    """
    clean = _RADIATION.sub(" imaging-exposure ", normalise_text(text))
    reasons = list(detect_drug_dosing(clean).reasons)
    reasons += [name for name, regex in _EXTRA_DOSING if regex.search(clean)]
    return reasons


# Topics clearly outside chest imaging decision support. Chest words win over these (see `is_out_of_scope`).
_OUT_OF_SCOPE: list[tuple[str, re.Pattern]] = [
    ("finance", re.compile(r"\b(stocks?|shares|invest\w*|crypto\w*|bitcoin|forex|trading|portfolio|dividends?|"
                           r"mortgage|tax(es)?|lottery|betting)\b", re.I)),
    ("programming", re.compile(r"\b(write|generate|fix|debug|review)\b[^?.\n]{0,30}\b(code|script|program|function|"
                               r"class|sql|regex|python|javascript|java|html|css)\b|\b(python|javascript|typescript|"
                               r"java|c\+\+|rust|golang|sql) (code|script|program|function)\b", re.I)),
    ("writing", re.compile(r"\b(write|compose|draft)\b[^?.\n]{0,20}\b(poem|song|story|essay|joke|email|e-mail|"
                           r"letter|cover letter|tweet|speech)\b|\btell me a joke\b", re.I)),
    ("general", re.compile(r"\b(weather|forecast|recipe|cook\w*|football|soccer|basketball|movie|film review|"
                           r"celebrity|election|politic\w*|president|travel|hotel|flight|holiday|vacation|dating|"
                           r"horoscope|translate)\b", re.I)),
    ("non_chest_medicine", re.compile(
        r"\b(knee|ankle|hip|shoulder|wrist|elbow|spine|lumbar|cervical spine|skull|brain|head ct|stroke|"
        r"migraine|headache|dementia|alzheimer\w*|parkinson\w*|epilep\w+|seizures?|kidney|renal|liver|hepat\w+|"
        r"pancrea\w+|bowel|colon\w*|appendi\w+|stomach|gastr\w+|abdom\w+|pelvi\w+|prostate|uter\w+|ovar\w+|"
        r"pregnan\w+|fetal|obstetric\w*|breast|mammogra\w+|thyroid|diabet\w+|skin|rash|eczema|psoria\w+|acne|"
        r"dermat\w+|eyes?|retina\w*|glaucoma|cataract|teeth|tooth|dental|ears?|hearing|tonsil\w*|depress\w+|"
        r"anxiety|psychiatr\w+|schizophren\w+|fractured? (leg|arm|ankle|wrist|hip)|mri of the)\b", re.I)),
]
_CHEST = re.compile(
    r"\b(chest|lungs?|pulmonary|pleura\w*|thora\w+|cardi\w+|heart|mediastin\w*|hil(um|ar)|rib|ribs|diaphragm\w*|"
    r"trache\w*|bronch\w*|pneum\w+|effusion|atelecta\w+|consolidation|nodule|mass|opacit\w+|x-?ray|radiograph\w*|"
    r"cxr|anomaly|score|threshold|heatmap|model|study|finding|report|differential|emphysema|copd|asthma|"
    r"tubercul\w+|fibrosis|oedema|edema|ards|covid)\b", re.I)


def is_out_of_scope(text: str) -> str | None:
    """The out-of-scope category of a question, or None when it is (or may be) about chest imaging.

    Non-chest medical topics count as out of scope only when no chest term appears ("liver lesion seen on
    the chest X-ray" stays in scope; "what is the best knee replacement" does not).
    """
    clean = normalise_text(text)
    for name, regex in _OUT_OF_SCOPE:
        if not regex.search(clean):
            continue
        if name in ("non_chest_medicine", "general") and _CHEST.search(clean):
            continue
        return name
    return None


@dataclass
class QuestionCheck:
    """Screening of a user question before any model sees it.

    Attributes:
        verdict: "ok", "dosing" or "out_of_scope".
        reasons: matched rule names.
        message: the refusal to show (empty when ok).
    """

    verdict: str
    reasons: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def check_question(text: str) -> QuestionCheck:
    """Dosing first (it is a safety rule), then scope."""
    reasons = is_dosing(text)
    if reasons:
        return QuestionCheck("dosing", reasons, DOSING_REFUSAL + " I can explain the imaging findings, the model "
                                                               "results or what the literature says about a condition.")
    scope = is_out_of_scope(text)
    if scope:
        return QuestionCheck("out_of_scope", [scope], OUT_OF_SCOPE_REFUSAL)
    return QuestionCheck("ok")


# --------------------------------------------------------------------------------------------- answers

_DEFINITIVE: list[re.Pattern] = [re.compile(p, re.I) for p in (
    r"\b(the|this|your) patient (definitely |certainly |clearly )?(has|have|is suffering from|is diagnosed with)\b",
    r"\byou (definitely |certainly )?(have|are suffering from)\b",
    r"\b(the|my|final|definitive|confirmed) diagnosis is\b",
    r"\b(this|it|the (image|study|radiograph|x-?ray|film|scan)) (is|shows|confirms|proves) (definitely|certainly|"
    r"clearly|conclusively)\b",
    r"\b(confirms|proves|establishes|is diagnostic of|rules in)\b",
    r"\b(definitely|certainly|conclusively|undoubtedly|without (a )?doubt) (is|has|shows|a|an)\b",
    r"\b(diagnosed|diagnose) (as|with)\b",
    r"\bthis is (a case of|pneumonia|tuberculosis|cancer|lung cancer|a pneumothorax|an effusion)\b",
)]


def definitive_statements(text: str) -> list[str]:
    """Phrases that state a diagnosis as certain."""
    clean = normalise_text(text)
    return [m.group(0) for regex in _DEFINITIVE for m in regex.finditer(clean)]


_SOFTEN = [
    (re.compile(r"\b(the|this|your) patient (definitely |certainly |clearly )?(has|have)\b", re.I),
     "the findings are compatible with"),
    (re.compile(r"\b(the|my|final|definitive|confirmed) diagnosis is\b", re.I), "one possibility to consider is"),
    (re.compile(r"\b(definitely|certainly|conclusively|undoubtedly|clearly|without (a )?doubt)\s+", re.I), ""),
    (re.compile(r"\b(is|are) diagnostic of\b", re.I), "is compatible with"),
    (re.compile(r"\b(confirms|proves|establishes|rules in)\b", re.I), "is compatible with"),
    (re.compile(r"\b(was |were |is |are )?(diagnosed|diagnose) (as|with)\b", re.I), "may have findings of"),
    (re.compile(r"\byou (have|are suffering from)\b", re.I), "the findings may suggest"),
    (re.compile(r"\bthis is (a case of )?", re.I), "this may represent "),
]


def soften_definitive(text: str) -> str:
    """Rewrite definitive-diagnosis wording into hedged wording (used on model output before it is shown)."""
    if not definitive_statements(text):
        return text
    for regex, replacement in _SOFTEN:
        text = regex.sub(replacement, text)
    return text


_CITATION = re.compile(r"\[(\d{1,2})\]")


def citation_numbers(text: str) -> list[int]:
    """Citation markers [n] in order of first appearance."""
    return list(dict.fromkeys(int(n) for n in _CITATION.findall(text or "")))


def strip_invalid_citations(text: str, n_passages: int) -> str:
    """Remove markers that do not point to one of the `n_passages` retrieved passages."""
    return _CITATION.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= n_passages else "", text)


@dataclass
class AnswerCheck:
    """Checks on an answer before it is shown.

    Attributes:
        ok: no problem found.
        problems: human-readable problems ("no citation markers", "medication dosing", ...).
        cited: citation numbers that point to retrieved passages.
    """

    ok: bool
    problems: list[str] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def redact_dosing(text: str) -> str:
    """Drop sentences that state doses or regimens (used on quoted literature)."""
    sentences = _SENTENCE.split(text or "")
    return " ".join(s for s in sentences if not is_dosing(s)).strip()


def check_answer(text: str, n_passages: int, *, require_citation: bool = True, question: str = "",
                 context_terms: tuple[str, ...] = ()) -> AnswerCheck:
    """Check an answer: dosing, definitive diagnosis, citations in range, injected content, topic.

    Args:
        text: the answer.
        n_passages: passages retrieved for this answer (markers must be in 1..n).
        require_citation: the answer is factual and must cite at least one passage.
        question: the question (for the topic check).
        context_terms: words from the question and passages; a local-model answer sharing none is off-topic.
    """
    problems: list[str] = []
    if not (text or "").strip():
        return AnswerCheck(False, ["empty answer"])
    if is_dosing(text):
        problems.append("medication dosing")
    if definitive_statements(text):
        problems.append("definitive diagnosis wording")
    numbers = citation_numbers(text)
    valid = [n for n in numbers if 1 <= n <= n_passages]
    if len(valid) != len(numbers):
        problems.append("citation markers that point to no retrieved passage")
    if require_citation and n_passages and not valid:
        problems.append("no citation markers")
    if screen_injection(text).flagged:
        problems.append("instruction-like content")
    if context_terms:
        words = set(re.findall(r"[a-z]{5,}", text.lower()))
        if not words & {t.lower() for t in context_terms}:
            problems.append("off-topic")
    return AnswerCheck(not problems, problems, valid)


_CONTENT = re.compile(r"[a-z][a-z-]{3,}")
_FUNCTION_WORDS = {"this", "that", "with", "from", "have", "which", "their", "there", "these", "those", "also", "than",
                   "then", "into", "such", "been", "being", "were", "when", "where", "while", "other", "about", "more",
                   "most", "some", "they", "them", "will", "would", "could", "should", "does", "only", "very", "passage",
                   "passages", "study", "results", "reference", "note"}


def grounding_problems(text: str, passages: list[str], *, min_cited_share: float = 0.6,
                       min_overlap: int = 3) -> list[str]:
    """Stricter checks for answers of small models: most sentences cite, each cited sentence shares at least
    `min_overlap` content words with a passage it cites, and no sentence is repeated.

    Args:
        text: the answer.
        passages: texts of the retrieved passages, in citation order ([1] is passages[0]).
    """
    problems: list[str] = []
    body = [s.strip() for s in _SENTENCE.split(text or "") if len(s.strip()) > 20]
    if not body:
        return ["empty answer"]
    normalised = [re.sub(r"\W+", " ", s.lower()).strip() for s in body]
    if len(set(normalised)) < len(normalised):
        problems.append("repeated sentences")
    cited = [s for s in body if _CITATION.search(s)]
    if len(cited) < min_cited_share * len(body):
        problems.append("sentences without citations")
    vocab = [{w for w in _CONTENT.findall(p.lower())} - _FUNCTION_WORDS for p in passages]
    for sentence in cited:
        words = set(_CONTENT.findall(_CITATION.sub("", sentence).lower())) - _FUNCTION_WORDS
        numbers = [int(n) for n in _CITATION.findall(sentence) if 1 <= int(n) <= len(vocab)]
        if numbers and max(len(words & vocab[n - 1]) for n in numbers) < min_overlap:
            problems.append("a citation the cited passage does not support")
            break
    return problems


def with_disclaimer(text: str) -> str:
    """The answer followed by the decision-support disclaimer (added once)."""
    text = (text or "").rstrip()
    if DISCLAIMER in text:
        return text
    return f"{text}\n\n*{DISCLAIMER}*"


class SentenceGate:
    """Releases a live model answer sentence by sentence after the safety edits.

    A sentence with medication dosing ends the answer (a notice replaces it), definitive-diagnosis wording is
    softened, and citation markers pointing to no retrieved passage are removed. `notes` say what was changed.
    """

    def __init__(self, n_passages: int):
        self.n_passages = n_passages
        self.notes: list[str] = []
        self.stopped = False

    def _release(self, sentence: str) -> str | None:
        if is_dosing(sentence):
            self.stopped = True
            self.notes.append("the model's answer turned to medication dosing and was cut off")
            return "\n\n[The rest of this answer was withheld: it turned to medication amounts, which this tool does " \
                   "not provide.]"
        if definitive_statements(sentence):
            sentence = soften_definitive(sentence)
            self.notes.append("definitive wording was softened")
        fixed = strip_invalid_citations(sentence, self.n_passages)
        if fixed != sentence:
            self.notes.append("citation markers pointing to no retrieved passage were removed")
        return fixed

    def feed_stream(self, chunks: Iterator[str]) -> Iterator[str]:
        """The edited sentences of a stream of text chunks."""
        buffer = ""
        for chunk in chunks:
            buffer += chunk
            while not self.stopped:
                m = re.search(r"[.!?](\s+|\n)", buffer)
                if not m:
                    break
                sentence, buffer = buffer[:m.end()], buffer[m.end():]
                out = self._release(sentence)
                if out:
                    yield out
            if self.stopped:
                return
        if buffer.strip() and not self.stopped:
            out = self._release(buffer)
            if out:
                yield out

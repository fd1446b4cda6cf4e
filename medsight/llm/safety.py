"""Safety helpers: prompt-injection screening of report/retrieved text, and drug-dosing detection.

Screening is a second line of defence. The first is structural: report and retrieved text are fenced as
data (`medsight.llm.prompts`), model output must match a schema, and verdicts come from the deterministic
engine, so text inside a report can never change the output format or the verdict path.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

DISCLAIMER = ("Decision support only: this output does not replace the judgement of a qualified "
              "radiologist or clinician and is not a diagnosis.")

_INJECTION_PATTERNS: list[tuple[str, str]] = [
    ("override", r"\b(ignore|disregard|forget|override|bypass|skip)\b[^.\n]{0,40}\b(previous|prior|above|earlier|"
                 r"all|any|the|your|system|these|those)\b[^.\n]{0,30}\b(instructions?|prompts?|rules?|directions?|"
                 r"guidelines?|context|messages?|constraints?)"),
    ("new_instructions", r"\b(new|updated|real|actual|following)\s+(instructions?|task|prompt|rules?)\s*[:\-]"),
    ("role_play", r"\b(you are now|act as|pretend (to be|you are)|from now on,? you|roleplay as|"
                  r"switch (to|into) (developer|dan|jailbreak) mode)\b"),
    ("role_tag", r"(^|\n)\s*(system|assistant|developer)\s*:|<\|?(system|im_start|im_end|assistant)\|?>|\[/?INST\]"),
    ("verdict_forcing", r"\b(say|state|report|declare|output|respond|answer|conclude|mark)\b[^.\n]{0,40}\b("
                        r"report is (perfect|correct|complete|fine|accurate|normal)|no (discrepanc|error|issue|problem)s?"
                        r"|all (checks? )?pass(ed)?|everything is (fine|correct|ok))"),
    ("format_forcing", r"\b(respond|reply|answer|output)\b[^.\n]{0,30}\b(only|just)\b[^.\n]{0,30}\b(with|in)\b"
                       r"[^.\n]{0,20}\b(yes|ok|text|xml|yaml|html|markdown|the word)"),
    ("prompt_exfiltration", r"\b(reveal|print|show|repeat|leak)\b[^.\n]{0,30}\b(system prompt|instructions|"
                            r"hidden prompt|your prompt)"),
    # Our fences are "<<<BEGIN DATA ...>>>"; real reports often end "END OF REPORT", which is not an escape.
    ("fence_escape", r"<<<\s*(end|begin)|END[_ ]OF[_ ]DATA|BEGIN[_ ]DATA"),
    ("addressed_to_model", r"\b(note|message|instructions?|policy|order|reminder)\s+(to|for)\s+(the\s+|all\s+)?"
                           r"(ai|assistants?|models?|llms?|chatbots?|language models?|ai models?)\b|<!--.*?-->"),
    ("markup_role", r"</?\s*(passage|data|document|context|system|instructions?)\s*>|(^|\n|\.\s)\s*(human|user)\s*:"),
    ("verdict_forcing_2", r"\b(output|print|say|reply|respond|answer)\b[^.\n]{0,20}\b(approved|the word \w+)\b"
                          r"|\bdo not mention\b[^.\n]{0,30}\b(discrepanc|error|finding)|\bregardless of the "
                          r"(report|question|data)\b|\b(translate|print|reveal)\b[^.\n]{0,20}\b(hidden|secret|system)\s+"
                          r"(instructions|prompt|rules)"),
]
_INJECTION_RES = [(name, re.compile(pattern, re.I | re.S)) for name, pattern in _INJECTION_PATTERNS]


@dataclass
class InjectionScreen:
    """Result of screening a text for instruction-like content.

    Attributes:
        flagged: True when any pattern matched.
        matches: (pattern name, matched text) pairs, trimmed.
    """

    flagged: bool
    matches: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def normalise_text(text: str) -> str:
    """NFKC-normalise and drop zero-width/control characters often used to hide instructions."""
    text = unicodedata.normalize("NFKC", text or "")
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")


def screen_injection(text: str) -> InjectionScreen:
    """Look for instruction-like content (overrides, role tags, verdict forcing) in data text."""
    clean = normalise_text(text)
    matches = []
    for name, regex in _INJECTION_RES:
        for match in regex.finditer(clean):
            matches.append((name, match.group(0).strip()[:120]))
    return InjectionScreen(flagged=bool(matches), matches=matches)


# --- Drug dosing -----------------------------------------------------------------------------------------

_DOSE_UNIT = r"(mg|mcg|µg|ug|g|grams?|milligrams?|micrograms?|ml|mL|units?|iu|IU|mmol|mEq|puffs?|tablets?|tabs?|pills?|capsules?|caps?)"
# Common drug names and name endings (antibiotics, steroids, diuretics, anticoagulants, analgesics, ...).
_DRUG_NAMES = (r"\w+(cillin|mycin|micin|floxacin|cycline|cef\w*|sporin|penem|azole|prazole|pril|sartan|olol|dipine|"
               r"statin|parin|xaban|semide|thiazide|sone|solone|olone|terol|tropium|profen|codone|morphone|phylline)|"
               r"amoxicillin|augmentin|azithromycin|doxycycline|vancomycin|heparin|warfarin|insulin|morphine|fentanyl|"
               r"prednisone|dexamethasone|furosemide|lasix|albuterol|salbutamol|paracetamol|acetaminophen|ibuprofen|"
               r"aspirin|oxygen|antibiotics?|steroids?|diuretics?|medications?|medicines?|drugs?|pills?|tablets?")
_DOSING_PATTERNS: list[tuple[str, str]] = [
    ("dose_question", r"\b(what|which|how much|how many|correct|right|usual|typical|recommended|standard|max(imum)?|"
                      r"starting|safe|appropriate|proper|loading|maintenance)\b[^?.\n]{0,40}\b(dose|dosage|dosing|amount|"
                      r"strength|quantity)\b"),
    ("dose_word", r"\b(dose|dosage|dosing|titrat\w*|posology)\b"),
    ("how_much_take", r"\bhow (much|many|often|frequently)\b[^?.\n]{0,50}\b(take|give|administer|prescribe|"
                      r"inject|infuse|use|inhale|swallow)\b"),
    ("prescribe", r"\b(prescri\w+|write (a|me) (script|prescription)|rx for|refill)\b"),
    ("amount_unit", r"\b\d+(\.\d+)?\s*" + _DOSE_UNIT + r"\b"),
    ("frequency", r"\b(once|twice|three times|\d+ times) (a|per) day\b|\b(b\.?i\.?d|t\.?i\.?d|q\.?i\.?d|q\d+h|"
                  r"prn)\b"),
    ("administer", r"\b(should|can|may|do) (i|we|they|he|she|the patient)\b[^?.\n]{0,30}\b(take|give|start|"
                   r"administer|inject|increase|decrease|double|halve)\b[^?.\n]{0,40}\b(mg|medication|medicine|drug|"
                   r"antibiotic|steroid|diuretic|furosemide|lasix|amoxicillin|prednisone|heparin|warfarin|"
                   r"morphine|insulin|pills?|tablets?)\b"),
    ("drug_amount", r"\bhow (much|many)\b[^?.\n]{0,40}\b(" + _DRUG_NAMES + r")\b"),
    ("how_to_treat_drug", r"\b(which|what) (antibiotic|drug|medication|medicine|steroid|diuretic)s?\b[^?.\n]{0,40}"
                          r"\b(give|take|prescribe|use|start|should)\b"),
]
_DOSING_RES = [(name, re.compile(pattern, re.I)) for name, pattern in _DOSING_PATTERNS]

DOSING_REFUSAL = ("I can't give medication doses, prescriptions or treatment regimens. Dosing depends on the "
                  "patient's full clinical picture and must come from the treating clinician, a pharmacist or "
                  "the product label.")


@dataclass
class DosingCheck:
    is_dosing: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def detect_drug_dosing(text: str) -> DosingCheck:
    """Detect requests for (or statements of) medication doses, prescriptions or regimens.

    Used before a question reaches a model and again on the model's answer, so paraphrased requests and
    answers that slip a dose in are both caught.
    """
    clean = normalise_text(text)
    reasons = [name for name, regex in _DOSING_RES if regex.search(clean)]
    return DosingCheck(is_dosing=bool(reasons), reasons=reasons)

"""Intent detection for the chat's deterministic tier (and for choosing what to retrieve).

Each intent has weighted regular expressions; the intent with the highest total weight wins, ties broken
by the order of `INTENTS`. A question with no match is "explain_finding" when it names a finding or term,
"definition" when it looks like "what is X", and "help" otherwise. Safety screening (dosing, out of scope)
happens before intent detection, in `medsight.chat.safety`; "out_of_scope" here catches the remaining
requests that the template engine cannot answer (e.g. prognosis of this patient, legal questions).

The topic is the finding, condition or term the question names (`find_topic`), e.g. "effusion" for
"Why is the effusion flagged?".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medsight.nlp.conditions import CONDITIONS
from medsight.nlp.lexicon import FINDINGS

GREETING = "greeting"
HELP = "help"
EXPLAIN_FINDING = "explain_finding"
SCORE_MEANING = "score_meaning"
NEXT_STEPS = "next_steps"
DIFFERENTIAL = "differential"
HOW_MODEL_WORKS = "how_model_works"
LIMITS = "limits"
DEFINITION = "definition"
OUT_OF_SCOPE = "out_of_scope"

INTENTS = (GREETING, HELP, SCORE_MEANING, DIFFERENTIAL, NEXT_STEPS, HOW_MODEL_WORKS, LIMITS, DEFINITION,
           EXPLAIN_FINDING, OUT_OF_SCOPE)

INTENT_TITLES = {
    GREETING: "greeting", HELP: "help", EXPLAIN_FINDING: "explain a finding", SCORE_MEANING: "what a score means",
    NEXT_STEPS: "next steps and questions for the clinician", DIFFERENTIAL: "differential diagnosis",
    HOW_MODEL_WORKS: "how the models work", LIMITS: "limits and uncertainty", DEFINITION: "definition of a term",
    OUT_OF_SCOPE: "out of scope",
}

_RULES: dict[str, list[tuple[str, float]]] = {
    GREETING: [(r"^\s*(hi|hello|hey|good (morning|afternoon|evening)|greetings|thanks|thank you)\b[\s!.,]*"
                r"(there|again|team)?[\s!.]*$", 3.0)],
    HELP: [(r"\b(what can you (do|help with|answer)|how (do|can) i use (you|this chat)|help me use|"
            r"what (should|can) i ask( you)?\s*\??\s*$|^\s*help\b|list of (commands|questions))", 3.0)],
    SCORE_MEANING: [
        (r"\b(anomaly|fused|risk|probabilit\w*|confidence) (score|level|value|number)s?\b", 2.0),
        (r"\bscore\b", 1.5), (r"\b(threshold|cut-?off|operating point)\b", 1.5),
        (r"\bwhat does (the|this|a|my) [\w\s-]{0,30}(mean|indicate|tell)\b", 1.0),
        (r"\b(how (high|low|bad|serious)|is (it|this|that) (high|low|abnormal|normal))\b", 1.0),
        (r"\b0?\.\d+\b", 0.5), (r"\bprobabilit\w+\b", 1.0), (r"\b(risk level|high risk|low risk)\b", 1.0),
    ],
    DIFFERENTIAL: [
        (r"\bdifferential\w*\b", 3.0), (r"\b(ddx|d/dx)\b", 3.0),
        (r"\bwhat else could\b|\bother (possible )?(causes|diagnoses|possibilities|explanations)\b", 2.5),
        (r"\bwhat (could|might|can) (this|it|that|these findings?) be\b", 2.5),
        (r"\b(possible|likely|potential) (causes?|diagnos\w+|conditions?)\b", 2.0),
        (r"\b(cause[sd]?|mimic\w*|look[- ]?alikes?)\b", 1.0),
    ],
    NEXT_STEPS: [
        (r"\bnext steps?\b", 3.0), (r"\bwhat (should|do|can|would) (i|we|the (clinician|team|doctor)) do\b", 2.5),
        (r"\b(follow[- ]?up|work[- ]?up|further (imaging|tests?|evaluation|workup)|recommend\w*)\b", 2.0),
        (r"\bquestions? (to ask|for the (clinician|referr\w+|team|doctor))\b", 3.0),
        (r"\bask the (referr\w+ )?(clinician|physician|team|doctor|patient)\b", 3.0),
        (r"\b(what (tests?|imaging)|should (we|i) (get|order|do) (a |an )?(ct|ultrasound|lateral|scan|test))\b", 2.5),
        (r"\b(management|what now|then what|how to proceed|plan)\b", 1.0),
    ],
    HOW_MODEL_WORKS: [
        (r"\bhow (does|do|did|is|are) (the|this|your|these|an?)( [\w-]+){0,3} (model|models|ai|system|classifier|"
         r"detector|algorithm|network|heatmap|chat|app|tool|score|engine)s? (work|computed|calculated|made|built|"
         r"trained|decide|produced)", 3.0),
        (r"\bhow (does|do) (the |this |your )?(model|models|ai|system|classifier|detector|algorithm|network|"
         r"heatmap|chat|app|tool)s?\b", 2.5),
        (r"\b(how (was|were) (it|the model|they) trained|training data|trained on|architecture|autoencoder|vae|"
         r"vit|densenet|vgg|grad-?cam|transformer|embedding)\b", 2.5),
        (r"\b(how (is|was) (the|this) [\w\s]{0,20}(computed|calculated|derived|made))\b", 3.0),
        (r"\b(where (does|do) (the|this|these) [\w\s]{0,20}come from|what (model|models) (is|are) used)\b", 2.0),
        (r"\b(tier|demo|real weights|rules engine|phantom)\b", 1.5),
    ],
    LIMITS: [
        (r"\b(limit\w*|uncertain\w*|reliab\w+|trust\w*|accura\w+|how sure|how confident|confidence interval|"
         r"false (positive|negative)s?|error rate|sensitivity|specificity|wrong|mistakes?|validated|bias)\b", 2.0),
        (r"\b(can (i|we) (rely|trust)|is (it|this) (reliable|accurate|certain))\b", 2.5),
        (r"\bwhy (might|could|would) (it|the model) (be wrong|miss|fail)\b", 3.0),
    ],
    DEFINITION: [
        (r"^\s*(what|who) (is|are|does) (a |an |the )?[\w\s'-]{2,40}\??\s*$", 1.5),
        (r"\b(define|definition|meaning of|what does [\w\s'-]{2,30} mean|what is meant by|stand for|"
         r"explain the term)\b", 2.5),
    ],
    EXPLAIN_FINDING: [
        (r"\b(explain|describe|tell me (more )?about|why (is|was|are|were)|what (is|are) the|what does it show|"
         r"what (was|were|is|are) (found|flagged|detected|seen)|findings?|flagged|positive|detected|show[sn]?)\b", 1.0),
        (r"\bwhy\b", 0.5), (r"\b(heatmap|left|right|bilateral|side)\b", 0.5),
    ],
    OUT_OF_SCOPE: [
        (r"\b(prognosis|life expectancy|how long (will|does) (he|she|the patient) (live|have)|survival chance|"
         r"will (he|she|the patient) die)\b", 3.0),
        (r"\b(sue|lawsuit|legal advice|lawyer|malpractice|insurance claim|billing code|icd-?10 code)\b", 3.0),
        (r"\b(diagnose (him|her|the patient|me)|give (me )?a diagnosis|what is the diagnosis|final diagnosis|"
         r"is it (definitely|certainly)|confirm (the|a) diagnosis)\b", 3.0),
    ],
}
_COMPILED = {intent: [(re.compile(p, re.I), w) for p, w in rules] for intent, rules in _RULES.items()}

# Terms the glossary and notes define (lower-case phrase → note key); conditions and findings are added below.
TERMS: dict[str, str] = {
    "costophrenic angle": "costophrenic_angle", "costophrenic": "costophrenic_angle",
    "air bronchogram": "air_bronchogram", "air bronchograms": "air_bronchogram",
    "silhouette sign": "silhouette_sign", "kerley": "kerley_lines", "kerley b lines": "kerley_lines",
    "ground-glass": "ground_glass", "ground glass": "ground_glass", "cardiothoracic ratio": "cardiothoracic_ratio",
    "ctr": "cardiothoracic_ratio", "pa view": "pa_ap_view", "ap view": "pa_ap_view", "posteroanterior": "pa_ap_view",
    "anteroposterior": "pa_ap_view", "hilum": "hilum", "hilar": "hilum", "meniscus sign": "meniscus_sign",
    "deep sulcus": "deep_sulcus_sign", "reticular": "reticular_opacity", "honeycombing": "honeycombing",
    "hyperinflation": "hyperinflation", "threshold": "operating_threshold", "operating point": "operating_threshold",
    "sensitivity": "sensitivity_specificity", "specificity": "sensitivity_specificity", "auroc": "auroc",
    "auc": "auroc", "roc curve": "auroc", "heatmap": "heatmap", "grad-cam": "heatmap", "gradcam": "heatmap",
    "saliency": "heatmap", "calibration": "calibration", "calibrated": "calibration",
    "anomaly score": "anomaly_score", "fused score": "anomaly_score", "risk level": "fusion_risk",
    "tier": "tiers", "demo tier": "tiers",
}

# Image-model finding (canonical) → condition note key.
FINDING_NOTE = {
    "consolidation": "consolidation", "pneumonia": "pneumonia", "infiltration": "consolidation",
    "lung_opacity": "consolidation", "atelectasis": "atelectasis", "effusion": "pleural_effusion",
    "pneumothorax": "pneumothorax", "edema": "pulmonary_edema", "cardiomegaly": "cardiomegaly",
    "enlarged_cardiomediastinum": "cardiomegaly", "nodule": "pulmonary_nodule", "mass": "lung_mass",
    "lung_lesion": "lung_mass", "emphysema": "emphysema_copd", "hyperinflation": "emphysema_copd",
    "fibrosis": "fibrosis_ild", "pleural_thickening": "pleural_thickening", "bronchiectasis": "bronchiectasis",
    "bronchial_thickening": "bronchitis", "granuloma": "tuberculosis",
}


def _phrase_index() -> list[tuple[re.Pattern, str, str]]:
    """(regex, kind, key), longest phrases first, so "pleural effusion" beats "effusion"."""
    entries: dict[str, tuple[str, str]] = {}
    for condition in CONDITIONS:
        entries[condition.name.lower()] = ("condition", condition.key)
        entries[condition.key.replace("_", " ")] = ("condition", condition.key)
        for part in re.split(r"\s*/\s*", condition.name.lower()):
            entries.setdefault(part, ("condition", condition.key))
    for extra, key in {"copd": "emphysema_copd", "ild": "fibrosis_ild", "tb": "tuberculosis", "covid": "covid19_viral",
                       "covid-19": "covid19_viral", "pe": "pulmonary_embolism", "ards": "ards",
                       "pulmonary oedema": "pulmonary_edema", "oedema": "pulmonary_edema",
                       "interstitial lung disease": "fibrosis_ild", "lung cancer": "lung_cancer",
                       "effusion": "pleural_effusion"}.items():
        entries[extra] = ("condition", key)
    for term, key in TERMS.items():  # glossary terms before findings: "air bronchogram" is a term to define
        entries.setdefault(term, ("term", key))
    for finding, phrases in FINDINGS.items():
        for phrase in phrases:
            entries.setdefault(phrase.lower(), ("finding", finding))
        entries.setdefault(finding.replace("_", " "), ("finding", finding))
    ordered = sorted(entries.items(), key=lambda kv: -len(kv[0]))
    return [(re.compile(r"\b" + re.escape(phrase) + r"\b", re.I), kind, key) for phrase, (kind, key) in ordered]


_PHRASES = _phrase_index()


@dataclass
class Topic:
    """What a question is about.

    Attributes:
        kind: "condition", "finding" or "term".
        key: condition key, canonical finding, or note key.
        text: the words in the question.
        note_key: the reference note that covers it ("" when none).
    """

    kind: str
    key: str
    text: str
    note_key: str = ""

    @property
    def findings(self) -> tuple[str, ...]:
        """Image-model findings (canonical) this topic corresponds to."""
        if self.kind == "finding":
            return (self.key,)
        if self.kind == "condition":
            condition = next((c for c in CONDITIONS if c.key == self.key), None)
            return tuple(condition.direct) if condition else ()
        return ()


def find_topics(text: str) -> list[Topic]:
    """Findings, conditions and terms named in `text`, in order of appearance, without overlaps."""
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, Topic]] = []
    for regex, kind, key in _PHRASES:
        for match in regex.finditer(text or ""):
            span = match.span()
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue
            taken.append(span)
            note = key if kind in ("condition", "term") else FINDING_NOTE.get(key, "")
            found.append((span[0], Topic(kind, key, match.group(0), note)))
    found.sort(key=lambda item: item[0])
    topics, seen = [], set()
    for _, topic in found:
        if (topic.kind, topic.key) not in seen:
            seen.add((topic.kind, topic.key))
            topics.append(topic)
    return topics


def find_topic(text: str) -> Topic | None:
    """The first finding, condition or term named in `text`."""
    topics = find_topics(text)
    return topics[0] if topics else None


@dataclass
class IntentMatch:
    """Detected intent.

    Attributes:
        intent: one of `INTENTS`.
        scores: total weight per intent that matched.
        topic: the first topic named in the question (None when none).
        topics: every topic named.
    """

    intent: str
    scores: dict[str, float] = field(default_factory=dict)
    topic: Topic | None = None
    topics: list[Topic] = field(default_factory=list)

    @property
    def title(self) -> str:
        return INTENT_TITLES[self.intent]


def detect_intent(text: str) -> IntentMatch:
    """Classify a chat question (see the module docstring for the rule)."""
    clean = " ".join((text or "").split())
    scores: dict[str, float] = {}
    for intent, rules in _COMPILED.items():
        total = sum(weight for regex, weight in rules if regex.search(clean))
        if total:
            scores[intent] = total
    topics = find_topics(clean)
    topic = topics[0] if topics else None
    if SCORE_MEANING in scores and re.search(r"\b(score|threshold|probabilit\w*|risk level)\b", clean, re.I):
        scores[SCORE_MEANING] += 2.0  # "what does the anomaly score mean" is about the score, not a term
    if topic is not None and DEFINITION in scores and topic.kind == "term":
        scores[DEFINITION] += 1.0  # "what is the costophrenic angle" is a definition, not a finding question
    if topic is not None and EXPLAIN_FINDING in scores and topic.kind in ("finding", "condition"):
        scores[EXPLAIN_FINDING] += 1.0
    if scores:
        best = max(scores.values())
        intent = next(i for i in INTENTS if scores.get(i) == best)
    elif topic is not None:
        intent = EXPLAIN_FINDING if topic.kind in ("finding", "condition") else DEFINITION
    else:
        intent = HELP
    return IntentMatch(intent, scores, topic, topics)

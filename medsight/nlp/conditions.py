"""Classification of text into 20 pulmonary conditions, with the phrases that drove each result.

Two layers, both shown to the user:

1. Transparent rules (always on). Each condition names the lexicon findings that are direct evidence for
   it ("pleural effusion" → Pleural effusion) and, for some, supportive evidence ("consolidation" →
   Pneumonia, uncertain). The mention's assertion status (NegEx + uncertainty rules) carries over, so a
   denied condition is reported as "negated", never as positive.
2. Zero-shot scoring of sentences that carry no negation or normality wording:
   - real tier: a zero-shot NLI model (e.g. DistilBART-MNLI) from the local Hugging Face cache;
   - offline tier ("rules+embeddings"): cosine similarity between sentence embeddings
     (all-MiniLM-L6-v2) and each condition's description, which is embedded once at load time.
   Only sentences the lexicon could not read are scored: they speak of the lungs, pleura, heart or
   diaphragm, or of a symptom, but name no finding and carry no negation, normality or stability wording.
   So the zero-shot layer adds what the rules miss without contradicting them, and the model runs on few
   sentences (at most `ZERO_SHOT_MAX_SENTENCES` per text). Zero-shot evidence alone can only make a condition
   "uncertain" (similarity is not a diagnosis); its score is capped at `EMBEDDING_SCORE_CAP`.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from medsight.nlp.negation import NEGATED, PRESENT, UNCERTAIN


@dataclass(frozen=True)
class Condition:
    """A pulmonary condition the classifier reports on.

    Attributes:
        key: identifier ("pleural_effusion").
        name: display name.
        description: one sentence; also the text the zero-shot layer compares against.
        direct: canonical lexicon names that assert this condition.
        supportive: canonical names that make it possible (reported as uncertain at most).
    """

    key: str
    name: str
    description: str
    direct: tuple[str, ...]
    supportive: tuple[str, ...] = ()


CONDITIONS: tuple[Condition, ...] = (
    Condition("pneumonia", "Pneumonia",
              "Pneumonia: infection of the lung with airspace consolidation or infiltrate, often with fever and productive cough.",
              ("pneumonia",), ("consolidation", "infiltration", "lung_opacity")),
    Condition("consolidation", "Consolidation",
              "Consolidation: lung airspace filled with fluid, pus or cells, seen as a dense opacity with air bronchograms.",
              ("consolidation",), ("lung_opacity", "infiltration")),
    Condition("atelectasis", "Atelectasis",
              "Atelectasis: partial collapse or volume loss of lung, such as subsegmental or basilar atelectasis.",
              ("atelectasis",)),
    Condition("pleural_effusion", "Pleural effusion",
              "Pleural effusion: fluid in the pleural space blunting the costophrenic angle.",
              ("effusion",)),
    Condition("pneumothorax", "Pneumothorax",
              "Pneumothorax: air in the pleural space with a visible pleural line and collapsed lung.",
              ("pneumothorax",)),
    Condition("pulmonary_edema", "Pulmonary edema",
              "Pulmonary edema: fluid in the lungs from heart failure, with vascular congestion, interstitial edema and Kerley lines.",
              ("edema",)),
    Condition("cardiomegaly", "Cardiomegaly",
              "Cardiomegaly: enlarged heart with increased cardiac silhouette size.",
              ("cardiomegaly",), ("enlarged_cardiomediastinum",)),
    Condition("pulmonary_nodule", "Pulmonary nodule",
              "Pulmonary nodule: a small rounded opacity in the lung, under 3 cm.",
              ("nodule",), ("lung_lesion",)),
    Condition("lung_mass", "Lung mass",
              "Lung mass: a large lung lesion over 3 cm, possibly a tumor.",
              ("mass",), ("lung_lesion",)),
    Condition("emphysema_copd", "Emphysema / COPD",
              "Emphysema or chronic obstructive pulmonary disease: hyperinflated lungs with flattened diaphragms and bullae.",
              ("emphysema", "copd"), ("hyperinflation",)),
    Condition("fibrosis_ild", "Pulmonary fibrosis / interstitial lung disease",
              "Pulmonary fibrosis or interstitial lung disease: reticular interstitial opacities, honeycombing and scarring.",
              ("fibrosis",)),
    Condition("tuberculosis", "Tuberculosis",
              "Tuberculosis: mycobacterial infection with upper lobe cavitation, hilar adenopathy or miliary nodules.",
              ("tuberculosis",)),
    Condition("lung_cancer", "Lung cancer",
              "Lung cancer: malignant tumor or carcinoma of the lung, possibly with metastases.",
              ("lung_cancer",), ("mass",)),
    Condition("pulmonary_embolism", "Pulmonary embolism",
              "Pulmonary embolism: blood clot in the pulmonary arteries causing sudden dyspnea and pleuritic chest pain.",
              ("pulmonary_embolism",)),
    Condition("bronchiectasis", "Bronchiectasis",
              "Bronchiectasis: permanently dilated thick-walled bronchi with chronic productive cough.",
              ("bronchiectasis",)),
    Condition("covid19_viral", "COVID-19 / viral pneumonia",
              "COVID-19 or viral pneumonia: bilateral peripheral ground-glass opacities from a viral infection.",
              ("covid19",)),
    Condition("asthma", "Asthma",
              "Asthma: reversible airway obstruction with wheezing and shortness of breath.",
              ("asthma",)),
    Condition("bronchitis", "Bronchitis",
              "Bronchitis: inflammation of the bronchi with cough and bronchial wall thickening.",
              ("bronchitis",), ("bronchial_thickening",)),
    Condition("ards", "Acute respiratory distress syndrome",
              "Acute respiratory distress syndrome: diffuse bilateral airspace opacities with severe hypoxemia.",
              ("ards",)),
    Condition("pleural_thickening", "Pleural thickening",
              "Pleural thickening: thickened pleura or calcified pleural plaques.",
              ("pleural_thickening",)),
)
CONDITION_KEYS = tuple(c.key for c in CONDITIONS)

# Scores of the rule layer (documented so the UI can print them).
RULE_SCORES = {"direct_present": 0.90, "direct_uncertain": 0.50, "supportive": 0.40, "negated": 0.05}
# Similarity → score: linear from SIMILARITY_FLOOR (score 0) to SIMILARITY_CEIL (score EMBEDDING_SCORE_CAP).
SIMILARITY_FLOOR = 0.35
SIMILARITY_CEIL = 0.70
EMBEDDING_SCORE_CAP = 0.60
# An embedding-only suggestion is listed only when its similarity reaches SIMILARITY_REPORT_MIN and beats
# the next best condition for the same sentence by SIMILARITY_MARGIN (measured on Indiana reports: below
# these, "low lung volumes" resembled emphysema, edema and atelectasis alike).
SIMILARITY_REPORT_MIN = 0.60
SIMILARITY_MARGIN = 0.05
# NLI entailment probability above which an NLI-only suggestion is still "uncertain" but listed.
NLI_REPORT_MIN = 0.80
NLI_HYPOTHESIS = "This text describes {}."
# Anatomy (lexicon canonical names) that makes an unnamed sentence worth a zero-shot look.
ZERO_SHOT_ANATOMY = {"lung", "lobe", "lung_zone", "pleura", "heart", "mediastinum", "vessels", "diaphragm"}
ZERO_SHOT_MAX_SENTENCES = 8

# Sentences with these words are not sent to the zero-shot layer: they deny or normalise, and
# similarity models do not understand negation.
_NEGATIVE_WORDING = re.compile(
    r"\b(?:no|not|without|negative|normal|clear|unremarkable|intact|resolved|absent|free of|nor|none|"
    r"stable|unchanged)\b",
    re.IGNORECASE,
)


@dataclass
class ConditionResult:
    """One condition found in the text.

    Attributes:
        key, name: the condition.
        score: 0–1 (see RULE_SCORES and the similarity mapping in the module docstring).
        status: "present", "negated" or "uncertain".
        evidence: the phrases that drove the result (mention text, or the sentence for zero-shot).
        sources: which layers contributed ("rules", "embeddings", "nli").
    """

    key: str
    name: str
    score: float
    status: str
    evidence: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class SimilarityScorer:
    """Zero-shot by sentence-embedding similarity to the condition descriptions.

    Descriptions are embedded once; sentence embeddings are kept in a small LRU cache because reports
    repeat the same sentences ("No pneumothorax.").
    """

    method = "embeddings"

    def __init__(self, encoder: Any, cache_size: int = 4096):
        self.encoder = encoder
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.condition_vectors = self._encode([c.description for c in CONDITIONS])

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.encoder.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def similarities(self, sentences: Sequence[str]) -> np.ndarray:
        """Cosine similarity [n_sentences, n_conditions]."""
        if not sentences:
            return np.zeros((0, len(CONDITIONS)), dtype=np.float32)
        with self._lock:
            missing = [s for s in dict.fromkeys(sentences) if s not in self._cache]
            if missing:
                for s, v in zip(missing, self._encode(missing)):
                    self._cache[s] = v
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            matrix = np.stack([self._cache[s] for s in sentences])
        return matrix @ self.condition_vectors.T

    def scores(self, sentences: Sequence[str]) -> np.ndarray:
        """Scores in [0, EMBEDDING_SCORE_CAP] per sentence and condition, plus raw similarity for listing."""
        sims = self.similarities(sentences)
        scaled = np.clip((sims - SIMILARITY_FLOOR) / (SIMILARITY_CEIL - SIMILARITY_FLOOR), 0.0, 1.0)
        runner_up = np.sort(sims, axis=1)[:, -2:-1] if sims.shape[1] > 1 else np.zeros((len(sims), 1))
        clear_winner = (sims >= SIMILARITY_REPORT_MIN) & (sims - runner_up >= SIMILARITY_MARGIN)
        scaled[~clear_winner] = 0.0
        return scaled * EMBEDDING_SCORE_CAP


class NLIScorer:
    """Zero-shot by natural-language inference (a Hugging Face zero-shot-classification pipeline)."""

    method = "nli"

    def __init__(self, classifier: Callable[..., Any]):
        self.classifier = classifier

    def scores(self, sentences: Sequence[str]) -> np.ndarray:
        """Entailment probability per sentence and condition (multi-label)."""
        labels = [c.name for c in CONDITIONS]
        out = np.zeros((len(sentences), len(CONDITIONS)), dtype=np.float32)
        for i, sentence in enumerate(sentences):
            result = self.classifier(sentence, candidate_labels=labels, multi_label=True,
                                     hypothesis_template=NLI_HYPOTHESIS)
            for label, score in zip(result["labels"], result["scores"]):
                out[i, labels.index(label)] = score if score >= NLI_REPORT_MIN else 0.0
        return out


@dataclass
class ConditionClassifier:
    """Rules over the extracted entities plus an optional zero-shot scorer."""

    scorer: SimilarityScorer | NLIScorer | None = None

    @property
    def method(self) -> str:
        return f"rules+{self.scorer.method}" if self.scorer is not None else "rules"

    def classify(self, entities: Sequence[Any], sentences: Sequence[str]) -> list[ConditionResult]:
        """Conditions with evidence, best first.

        Args:
            entities: `Entity` objects (or their dicts) with canonical, status and text.
            sentences: the text's sentences, for the zero-shot layer.

        Returns:
            One `ConditionResult` per condition that has any evidence (absent ones are left out).
        """
        ents = [e if isinstance(e, dict) else e.to_dict() for e in entities]
        named = {e.get("sentence") for e in ents if e["label"] in ("FINDING", "DISEASE")}
        relevant = {e.get("sentence") for e in ents
                    if e["label"] == "SYMPTOM" or (e["label"] == "ANATOMY" and e["canonical"] in ZERO_SHOT_ANATOMY)}
        candidates = [
            s for s in sentences
            if s in relevant and s not in named and len(s.split()) >= 3 and not _NEGATIVE_WORDING.search(s)
        ][:ZERO_SHOT_MAX_SENTENCES]
        zero_shot = self.scorer.scores(candidates) if (self.scorer is not None and candidates) else None
        results = []
        for j, cond in enumerate(CONDITIONS):
            direct = [e for e in ents if e["canonical"] in cond.direct]
            support = [e for e in ents if e["canonical"] in cond.supportive and e["status"] != NEGATED]
            by_status = {s: [e for e in direct if e["status"] == s] for s in (PRESENT, UNCERTAIN, NEGATED)}
            status, score, evidence, sources = None, 0.0, [], []
            if by_status[PRESENT]:
                status, score, evidence = PRESENT, RULE_SCORES["direct_present"], by_status[PRESENT]
            elif by_status[UNCERTAIN]:
                status, score, evidence = UNCERTAIN, RULE_SCORES["direct_uncertain"], by_status[UNCERTAIN]
            elif support:
                status, score, evidence = UNCERTAIN, RULE_SCORES["supportive"], support
            elif by_status[NEGATED]:
                status, score, evidence = NEGATED, RULE_SCORES["negated"], by_status[NEGATED]
            phrases = [_phrase(e) for e in evidence]
            if status is not None:
                sources.append("rules")
            if zero_shot is not None and status != NEGATED and zero_shot.shape[0]:
                best = int(np.argmax(zero_shot[:, j]))
                zs = float(zero_shot[best, j])
                if zs > 0:
                    sources.append(self.scorer.method)
                    if status is None:
                        status, score = UNCERTAIN, zs
                    else:
                        score = max(score, zs)
                    phrases.append(f"{candidates[best]} ({self.scorer.method} match)")
            if status is None:
                continue
            results.append(ConditionResult(cond.key, cond.name, round(float(score), 3), status,
                                           list(dict.fromkeys(phrases)), sources))
        order = {PRESENT: 0, UNCERTAIN: 1, NEGATED: 2}
        results.sort(key=lambda r: (order[r.status], -r.score, r.key))
        return results


def _phrase(entity: dict) -> str:
    cue = entity.get("cue")
    text = entity["text"]
    if entity["status"] == NEGATED:
        return f"{text} (denied: {entity.get('sentence') or text})"
    if entity["status"] == UNCERTAIN and cue:
        return f"{text} ({cue})"
    return text

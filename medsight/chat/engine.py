"""Tiered, grounded, streaming chat answers.

Order of work for one question:
  1. Safety screen (`medsight.chat.safety.check_question`): dosing and out-of-scope requests are refused
     here; no model sees them.
  2. Intent and topic (`medsight.chat.intents`); a follow-up without a topic inherits the last topic of the
     conversation.
  3. Retrieval from the knowledge corpus: the reference note(s) for the topic and the intent, plus the most
     similar literature passages (sentence-embedding search in ChromaDB). Passages are numbered [1], [2] …
  4. Answer, by tier, through `LanguageModel.stream_text` (which owns streaming and the fall-through):
       cloud  Gemini (only with GEMINI_API_KEY and the user's consent),
       local  MedGemma (mlx-vlm, Apple Silicon) or a local transformers model,
       template  the deterministic engine (`medsight.chat.templates`; always available; the default).
     A model's live output passes the `SentenceGate` before it is shown: a sentence with medication dosing ends
     the answer, definitive-diagnosis wording is softened, and markers that point to no retrieved passage are
     removed. Small models flagged `weak` (SmolLM2-135M) are not streamed live: their whole answer must pass
     `answer_problems` (citations present, no dosing, no diagnosis wording, on topic, grounded) or the next
     tier answers, and the reply says so.
  5. The decision-support disclaimer closes every reply.
Report text and retrieved passages are data: they are fenced in prompts (`medsight.llm.prompts.fence`) and
the template engine only quotes sentences from them that pass the dosing, diagnosis and injection screens.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

from medsight.chat import intents as I
from medsight.chat.corpus import CorpusError, KnowledgeBase, RetrievedPassage
from medsight.chat.safety import (DISCLAIMER, SentenceGate, check_answer, check_question, citation_numbers,
                                  grounding_problems, with_disclaimer)
from medsight.chat.templates import TemplateEngine, finding_name, terms
from medsight.llm.base import LanguageModel, LLMBackend, Message, Prompt, StreamAttempt, text_pieces
from medsight.llm.prompts import CHAT_SYSTEM, fence
from medsight.llm.safety import normalise_text
from medsight.registry import ModelUnavailable

MAX_PASSAGES = 5
LITERATURE_K = 2
# Literature hits below this cosine similarity are not shown (an unrelated abstract is worse than none).
LITERATURE_MIN_SCORE = 0.30
HISTORY_TURNS = 6
LOCAL_MAX_TOKENS = 220
CLOUD_MAX_TOKENS = 700

LEVEL_LABELS = {"cloud": "Cloud model", "local": "Local language model", "template": "Template engine"}

CHAT_RULES = (
    "\n\nChat rules:\n- Cite the numbered passages for every factual statement, as [1], [2]; cite only passages "
    "that are given.\n- Use hedged wording (\"may\", \"is compatible with\", \"consider\"); never state a "
    "diagnosis as certain.\n- Never give medication names with doses, regimens or prescriptions.\n- Answer in at "
    "most 6 sentences."
)


# --------------------------------------------------------------------------------------------- data

# What a refused question's note says to the reader (the rule names stay in the code and its tests).
REFUSAL_NOTES = {
    "dosing": "refused by a safety rule: medication doses and prescriptions are not given here",
    "out_of_scope": "refused by a safety rule: outside what this chat answers",
}


@dataclass
class Citation:
    """A passage retrieved for one answer.

    Attributes:
        number: its marker number [n] in the answer.
        cited: whether the answer text actually uses the marker.
        label: "PMID 123: Title" or "Reference note: Title".
        snippet: the start of the passage, for the citation list.
    """

    number: int
    passage_id: str
    label: str
    title: str
    source: str
    pmid: str
    score: float
    snippet: str
    cited: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ChatReply:
    """One assistant reply, as shown and as saved in History.

    Attributes:
        text: the reply (disclaimer included).
        intent: detected intent.
        level: "cloud", "local" or "template" (which tier answered).
        tier: registry tier for the badge: "real" for a published/cloud model, "rules" for the template engine.
        backend: backend name ("gemini", "smollm2-135m-instruct", "template").
        answered_by: human description of who answered.
        citations: passages retrieved for this answer, numbered as in the text.
        refused: "" or the refusal kind ("dosing", "out_of_scope").
        notes: what happened on the way (a model's answer failing checks, softened wording, ...).
        attempts: tries of model backends.
        seconds / retrieval_seconds: wall time of the whole reply and of retrieval.
        timestamp: ISO time (UTC).
    """

    text: str
    intent: str
    level: str
    tier: str
    backend: str
    answered_by: str
    citations: list[Citation] = field(default_factory=list)
    refused: str = ""
    notes: list[str] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    retrieval_seconds: float = 0.0
    timestamp: str = ""

    def to_message(self) -> dict:
        """The History message for this reply (role, text, tier, citations, timestamp, ...)."""
        data = asdict(self)
        data["role"] = "assistant"
        data["seconds"] = round(self.seconds, 3)
        data["retrieval_seconds"] = round(self.retrieval_seconds, 3)
        return data


def user_message(text: str) -> dict:
    """A History message for a user question."""
    return {"role": "user", "text": text, "timestamp": _now()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------- context

def study_context(analysis: dict | None, verification: dict | None = None) -> dict:
    """Compact, de-identified study results for prompts and templates.

    Args:
        analysis: `AnalysisResult.to_dict()` (or None).
        verification: a verification payload (or None).
    """
    from medsight.llm.rules import model_findings

    if not analysis:
        return {}
    out: dict[str, Any] = {"study_id": (analysis.get("study") or {}).get("study_id") or analysis.get("study_id", "")}
    anomaly = analysis.get("anomaly") or {}
    if "fused_score" in anomaly:
        out["anomaly"] = {k: anomaly.get(k) for k in ("fused_score", "threshold", "is_anomalous", "tier",
                                                    "peak_deviation", "deviation_threshold", "deviation_unusual")}
    evidence = model_findings(analysis)
    if evidence:
        out["pathology"] = {
            "tier": (analysis.get("pathology") or {}).get("tier", ""),
            "flagged": {n: {"probability": e["probability"], "threshold": e["threshold"],
                            "laterality": e["laterality"]} for n, e in evidence.items() if e["positive"]},
            "near_threshold": {n: {"probability": e["probability"], "threshold": e["threshold"]}
                               for n, e in evidence.items() if e["near"]},
        }
    fusion = analysis.get("fusion") or {}
    risk = fusion.get("risk")
    if isinstance(risk, dict) and risk.get("level"):
        out["risk"] = {"level": risk.get("level"), "reasons": list(risk.get("reasons") or [])[:4]}
    if fusion.get("contradictions"):
        out["contradictions"] = [str(c)[:200] for c in fusion["contradictions"][:4]]
    if verification:
        items = verification.get("discrepancies") or verification.get("items") or []
        out["verification"] = {"discrepancies": [str(d.get("message", d) if isinstance(d, dict) else d)[:200]
                                                 for d in items[:5]],
                               "verdict": verification.get("verdict") or verification.get("status", "")}
    if analysis.get("symptoms"):
        out["has_symptoms"] = True
    return out


# --------------------------------------------------------------------------------------------- engine

class ChatTurn:
    """One question being answered. Iterate `stream()` for the text chunks; `reply` is set when it ends."""

    def __init__(self, generator_factory):
        self._factory = generator_factory
        self.reply: ChatReply | None = None

    def stream(self) -> Iterator[str]:
        yield from self._factory(self)

    def run(self) -> ChatReply:
        """Consume the stream and return the reply (non-streaming use, tests, CLI)."""
        for _ in self.stream():
            pass
        assert self.reply is not None
        return self.reply


class ChatEngine:
    """Grounded chat over the current study, the conversation and the knowledge corpus.

    Args:
        knowledge: the knowledge corpus (None or empty: answers carry no citations and say so).
        llm: backend chain (cloud/local). None or empty: the template engine answers.
        max_passages: passages retrieved per answer.
    """

    def __init__(self, knowledge: KnowledgeBase | None = None, llm: LanguageModel | None = None,
                 max_passages: int = MAX_PASSAGES):
        self.knowledge = knowledge
        self.llm = llm
        self.max_passages = max_passages

    # -- retrieval -------------------------------------------------------------------------------------
    def _topic(self, match: I.IntentMatch, analysis: dict | None, history: Sequence[dict]) -> I.Topic | None:
        if match.topic is not None:
            return match.topic
        if match.intent not in (I.EXPLAIN_FINDING, I.DIFFERENTIAL, I.NEXT_STEPS, I.DEFINITION):
            return None  # score, model and limits questions need no finding topic
        for message in reversed(list(history or [])):
            if message.get("role") == "user":
                topic = I.find_topic(message.get("text", ""))
                if topic is not None:
                    return topic
        if match.intent in (I.EXPLAIN_FINDING, I.NEXT_STEPS, I.DIFFERENTIAL) and analysis:
            flagged = list(((study_context(analysis).get("pathology") or {}).get("flagged") or {}))
            if flagged:
                finding = max(flagged, key=lambda f: study_context(analysis)["pathology"]["flagged"][f]["probability"])
                return I.Topic("finding", finding, finding_name(finding), I.FINDING_NOTE.get(finding, ""))
        return None

    def _note_keys(self, question: str, match: I.IntentMatch, topic: I.Topic | None,
                   analysis: dict | None) -> list[str]:
        keys: list[str] = []
        intent = match.intent
        if intent == I.SCORE_MEANING:
            keys += ["anomaly_score", "operating_threshold"]
            if re.search(r"probab|classif|patholog|label", question, re.I) or \
                    (topic is not None and topic.kind != "term"):
                keys.insert(1, "pathology_classifier")
        elif intent == I.HOW_MODEL_WORKS:
            keys += ["anomaly_score", "pathology_classifier", "tiers"]
        elif intent == I.LIMITS:
            keys += ["limits", "tiers"]
        if topic is not None and topic.note_key:
            keys.insert(0, topic.note_key)
        if intent in (I.DIFFERENTIAL, I.NEXT_STEPS, I.EXPLAIN_FINDING) and analysis and topic is None:
            for finding in (study_context(analysis).get("pathology") or {}).get("flagged", {}):
                if I.FINDING_NOTE.get(finding):
                    keys.append(I.FINDING_NOTE[finding])
        return list(dict.fromkeys(keys))[:3]

    def retrieve(self, question: str, match: I.IntentMatch, topic: I.Topic | None = None,
                 analysis: dict | None = None) -> list[RetrievedPassage]:
        """Passages for this answer: the notes the intent and topic call for, then similar literature."""
        if self.knowledge is None or self.knowledge.count() == 0:
            return []
        if match.intent in (I.GREETING, I.HELP, I.OUT_OF_SCOPE):
            return []
        found: list[RetrievedPassage] = []
        notes = self.knowledge.get([f"note-{k}" for k in self._note_keys(question, match, topic, analysis)])
        found += [RetrievedPassage(p, 1.0, i) for i, p in enumerate(notes, start=1)]
        if match.intent in (I.EXPLAIN_FINDING, I.DIFFERENTIAL, I.NEXT_STEPS, I.DEFINITION):
            query = question if topic is None or topic.text.lower() in question.lower() else f"{topic.text}: {question}"
            have = {r.passage.passage_id for r in found}
            for hit in self.knowledge.search(query, k=LITERATURE_K + len(have) + 2,
                                             where={"source": {"$ne": "note"}}):
                if hit.passage.passage_id not in have and len(found) < self.max_passages \
                        and hit.score >= LITERATURE_MIN_SCORE:
                    if sum(r.passage.source != "note" for r in found) < LITERATURE_K:
                        found.append(hit)
            if not notes:  # no note for this topic: the closest notes by meaning
                for hit in self.knowledge.search(query, k=2, where={"source": "note"}):
                    if hit.passage.passage_id not in have and hit.score >= 0.35 and len(found) < self.max_passages:
                        found.insert(0, hit)
        return [RetrievedPassage(r.passage, r.score, i) for i, r in enumerate(found[:self.max_passages], start=1)]

    # -- answering -------------------------------------------------------------------------------------
    def respond(self, question: str, *, analysis: dict | None = None, verification: dict | None = None,
                report_text: str = "", history: Sequence[dict] = ()) -> ChatTurn:
        """Start answering `question`; iterate `turn.stream()` to get the text, then read `turn.reply`.

        Args:
            question: the user's question.
            analysis: current `AnalysisResult.to_dict()` (or None).
            verification: current verification payload (or None).
            report_text: the report under review (data; fenced in prompts).
            history: earlier messages of this thread (dicts with role and text).
        """
        return ChatTurn(lambda turn: self._run(turn, question, analysis, verification, report_text, list(history)))

    def answer(self, question: str, **kwargs) -> ChatReply:
        """Non-streaming convenience: the finished reply."""
        return self.respond(question, **kwargs).run()

    def _run(self, turn: ChatTurn, question: str, analysis, verification, report_text, history) -> Iterator[str]:
        start = time.perf_counter()
        question = normalise_text(question).strip()[:2000]
        screen = check_question(question)
        if not screen.ok:
            text = with_disclaimer(screen.message)
            yield from text_pieces(text)
            turn.reply = ChatReply(text, "refusal", "template", "rules", "template", LEVEL_LABELS["template"] +
                                   " (safety rule)", refused=screen.verdict, notes=[REFUSAL_NOTES.get(screen.verdict, REFUSAL_NOTES["out_of_scope"])],
                                   seconds=time.perf_counter() - start, timestamp=_now())
            return
        match = I.detect_intent(question)
        topic = self._topic(match, analysis, history)
        t0 = time.perf_counter()
        notes: list[str] = []
        try:
            retrieved = self.retrieve(question, match, topic, analysis)
        except (CorpusError, ModelUnavailable) as exc:  # answer without sources rather than not at all
            retrieved = []
            notes.append(f"knowledge corpus unavailable: {str(exc).splitlines()[0][:200]}")
        retrieval_seconds = time.perf_counter() - t0
        context = study_context(analysis, verification)
        # Greetings, help and out-of-scope questions need no model: the template engine answers them.
        factual = match.intent not in (I.GREETING, I.HELP, I.OUT_OF_SCOPE)
        llm = self.llm if (self.llm is not None and factual) else LanguageModel([])
        gates: list[SentenceGate] = []

        def gated(chunks: Iterator[str]) -> Iterator[str]:
            gates.append(SentenceGate(len(retrieved)))
            return gates[-1].feed_stream(chunks)

        record: dict = {}
        shown: list[str] = []
        for piece in llm.stream_text(
                self.build_prompt(question, context, retrieved, history, report_text),
                rules=lambda: TemplateEngine(question, match, topic, context, retrieved, analysis, history).compose(),
                accept=lambda text: answer_problems(text, question, retrieved), gate=gated,
                max_tokens=CLOUD_MAX_TOKENS, checked_max_tokens=LOCAL_MAX_TOKENS, record=record):
            shown.append(piece)
            yield piece
        body = "".join(shown)
        backend: LLMBackend | None = record["model"]
        answered = "the template engine" if backend is None else backend.name
        notes += [note for note in (_attempt_note(a, answered) for a in record["attempts"]) if note]
        if backend is not None and not getattr(backend, "weak", False):  # streamed live through the gate
            notes += gates[-1].notes
            if retrieved and not citation_numbers(body):
                extra = "\n\n(This answer cites none of the retrieved passages; treat it as unsupported.)"
                notes.append("the model cited no passage")
                body += extra
                yield extra
        tail = "" if DISCLAIMER in body else f"\n\n*{DISCLAIMER}*"
        yield tail
        level = "template" if backend is None else ("local" if getattr(backend, "local", True) else "cloud")
        attempts = [{"backend": a.backend, "ok": a.ok, "seconds": round(a.seconds, 2), "error": a.error}
                    for a in record["attempts"]]
        turn.reply = self._reply(body + tail, match, level, backend, retrieved, notes, attempts, start,
                                 retrieval_seconds)

    def _reply(self, text: str, match: I.IntentMatch, level: str, backend: LLMBackend | None,
               retrieved: list[RetrievedPassage], notes, attempts, start: float, retrieval_seconds: float) -> ChatReply:
        cited = set(citation_numbers(text))
        citations = [Citation(r.rank, r.passage.passage_id, r.passage.label, r.passage.title, r.passage.source,
                              r.passage.pmid, round(r.score, 4), _snippet(r.passage.text), r.rank in cited)
                     for r in retrieved]
        if backend is None:
            answered_by = "Template engine (deterministic, no language model)"
            tier, name = "rules", "template"
        else:
            answered_by = backend.describe() + (" — answer checked before display" if getattr(backend, "weak", False)
                                                else "")
            tier, name = getattr(backend, "tier", "real"), backend.name
        return ChatReply(text, match.intent, level, tier, name, answered_by, citations, "", notes, attempts,
                         time.perf_counter() - start, retrieval_seconds, _now())

    # -- prompts ---------------------------------------------------------------------------------------
    @staticmethod
    def build_prompt(question: str, context: dict, retrieved: list[RetrievedPassage], history: Sequence[dict],
                     report_text: str = "") -> Prompt:
        """The model prompt: rules, study results as JSON, the report and passages fenced as DATA, history."""
        import secrets

        nonce = secrets.token_hex(4)
        parts = ["Study results (JSON, produced by this tool):", json.dumps(context, sort_keys=True, default=str), ""]
        if report_text.strip():
            parts += ["Report under review:", fence(report_text[:4000], "REPORT", nonce), ""]
        for r in retrieved:
            parts += [f"Passage [{r.rank}] ({r.passage.label}):", fence(r.passage.text[:1500], f"PASSAGE {r.rank}", nonce),
                      ""]
        if not retrieved:
            parts += ["(No passages were retrieved; say that the knowledge corpus has nothing on this.)", ""]
        parts += ["Question from the radiologist:", question]
        past = [Message(m["role"], _strip_disclaimer(m.get("text", ""))[:800]) for m in history[-HISTORY_TURNS:]
                if m.get("role") in ("user", "assistant")]
        return Prompt(system=CHAT_SYSTEM + CHAT_RULES, user="\n".join(parts), history=past)


def _strip_disclaimer(text: str) -> str:
    return text.replace(f"*{DISCLAIMER}*", "").replace(DISCLAIMER, "").strip()


def _snippet(text: str, limit: int = 360) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def answer_problems(text: str, question: str, retrieved: list[RetrievedPassage]) -> list[str]:
    """What keeps a small model's whole answer from being shown: the answer checks and, when passages were
    retrieved, the grounding checks (none: the answer may be shown)."""
    context_terms = terms(question) | terms(" ".join(r.passage.title + " " + r.passage.text[:600] for r in retrieved))
    problems = list(check_answer(text, len(retrieved), require_citation=bool(retrieved), question=question,
                                 context_terms=tuple(context_terms)).problems)
    if retrieved:  # a small model must also stay close to what it cites
        problems += grounding_problems(text, [r.passage.text for r in retrieved])
    return problems


def _attempt_note(attempt: StreamAttempt, answered: str) -> str:
    """What the reply says about a model that did not answer (nothing for an answer cut off mid-stream, which
    carries its own notice); `answered` names who answered instead."""
    if attempt.outcome == "failed":
        return f"{attempt.backend} did not answer ({attempt.exception})"
    if attempt.outcome == "empty":
        return f"{attempt.backend} returned no text"
    if attempt.outcome == "rejected":
        return (f"The local model ({attempt.backend}) answered, but its answer failed the checks "
                f"({', '.join(attempt.problems)}), so {answered} answered instead.")
    return ""

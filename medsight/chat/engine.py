"""Tiered, grounded, streaming chat answers.

Order of work for one question:
  1. Safety screen (`medsight.chat.safety.check_question`): dosing and out-of-scope requests are refused
     here; no model sees them.
  2. Intent and topic (`medsight.chat.intents`); a follow-up without a topic inherits the last topic of the
     conversation.
  3. Retrieval from the knowledge corpus: the reference note(s) for the topic and the intent, plus the most
     similar literature passages (sentence-embedding search in ChromaDB). Passages are numbered [1], [2] …
  4. Answer, by tier:
       cloud  Gemini (only with GEMINI_API_KEY and the user's consent),
       local  MedGemma (mlx-vlm, Apple Silicon) or a local transformers model,
       template  the deterministic engine (always available; the default).
     A model's output passes a sentence gate before it is shown: a sentence with medication dosing ends the
     answer, definitive-diagnosis wording is softened, and markers that point to no retrieved passage are
     removed. Small models flagged `weak` (SmolLM2-135M) are not streamed live: their whole answer must pass
     `check_answer` (citations present, no dosing, no diagnosis wording, on topic) or the template engine
     answers instead, and the reply says so.
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
from medsight.registry import ModelUnavailable
from medsight.chat.safety import (DISCLAIMER, check_answer, check_question, citation_numbers, definitive_statements,
                                  grounding_problems, is_dosing, screen_injection, soften_definitive,
                                  strip_invalid_citations,
                                  with_disclaimer)
from medsight.llm.base import LanguageModel, LLMBackend, LLMError, Message, Prompt
from medsight.llm.prompts import CHAT_SYSTEM, fence
from medsight.llm.safety import normalise_text

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


# --------------------------------------------------------------------------------------------- helpers

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"[a-z][a-z-]{3,}")
_STOP = {"what", "does", "this", "that", "with", "from", "have", "about", "there", "their", "which", "when", "where",
         "would", "could", "should", "explain", "mean", "means", "tell", "more", "study", "patient", "image", "your",
         "they", "them", "were", "been", "being", "into", "than", "then", "also", "some", "such"}


_SECTION_LABEL = re.compile(r"^(?:[A-Z][A-Z &/-]{3,}:?\s+)+(?=[A-Z])")


def sentences(text: str) -> list[str]:
    """Sentences of a passage, without structured-abstract labels such as "BACKGROUND"."""
    return [_SECTION_LABEL.sub("", s.strip()) for s in _SENT_SPLIT.split(text or "") if s.strip()]


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall((text or "").lower()) if w not in _STOP}


def safe_sentence(sentence: str) -> bool:
    """A sentence the template engine may quote: no dosing, no diagnosis claims, no instructions."""
    return not (is_dosing(sentence) or definitive_statements(sentence) or screen_injection(sentence).flagged)


def best_sentences(text: str, query: str, n: int = 1, prefer: Sequence[str] = (), max_chars: int = 320,
                   exclude: set[str] | frozenset = frozenset()) -> list[str]:
    """The `n` quotable sentences of `text` that share the most words with `query` (ties: earlier first).

    Args:
        prefer: words that add weight (e.g. "radiograph" for imaging appearance).
    """
    wanted = _terms(query) | {p.lower() for p in prefer}
    scored = []
    for index, sentence in enumerate(sentences(text)):
        if sentence in exclude or len(sentence) > max_chars or len(sentence) < 25 or not safe_sentence(sentence):
            continue
        words = _terms(sentence)
        score = len(words & wanted) + 0.5 * sum(1 for p in prefer if p.lower() in sentence.lower())
        scored.append((-score, index, sentence))
    scored.sort()
    chosen = sorted(scored[:n], key=lambda item: item[1])
    return [s for _, _, s in chosen]


def _fmt(p: Any) -> str:
    try:
        return f"{float(p):.2f}"
    except (TypeError, ValueError):
        return str(p)


def _name(finding: str) -> str:
    return finding.replace("_", " ")


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
                return I.Topic("finding", finding, _name(finding), I.FINDING_NOTE.get(finding, ""))
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
            yield from _chunks(text)
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
        attempts: list[dict] = []
        factual = match.intent not in (I.GREETING, I.HELP, I.OUT_OF_SCOPE)

        for backend in (self.llm.backends if (self.llm is not None and factual) else []):
            level = "local" if getattr(backend, "local", True) else "cloud"
            prompt = self.build_prompt(question, context, retrieved, history, report_text)
            a0 = time.perf_counter()
            if getattr(backend, "weak", False):
                try:
                    raw = backend.generate(prompt, max_tokens=LOCAL_MAX_TOKENS)
                except LLMError as exc:
                    attempts.append({"backend": backend.name, "ok": False, "seconds": round(time.perf_counter() - a0, 2),
                                     "error": str(exc)[:200]})
                    notes.append(f"{backend.name} did not answer ({type(exc).__name__})")
                    continue
                check = check_answer(raw, len(retrieved), require_citation=bool(retrieved), question=question,
                                     context_terms=tuple(_terms(question) | _terms(" ".join(
                                         r.passage.title + " " + r.passage.text[:600] for r in retrieved))))
                if retrieved:  # a small model must also stay close to what it cites
                    check.problems += grounding_problems(raw, [r.passage.text for r in retrieved])
                    check.ok = not check.problems
                attempts.append({"backend": backend.name, "ok": check.ok, "seconds": round(time.perf_counter() - a0, 2),
                                 "error": "; ".join(check.problems)})
                if not check.ok:
                    notes.append(f"The local model ({backend.name}) answered, but its answer failed the checks "
                                 f"({', '.join(check.problems)}), so the template engine answered instead.")
                    continue
                text = with_disclaimer(raw.strip())
                yield from _chunks(text)
                turn.reply = self._reply(text, match, level, backend, retrieved, notes, attempts, start,
                                         retrieval_seconds)
                return
            # Capable models stream live through the sentence gate.
            gate = _SentenceGate(len(retrieved))
            shown: list[str] = []
            try:
                for piece in gate.feed_stream(backend.stream(prompt, max_tokens=CLOUD_MAX_TOKENS)):
                    shown.append(piece)
                    yield piece
            except Exception as exc:  # noqa: BLE001 - any backend failure moves to the next tier
                attempts.append({"backend": backend.name, "ok": False, "seconds": round(time.perf_counter() - a0, 2),
                                 "error": type(exc).__name__})
                if shown:
                    tail = "\n\n[The language model stopped unexpectedly.]"
                    shown.append(tail)
                    yield tail
                else:
                    notes.append(f"{backend.name} did not answer ({type(exc).__name__})")
                    continue
            if not shown:
                attempts.append({"backend": backend.name, "ok": False, "seconds": round(time.perf_counter() - a0, 2),
                                 "error": "empty answer"})
                notes.append(f"{backend.name} returned no text")
                continue
            attempts.append({"backend": backend.name, "ok": True, "seconds": round(time.perf_counter() - a0, 2)})
            notes += gate.notes
            body = "".join(shown)
            if retrieved and not citation_numbers(body):
                extra = "\n\n(This answer cites none of the retrieved passages; treat it as unsupported.)"
                notes.append("the model cited no passage")
                body += extra
                yield extra
            tail = f"\n\n*{DISCLAIMER}*"
            yield tail
            turn.reply = self._reply(body + tail, match, level, backend, retrieved, notes, attempts, start,
                                     retrieval_seconds)
            return

        text = with_disclaimer(TemplateEngine(question, match, topic, context, retrieved, analysis, history).compose())
        yield from _chunks(text)
        turn.reply = self._reply(text, match, "template", None, retrieved, notes, attempts, start, retrieval_seconds)

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


def _chunks(text: str, words: int = 4) -> Iterator[str]:
    """Text in small pieces for `st.write_stream` (whitespace kept, so joining gives the text back)."""
    tokens = re.findall(r"\S+\s*|\s+", text)
    for i in range(0, len(tokens), words):
        yield "".join(tokens[i:i + words])


class _SentenceGate:
    """Releases model output sentence by sentence after the safety edits (see the module docstring)."""

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


# --------------------------------------------------------------------------------------------- templates

class TemplateEngine:
    """Deterministic answers per intent from the study results and the retrieved passages."""

    def __init__(self, question: str, match: I.IntentMatch, topic: I.Topic | None, context: dict,
                 retrieved: list[RetrievedPassage], analysis: dict | None, history: Sequence[dict]):
        self.question, self.match, self.topic, self.context = question, match, topic, context
        self.retrieved, self.analysis, self.history = retrieved, analysis or {}, history
        self._used: set[str] = set()  # sentences already quoted, so two citations of one note differ

    # passages
    def _find(self, key: str) -> RetrievedPassage | None:
        return next((r for r in self.retrieved if r.passage.note_key == key), None)

    def _notes(self) -> list[RetrievedPassage]:
        return [r for r in self.retrieved if r.passage.source == "note"]

    def _literature(self) -> list[RetrievedPassage]:
        return [r for r in self.retrieved if r.passage.source != "note"]

    def _cite(self, r: RetrievedPassage, n: int = 1, prefer: Sequence[str] = (), query: str | None = None) -> str:
        picked = best_sentences(r.passage.text, query or self.question, n=n, prefer=prefer, exclude=self._used)
        self._used.update(picked)
        return " ".join(f"{s.rstrip()} [{r.rank}]" if s.rstrip()[-1:] not in ".!?" else f"{s.rstrip()[:-1]} [{r.rank}]."
                        for s in picked)

    def _literature_lines(self) -> list[str]:
        lines = []
        for r in self._literature():
            quote = best_sentences(r.passage.text, f"{self.question} {self.topic.text if self.topic else ''}", n=1)
            year = f", {r.passage.year}" if r.passage.year else ""
            if quote:
                lines.append(f"- *{r.passage.title}*{year}: \u201c{quote[0]}\u201d [{r.rank}]")
            else:
                lines.append(f"- *{r.passage.title}*{year} [{r.rank}]")
        return lines

    # study facts
    def _flagged(self) -> dict:
        return (self.context.get("pathology") or {}).get("flagged") or {}

    def _near(self) -> dict:
        return (self.context.get("pathology") or {}).get("near_threshold") or {}

    def _finding_status(self, finding: str) -> str | None:
        from medsight.llm.rules import model_findings

        ev = model_findings(self.analysis).get(finding)
        if ev is None:
            return None
        side = f", {ev['laterality']}" if ev.get("laterality") and ev["laterality"] != "n/a" else ""
        if ev["positive"]:
            return (f"In this study the pathology classifier flags {_name(finding)} (probability {_fmt(ev['probability'])},"
                    f" operating threshold {_fmt(ev['threshold'])}{side}).")
        if ev["near"]:
            return (f"In this study {_name(finding)} is just below its operating threshold (probability "
                    f"{_fmt(ev['probability'])} vs {_fmt(ev['threshold'])}), so the model does not flag it, but the "
                    "margin is small.")
        return (f"In this study the pathology classifier does not flag {_name(finding)} (probability "
                f"{_fmt(ev['probability'])}, threshold {_fmt(ev['threshold'])}).")

    def _no_sources(self) -> str:
        return ("The knowledge corpus returned no passage for this question, so I cannot cite a source; build the "
                "corpus with `python -m medsight.chat.corpus` or from this page.")

    # intents
    def compose(self) -> str:
        handler = getattr(self, f"_{self.match.intent}", self._explain_finding)
        return handler().strip()

    def _greeting(self) -> str:
        return ("Hello. I can explain this study's results, what the scores mean, a differential to consider, "
                "questions for the referring clinician, how the models work and where they are uncertain, and "
                "define chest radiograph terms — with citations from the local knowledge corpus.")

    def _help(self) -> str:
        in_context = ("An analysis of the current study is in context." if self.context else
                      "No analysis is in context yet: run Analyze on a study for study-specific answers.")
        # Only a finding this study's models flagged is offered as an example question.
        flagged = list(self._flagged())
        explain = f"- *Explain the {flagged[0].lower()} finding.*\n" if flagged else ""
        return (f"{in_context} You can ask, for example:\n"
                f"{explain}- *What does the anomaly score mean?*\n"
                "- *What is the differential?*\n- *What questions should I ask the clinician?*\n"
                "- *How does the anomaly detector work?*\n- *How reliable is this result?*\n"
                "- *What is the silhouette sign?*\n"
                "I do not give medication doses or prescriptions, and I do not make diagnoses.")

    def _out_of_scope(self) -> str:
        return ("I can't answer that: this chat gives decision support about chest radiographs, not diagnoses, "
                "prognoses or legal and billing advice. I can list a differential to consider, explain a finding "
                "or suggest questions for the referring clinician.")

    def _score_meaning(self) -> str:
        parts: list[str] = []
        anomaly = self.context.get("anomaly")
        if anomaly:
            above = "above" if anomaly.get("is_anomalous") else "below"
            verdict = "outside the normal range" if anomaly.get("is_anomalous") else "within the normal range"
            parts.append(f"This study's anomaly score is {float(anomaly['fused_score']):.3f}, {above} its threshold "
                         f"{float(anomaly['threshold']):.3f}, so the detector calls it {verdict} "
                         f"(model tier: {anomaly.get('tier') or 'unknown'}).")
            if anomaly.get("peak_deviation") is not None and anomaly.get("deviation_threshold") is not None:
                where = "above" if anomaly.get("deviation_unusual") else "within"
                parts.append(f"Its peak deviation from normal is {float(anomaly['peak_deviation']):.1f}, {where} the "
                             f"normal range (95 % of normal images stay below "
                             f"{float(anomaly['deviation_threshold']):.1f}); the deviation map on the Heatmap page "
                             "shows where.")
        elif not self.context:
            parts.append("No analysis is in context, so there is no score to interpret yet; here is what the scores "
                         "mean in general.")
        note = self._find("anomaly_score")
        if note:
            parts.append(self._cite(note, 2, prefer=("threshold", "unusual", "measures")))
        flagged, near = self._flagged(), self._near()
        pathology = self._find("pathology_classifier")
        if flagged or near or pathology:
            if flagged:
                parts.append("Flagged labels: " + ", ".join(f"{_name(k)} {_fmt(v['probability'])} (threshold "
                                                            f"{_fmt(v['threshold'])})" for k, v in flagged.items()) + ".")
            if near:
                parts.append("Just below threshold: " + ", ".join(f"{_name(k)} {_fmt(v['probability'])}"
                                                                  for k, v in near.items()) + ".")
            if pathology:
                parts.append(self._cite(pathology, 1, prefer=("0.5", "rescaled", "operating")))
        threshold = self._find("operating_threshold")
        if threshold:
            parts.append(self._cite(threshold, 1, prefer=("below", "negative")))
        risk = self.context.get("risk")
        if risk:
            reasons = "; ".join(str(r).rstrip(". ") for r in risk.get("reasons") or [])
            parts.append(f"The fusion stage rates the risk as {risk['level']}" + (f" ({reasons})." if reasons else "."))
        if not self.retrieved:
            parts.append(self._no_sources())
        return " ".join(p for p in parts if p)

    def _explain_finding(self) -> str:
        parts: list[str] = []
        topic = self.topic
        if topic is None:
            if not self.context:
                return ("Which finding would you like explained? No analysis is in context; name a finding (for "
                        "example *pleural effusion*) or run Analyze first.")
            if not self._flagged():
                parts.append("The image models flag no finding in this study.")
                return " ".join(parts + ["A negative result does not exclude disease; ask about the limits of the "
                                         "models for details."])
        if topic is not None and topic.findings and self.analysis:
            statuses = [s for s in (self._finding_status(f) for f in topic.findings) if s]
            if statuses:
                parts += statuses
            elif self.context.get("pathology") is not None:
                parts.append(f"The image models in this study do not report {topic.text} as a label.")
        note = self._find(topic.note_key) if topic is not None and topic.note_key else (self._notes() or [None])[0]
        if note:
            parts.append(self._cite(note, 2, prefer=("is", "means"), query=f"{note.passage.title} is"))
            parts.append(self._cite(note, 1, prefer=("radiograph", "appears", "shows", "signs"),
                                    query="radiograph appearance signs"))
        lit = self._literature_lines()
        if lit:
            parts.append("\nFrom the literature:\n" + "\n".join(lit))
        if not self.retrieved:
            parts.append(self._no_sources())
        return " ".join(_dedupe(p for p in parts if p))

    def _definition(self) -> str:
        note = self._find(self.topic.note_key) if self.topic is not None and self.topic.note_key else None
        note = note or (self._notes() or [None])[0]
        parts = []
        if note:
            parts.append(f"**{note.passage.title}.** " + self._cite(note, 2, query=f"{note.passage.title} is means"))
        lit = self._literature_lines()[:1]
        if lit:
            parts.append("\nRelated literature:\n" + "\n".join(lit))
        if not parts:
            return self._no_sources()
        return " ".join(parts)

    def _differential(self) -> str:
        from medsight.llm.rules import differential_from_findings

        parts: list[str] = []
        if self.analysis and self.context.get("pathology") is not None:
            items = differential_from_findings(self.analysis, str(self.analysis.get("symptoms") or ""))
            lines = [f"{i}. {d.condition}" + (f" — {'; '.join(d.supporting[:2])}" if d.supporting else "")
                     + (" (uncertain: supported only near threshold)" if d.uncertain else "")
                     for i, d in enumerate(items[:5], start=1)]
            parts.append("Conditions to consider, ranked by the documented rules from this study's model findings "
                         "(a ranking aid, not probabilities of disease):\n\n" + "\n".join(lines) + "\n\n")
        for note in self._notes()[:2]:
            parts.append(self._cite(note, 1, prefer=("overlap", "causes", "similar", "mimic", "include"),
                                    query="causes include overlaps with mimic differential"))
        lit = self._literature_lines()
        if lit:
            parts.append("\nFrom the literature:\n" + "\n".join(lit))
        if not parts:
            return ("No analysis is in context and the question names no finding; name a finding (for example "
                    "*consolidation*) or run Analyze first.")
        if not self.retrieved:
            parts.append(self._no_sources())
        return " ".join(parts)

    def _next_steps(self) -> str:
        parts: list[str] = ["Points to consider with the referring clinician (the decisions are theirs):"]
        bullets = ["Is there a prior radiograph to compare with?",
                   "What are the symptoms and their duration (fever, cough, breathlessness, chest pain, trauma)?"]
        flagged = self._flagged()
        if "pneumothorax" in flagged:
            bullets.insert(0, "A pneumothorax is flagged: confirm on the image and, if real, communicate it "
                              "promptly to the treating team.")
        if self._near():
            bullets.append("Findings just below threshold (" + ", ".join(_name(k) for k in self._near()) +
                           ") deserve a second look on the image.")
        if self.context.get("contradictions"):
            bullets.append("The image models and the clinical text disagree on: " +
                           "; ".join(self.context["contradictions"][:2]))
        parts.append("\n" + "\n".join(f"- {b}" for b in bullets) + "\n")
        for note in self._notes()[:2]:
            parts.append(self._cite(note, 1, prefer=("next", "usual", "considerations", "ct", "follow-up", "comparison"),
                                    query="next considerations usual next steps comparison follow-up CT"))
        lit = self._literature_lines()[:1]
        if lit:
            parts.append("\nFrom the literature:\n" + "\n".join(lit))
        if not self.retrieved:
            parts.append(self._no_sources())
        return " ".join(parts)

    def _how_model_works(self) -> str:
        parts = []
        for key, prefer in (("anomaly_score", ("fuses", "compared")), ("pathology_classifier", ("outputs", "tier")),
                            ("tiers", ("real", "demo"))):
            note = self._find(key)
            if note:
                parts.append(self._cite(note, 2, prefer=prefer))
        tiers = (self.analysis.get("summary") or {}).get("tiers") or {}
        if tiers:
            parts.append("Tiers in this analysis: " + ", ".join(f"{k} = {v}" for k, v in tiers.items()) + ".")
        return " ".join(parts) if parts else self._no_sources()

    def _limits(self) -> str:
        parts = []
        note = self._find("limits")
        if note:
            parts.append(self._cite(note, 3, prefer=("threshold", "alone", "validated", "uncertain")))
        tiers = self._find("tiers")
        demo = (self.analysis.get("summary") or {}).get("demo_models") or []
        if demo:
            parts.append("In this analysis these models are demo tier: " + ", ".join(demo) + ".")
            if tiers:
                parts.append(self._cite(tiers, 1, prefer=("demo", "phantom")))
        if self._near():
            parts.append("Near-threshold results here: " + ", ".join(
                f"{_name(k)} {_fmt(v['probability'])} vs {_fmt(v['threshold'])}" for k, v in self._near().items()) + ".")
        return " ".join(parts) if parts else self._no_sources()


def _dedupe(parts) -> list[str]:
    seen, out = set(), []
    for part in parts:
        key = part.strip()
        if key and key not in seen:
            seen.add(key)
            out.append(part)
    return out

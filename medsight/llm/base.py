"""The language-model interface shared by report verification, clinical reasoning and chat.

Backends (cloud Gemini, MedGemma via mlx-vlm, a local transformers model) implement `LLMBackend`.
`LanguageModel` tries them in order and records which one answered; `stream_text` also streams, falling
through to the next backend when one fails, yields nothing or (given an acceptance check) gives an answer the
caller rejects. Structured answers are validated
against a pydantic schema: an invalid answer is retried once with the validation error, then the next
backend is tried; when every backend fails, the task's deterministic rule function answers. Invalid model
output is never returned as if it were valid.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

DEFAULT_TIMEOUT_S = 60.0

# Ends a streamed answer whose backend failed after its first chunk (what was shown cannot be taken back).
STOPPED_UNEXPECTEDLY = "\n\n[The language model stopped unexpectedly.]"

# Judges a whole answer before it is shown: returns its problems (none: the answer may be shown).
Acceptance = Callable[[str], Sequence[str]]


class LLMError(RuntimeError):
    """A backend could not produce an answer (absent, failed, timed out)."""


class LLMTimeout(LLMError):
    """A backend did not answer within its time limit."""


class SchemaError(LLMError):
    """A backend answered, but not with JSON matching the requested schema."""


@dataclass
class Message:
    """One chat turn. `role` is "user" or "assistant"."""

    role: str
    content: str


@dataclass
class Prompt:
    """A prompt split into the fixed instructions and the user turn(s).

    Attributes:
        system: task instructions (never contains report or retrieved text unfenced).
        user: the user turn, with any report/retrieved text fenced as data (see `medsight.llm.prompts`).
        history: earlier turns, for chat.
    """

    system: str
    user: str
    history: list[Message] = field(default_factory=list)

    def as_messages(self) -> list[dict[str, str]]:
        """OpenAI/transformers-style message list (system first)."""
        messages = [{"role": "system", "content": self.system}]
        messages += [{"role": m.role, "content": m.content} for m in self.history]
        messages.append({"role": "user", "content": self.user})
        return messages


class LLMBackend:
    """One way of getting text from a language model.

    Subclasses set `name`, `tier` ("real" for published weights or a cloud model) and implement
    `_generate`. `local` says whether content stays on this machine.
    """

    name: str = "backend"
    tier: str = "real"
    local: bool = True
    supports_images: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    def _generate(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512,
                  json_mode: bool = False, schema: type[BaseModel] | None = None) -> str:
        raise NotImplementedError

    def _stream(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512) -> Iterator[str]:
        yield self._generate(prompt, image=image, max_tokens=max_tokens)

    def describe(self) -> str:
        """Short human description, e.g. for the tier badge."""
        return self.name

    def generate(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512, json_mode: bool = False,
                 schema: type[BaseModel] | None = None, timeout_s: float | None = None) -> str:
        """Generate text, giving up after `timeout_s` seconds.

        Raises:
            LLMTimeout: no answer in time (the worker thread is abandoned, not killed).
            LLMError: the backend failed.
        """
        limit = timeout_s or self.timeout_s
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llm-{self.name}")
        future = pool.submit(self._generate, prompt, image=image if self.supports_images else None,
                             max_tokens=max_tokens, json_mode=json_mode, schema=schema)
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            raise LLMTimeout(f"{self.name} did not answer within {limit:.0f} s") from None
        except LLMError:
            raise
        except Exception as exc:  # backend libraries raise many types; the router only needs "failed"
            raise LLMError(f"{self.name} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def stream(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512) -> Iterator[str]:
        """Yield text chunks as they are produced."""
        yield from self._stream(prompt, image=image if self.supports_images else None, max_tokens=max_tokens)


@dataclass
class Attempt:
    """One try of one backend, kept for the record shown with the answer."""

    backend: str
    ok: bool
    seconds: float
    error: str = ""


@dataclass
class StreamAttempt(Attempt):
    """One try in `LanguageModel.stream_text`.

    Attributes:
        outcome: "answered"; "failed" (an error before any text; `exception` names its type); "stopped" (an
            error after the first chunk: the answer ends with `STOPPED_UNEXPECTEDLY`); "empty"; or "rejected"
            (the acceptance check found `problems`).
    """

    outcome: str = "answered"
    problems: list[str] = field(default_factory=list)
    exception: str = ""


@dataclass
class StructuredAnswer(Generic[T]):
    """A schema-valid answer and who gave it.

    Attributes:
        value: the validated pydantic object.
        backend: name of the backend that answered ("rules" for the deterministic engine).
        tier: "real" (a published model or cloud model) or "rules".
        attempts: every try, in order, including failures.
        seconds: total wall time.
    """

    value: T
    backend: str
    tier: str
    attempts: list[Attempt]
    seconds: float

    def to_dict(self) -> dict:
        return {
            "value": self.value.model_dump(mode="json"),
            "backend": self.backend,
            "tier": self.tier,
            "attempts": [asdict(a) for a in self.attempts],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class TextAnswer:
    text: str
    backend: str
    tier: str
    attempts: list[Attempt]
    seconds: float

    def to_dict(self) -> dict:
        return {"text": self.text, "backend": self.backend, "tier": self.tier,
                "attempts": [asdict(a) for a in self.attempts], "seconds": round(self.seconds, 3)}


def text_pieces(text: str, words: int = 4) -> Iterator[str]:
    """Text in small pieces for a streamed display (whitespace kept, so joining gives the text back)."""
    tokens = re.findall(r"\S+\s*|\s+", text)
    for i in range(0, len(tokens), words):
        yield "".join(tokens[i:i + words])


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """Parse the first JSON object in a model's answer (tolerates code fences and chatter around it).

    Raises:
        SchemaError: when no JSON object can be parsed.
    """
    if not isinstance(text, str) or not text.strip():
        raise SchemaError("empty answer")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in [i for i, ch in enumerate(candidate) if ch == "{"][:20]:
            try:
                obj, _ = decoder.raw_decode(candidate[start:])
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    raise SchemaError("answer contains no JSON object")


def parse_structured(text: str, schema: type[T]) -> T:
    """Validate a model answer against `schema`.

    Raises:
        SchemaError: not JSON, or JSON that does not match the schema.
    """
    data = extract_json(text)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise SchemaError(f"JSON does not match {schema.__name__}: {problems}") from None


def schema_instructions(schema: type[BaseModel]) -> str:
    """Instruction text asking for JSON that matches `schema` (its JSON Schema is included)."""
    return ("Answer with ONE JSON object only, no prose and no code fences, matching this JSON Schema:\n"
            + json.dumps(schema.model_json_schema(), separators=(",", ":")))


class LanguageModel:
    """Tries backends in order; the deterministic engine answers when none can.

    Args:
        backends: in preference order (e.g. Gemini with consent, MedGemma, local model).
        timeout_s: per-call limit; `None` uses each backend's own.
    """

    def __init__(self, backends: list[LLMBackend] | None = None, timeout_s: float | None = None):
        self.backends = [b for b in (backends or []) if b is not None]
        self.timeout_s = timeout_s

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends] + ["rules"]

    @property
    def has_model(self) -> bool:
        """True when at least one language-model backend (not only rules) is configured."""
        return bool(self.backends)

    def generate_json(self, schema: type[T], prompt: Prompt, *, rules: Callable[[], T] | None = None,
                      image: Any = None, max_tokens: int = 768, retries: int = 1) -> StructuredAnswer[T]:
        """Ask for a JSON answer matching `schema`.

        Each backend gets `1 + retries` tries; a retry repeats the request with the validation error.
        After all backends, `rules()` answers (tier "rules").

        Raises:
            LLMError: every backend failed and no `rules` function was given.
        """
        start = time.perf_counter()
        attempts: list[Attempt] = []
        base = Prompt(system=prompt.system + "\n\n" + schema_instructions(schema), user=prompt.user,
                      history=list(prompt.history))
        for backend in self.backends:
            current = base
            for _ in range(1 + retries):
                t0 = time.perf_counter()
                try:
                    raw = backend.generate(current, image=image, max_tokens=max_tokens, json_mode=True,
                                           schema=schema, timeout_s=self.timeout_s)
                    value = parse_structured(raw, schema)
                except SchemaError as exc:
                    attempts.append(Attempt(backend.name, False, time.perf_counter() - t0, str(exc)[:300]))
                    # The retry carries the validation error; the invalid text itself is not echoed back.
                    current = Prompt(system=base.system, history=base.history,
                                     user=base.user + f"\n\nYour previous answer was rejected ({str(exc)[:200]}). "
                                                      "Reply with the JSON object only.")
                    continue
                except LLMError as exc:
                    attempts.append(Attempt(backend.name, False, time.perf_counter() - t0, str(exc)[:300]))
                    break  # a failed or timed-out backend is not retried
                attempts.append(Attempt(backend.name, True, time.perf_counter() - t0))
                return StructuredAnswer(value, backend.name, backend.tier, attempts, time.perf_counter() - start)
        if rules is None:
            raise LLMError("no language model produced a valid answer: "
                           + "; ".join(f"{a.backend}: {a.error}" for a in attempts))
        t0 = time.perf_counter()
        value = rules()
        attempts.append(Attempt("rules", True, time.perf_counter() - t0))
        return StructuredAnswer(value, "rules", "rules", attempts, time.perf_counter() - start)

    def generate_text(self, prompt: Prompt, *, rules: Callable[[], str] | None = None, image: Any = None,
                      max_tokens: int = 512) -> TextAnswer:
        """Free text from the first backend that answers; `rules()` otherwise.

        Raises:
            LLMError: every backend failed and no `rules` function was given.
        """
        start = time.perf_counter()
        attempts: list[Attempt] = []
        for backend in self.backends:
            t0 = time.perf_counter()
            try:
                text = backend.generate(prompt, image=image, max_tokens=max_tokens, timeout_s=self.timeout_s)
            except LLMError as exc:
                attempts.append(Attempt(backend.name, False, time.perf_counter() - t0, str(exc)[:300]))
                continue
            if text and text.strip():
                attempts.append(Attempt(backend.name, True, time.perf_counter() - t0))
                return TextAnswer(text.strip(), backend.name, backend.tier, attempts, time.perf_counter() - start)
            attempts.append(Attempt(backend.name, False, time.perf_counter() - t0, "empty answer"))
        if rules is None:
            raise LLMError("no language model answered")
        attempts.append(Attempt("rules", True, 0.0))
        return TextAnswer(rules(), "rules", "rules", attempts, time.perf_counter() - start)

    def stream_text(self, prompt: Prompt, *, rules: Callable[[], str] | None = None, image: Any = None,
                    max_tokens: int = 512, record: dict | None = None, accept: Acceptance | None = None,
                    checked_max_tokens: int | None = None,
                    gate: Callable[[Iterator[str]], Iterator[str]] | None = None) -> Iterator[str]:
        """Stream from the first backend whose answer can be shown; the record says who answered and why others did not.

        Args:
            rules: the deterministic answer when no backend gives one (tier "rules").
            record: filled with "backend" and "tier" of the answer, "model" (the answering backend, None for
                rules), "attempts" (a `StreamAttempt` per try) and "errors" ("name: ExceptionType").
            accept: for backends flagged `weak`: their whole answer (at most `checked_max_tokens`) is generated
                first and shown only when `accept(text)` finds no problem; otherwise the next tier answers.
            gate: wraps each live stream (e.g. sentence-by-sentence safety edits); called once per backend.

        A live backend that fails or yields nothing before its first chunk is skipped; one that fails mid-stream
        ends the stream with `STOPPED_UNEXPECTEDLY` (chunks already shown cannot be taken back). Answers given
        whole (checked answers, `rules()`) are yielded in small pieces, so they display as a stream too.

        Raises:
            LLMError: no backend answered and no `rules` function was given.
        """
        record = record if record is not None else {}
        attempts = record.setdefault("attempts", [])
        errors = record.setdefault("errors", [])
        for backend in self.backends:
            t0 = time.perf_counter()
            checked = accept is not None and getattr(backend, "weak", False)
            if checked:
                try:
                    text = backend.generate(prompt, image=image, max_tokens=checked_max_tokens or max_tokens,
                                            timeout_s=self.timeout_s)
                except LLMError as exc:
                    errors.append(f"{backend.name}: {type(exc).__name__}")
                    attempts.append(StreamAttempt(backend.name, False, time.perf_counter() - t0, str(exc)[:300],
                                                  outcome="failed", exception=type(exc).__name__))
                    continue
                problems = list(accept(text))
                attempts.append(StreamAttempt(backend.name, not problems, time.perf_counter() - t0,
                                              "; ".join(problems), outcome="rejected" if problems else "answered",
                                              problems=problems))
                if problems:
                    continue
                record.update(backend=backend.name, tier=backend.tier, model=backend)
                yield from text_pieces(text.strip())
                return
            started = False
            try:
                chunks = backend.stream(prompt, image=image, max_tokens=max_tokens)
                for chunk in (gate(chunks) if gate is not None else chunks):
                    if not started:
                        record.update(backend=backend.name, tier=backend.tier, model=backend)
                        started = True
                    yield chunk
            except Exception as exc:  # noqa: BLE001 - any backend failure moves to the next tier
                errors.append(f"{backend.name}: {type(exc).__name__}")
                attempts.append(StreamAttempt(backend.name, False, time.perf_counter() - t0, type(exc).__name__,
                                              outcome="stopped" if started else "failed",
                                              exception=type(exc).__name__))
                if started:
                    yield STOPPED_UNEXPECTEDLY
                    return
                continue
            if started:
                attempts.append(StreamAttempt(backend.name, True, time.perf_counter() - t0))
                return
            attempts.append(StreamAttempt(backend.name, False, time.perf_counter() - t0, "empty answer",
                                          outcome="empty"))
        if rules is None:
            raise LLMError("no language model answered")
        record.update(backend="rules", tier="rules", model=None)
        yield from text_pieces(rules())


def as_language_model(llm: "LanguageModel | LLMBackend | list[LLMBackend] | None") -> "LanguageModel | None":
    """Accept a chain, a single backend or a list of backends (None stays None)."""
    if llm is None or isinstance(llm, LanguageModel):
        return llm
    if isinstance(llm, LLMBackend):
        return LanguageModel([llm])
    if isinstance(llm, (list, tuple)):
        return LanguageModel(list(llm))
    if hasattr(llm, "generate_json"):
        return llm  # duck-typed chain
    return None  # e.g. the rules marker: deterministic tier

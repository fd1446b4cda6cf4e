"""Whisper transcription with two engines: faster-whisper (CTranslate2, default) and openai-whisper.

Both receive the same 16 kHz samples and the same radiology vocabulary prompt, which biases decoding
toward terms such as "pneumothorax" and "costophrenic".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from medsight.voice.audio import Audio, AudioError

# Written as a short report rather than a bare word list: Whisper continues the prompt's style, and a word
# list alone made tiny.en drop the leading "No" of negated findings.
RADIOLOGY_PROMPT = (
    "Chest radiograph report. No pneumothorax. Small pleural effusion. Mild bibasilar atelectasis. "
    "Terms: costophrenic angle, consolidation, cardiomegaly, cardiomediastinal silhouette, interstitial opacity, "
    "nodule, endotracheal tube."
)

ProgressFn = Callable[[float], None]


@dataclass
class Transcript:
    """What a dictation produced; the text stays editable in the UI."""

    text: str
    language: str
    duration: float
    model: str
    engine: str
    seconds: float
    tier: str = "real"
    segments: list[dict] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        return self.seconds / self.duration if self.duration else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class FasterWhisperEngine:
    """Whisper converted for CTranslate2 (several times faster than PyTorch on CPU; int8)."""

    engine = "faster-whisper"

    def __init__(self, model_dir: str, model_name: str, device: str = "cpu", language: str | None = None):
        """`language`: what a multilingual model decodes when a call gives none (None: detect it)."""
        from faster_whisper import WhisperModel

        # CTranslate2 runs on CPU or CUDA; Apple GPUs are not supported by it, so MPS means CPU int8 here.
        ct2_device = "cuda" if device == "cuda" else "cpu"
        compute = "float16" if ct2_device == "cuda" else "int8"
        self.model = WhisperModel(model_dir, device=ct2_device, compute_type=compute)
        self.model_name = model_name
        self.english_only = model_name.endswith(".en")
        self.language = language

    def transcribe(self, audio: Audio, *, language: str | None = None, prompt: str = RADIOLOGY_PROMPT,
                   progress: ProgressFn | None = None) -> Transcript:
        start = time.perf_counter()
        segments_iter, info = self.model.transcribe(
            audio.samples, language="en" if self.english_only else (language or self.language), beam_size=5,
            initial_prompt=prompt, vad_filter=False, condition_on_previous_text=False,
        )
        segments = []
        for seg in segments_iter:  # segments decode lazily: report progress as they arrive
            segments.append({"start": round(seg.start, 2), "end": round(seg.end, 2), "text": seg.text.strip()})
            if progress and audio.duration:
                progress(min(1.0, seg.end / audio.duration))
        return Transcript(
            text=" ".join(s["text"] for s in segments).strip(), language=info.language, duration=audio.duration,
            model=self.model_name, engine=self.engine, seconds=round(time.perf_counter() - start, 3), segments=segments,
        )


class OpenAIWhisperEngine:
    """The reference PyTorch implementation, for official `.pt` checkpoints."""

    engine = "openai-whisper"

    def __init__(self, checkpoint: str, model_name: str, device: str = "cpu"):
        import whisper

        # MPS lacks some ops whisper uses; CPU is the safe choice there.
        self.device = "cuda" if device == "cuda" else "cpu"
        self.model = whisper.load_model(checkpoint, device=self.device)
        self.model_name = model_name
        self.english_only = model_name.endswith(".en")

    def transcribe(self, audio: Audio, *, language: str | None = None, prompt: str = RADIOLOGY_PROMPT,
                   progress: ProgressFn | None = None) -> Transcript:
        start = time.perf_counter()
        out = self.model.transcribe(
            audio.samples, language="en" if self.english_only else language, initial_prompt=prompt,
            fp16=self.device == "cuda", condition_on_previous_text=False, verbose=None,
        )
        if progress:
            progress(1.0)
        segments = [{"start": round(s["start"], 2), "end": round(s["end"], 2), "text": s["text"].strip()}
                    for s in out.get("segments", [])]
        return Transcript(
            text=out.get("text", "").strip(), language=out.get("language", language or "en"), duration=audio.duration,
            model=self.model_name, engine=self.engine, seconds=round(time.perf_counter() - start, 3), segments=segments,
        )


def transcribe(engine, audio: Audio, **kwargs) -> Transcript:
    """Transcribe decoded audio; silent recordings are refused rather than guessed at.

    Raises:
        AudioError: when the recording holds no speech.
    """
    if audio.is_silent:
        raise AudioError("No speech was detected in the recording (it is silent or too quiet).")
    transcript = engine.transcribe(audio, **kwargs)
    if not transcript.text.strip():
        raise AudioError("No words were recognised in the recording.")
    return transcript


def word_error_rate(reference: "Sequence[str] | str", hypothesis: "Sequence[str] | str") -> float:
    """Word error rate with the usual normalisation (lower case, punctuation stripped) via jiwer."""
    import jiwer

    normalise = jiwer.Compose([
        jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ])
    reference = reference if isinstance(reference, str) else list(reference)
    hypothesis = hypothesis if isinstance(hypothesis, str) else list(hypothesis)
    return float(jiwer.wer(reference, hypothesis, reference_transform=normalise, hypothesis_transform=normalise))


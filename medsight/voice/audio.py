"""Audio decoding for dictation: any common container → 16 kHz mono float32, with clear errors.

Decoding goes through PyAV (FFmpeg libraries inside its wheel, via faster-whisper's `decode_audio`), so no
system `ffmpeg` binary is needed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
MAX_SECONDS = 10 * 60  # a dictation longer than this is almost certainly the wrong file
MAX_BYTES = 100 * 2**20
# Below these levels a recording holds no usable speech (digital silence or room noise only).
SILENCE_RMS = 2e-3
SILENCE_PEAK = 1e-2
ACCEPTED_FORMATS = ("wav", "mp3", "m4a", "ogg", "webm", "flac", "mp4")


class AudioError(ValueError):
    """A user-facing problem with an audio file."""


@dataclass
class Audio:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    duration: float
    rms: float
    peak: float

    @property
    def is_silent(self) -> bool:
        return self.rms < SILENCE_RMS or self.peak < SILENCE_PEAK


def decode(source: bytes | str | Path, *, max_seconds: float = MAX_SECONDS, max_bytes: int = MAX_BYTES) -> Audio:
    """Decode an audio file or bytes to 16 kHz mono.

    Raises:
        AudioError: empty, too large, undecodable, too long, or silent input.
    """
    from faster_whisper.audio import decode_audio

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"Audio file not found: {path.name}")
        size = path.stat().st_size
        handle: io.BytesIO | str = str(path)
    else:
        size = len(source)
        handle = io.BytesIO(source)
    if size == 0:
        raise AudioError("The audio file is empty.")
    if size > max_bytes:
        raise AudioError(f"The audio file is {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    try:
        samples = decode_audio(handle, sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV raises many types for corrupt or non-audio input
        raise AudioError(
            "The file could not be decoded as audio (accepted: " + ", ".join(ACCEPTED_FORMATS).upper()
            + f"). Details: {type(exc).__name__}."
        ) from None
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise AudioError("The recording contains no audio samples.")
    duration = samples.size / SAMPLE_RATE
    if duration > max_seconds:
        raise AudioError(
            f"The recording is {duration / 60:.1f} minutes long; the limit is {max_seconds / 60:.0f} minutes. "
            "Split it into shorter dictations."
        )
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return Audio(samples=samples, duration=duration, rms=rms, peak=float(np.abs(samples).max()))

"""Word error rate and real-time factor of the offline Whisper engines on held-out radiology dictation.

The sentences below were never used to choose the vocabulary prompt (`RADIOLOGY_PROMPT` was tuned on
tests/data/audio sentences 1-6); sentences 7-10 of that set are included. Each sentence is synthesised by
two different espeak-ng voices from Debian (`apt-get install espeak-ng sox`): en-us at 150 wpm (the voice the
test fixtures were made with) and British Received Pronunciation with the female variant f3 at 165 wpm (a
second accent, pitch and speed). Audio is resampled to 16 kHz mono with sox, decoded
by the product's own `decode` and transcribed through the product's engines, with the radiology prompt (the
product's setting) and without it.

Example:
    python -m training.evaluate_voice --out benchmarks/results/voice_wer.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELD_OUT = [
    "There is a right lower lobe consolidation.",
    "The endotracheal tube terminates above the carina.",
    "Interstitial opacities are noted in both lower zones.",
    "A rounded nodule is present in the right upper lobe.",
    "The cardiomediastinal silhouette is enlarged.",
    "No pleural effusion or pneumothorax.",
    "Small left apical pneumothorax.",
    "Moderate cardiomegaly with pulmonary vascular congestion.",
    "The nasogastric tube tip is in the stomach.",
    "Right internal jugular central venous catheter with tip in the superior vena cava.",
    "Mild pulmonary edema.",
    "Hyperinflated lungs consistent with emphysema.",
    "Calcified granuloma in the left upper lobe.",
    "Healed fracture of the right sixth rib.",
    "Elevation of the right hemidiaphragm.",
    "Bilateral pleural effusions, larger on the left.",
    "Subsegmental atelectasis at the left lung base.",
    "No acute cardiopulmonary process.",
    "Interval improvement of the right middle lobe opacity.",
    "Degenerative changes of the thoracic spine.",
]
PROMPTS = {"radiology prompt": None, "no prompt": ""}  # None: the engine's default, RADIOLOGY_PROMPT
VOICES = {
    "espeak-ng en-us": ["-v", "en-us", "-s", "150"],
    "espeak-ng en-gb-x-rp+f3": ["-v", "en-gb-x-rp+f3", "-s", "165"],
}


def _prompt(value):
    from medsight.voice import RADIOLOGY_PROMPT

    return RADIOLOGY_PROMPT if value is None else (value or None)


def synthesise(sentence: str, voice_args: list[str], path: Path) -> Path:
    """A 16 kHz mono 16-bit WAV of the sentence (espeak-ng, then sox)."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", *voice_args, "-w", str(raw), sentence], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path)], check=True,
                   capture_output=True)
    raw.unlink()
    return path


def engines() -> dict:
    """The offline engines that install from PyPI (name → loaded engine)."""
    from medsight.voice import packaged_engine_dirs
    from medsight.voice.transcribe import FasterWhisperEngine

    return {name: FasterWhisperEngine(str(folder), name, "cpu") for name, folder in packaged_engine_dirs().items()}


def evaluate(threads: int | None = None) -> dict:
    from medsight.voice import decode, transcribe, word_error_rate

    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} is not installed (apt-get install espeak-ng sox)")
    loaded = engines()
    figures: dict = {"engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        audio = {}
        for voice, args in VOICES.items():
            audio[voice] = [synthesise(s, args, Path(tmp) / f"{abs(hash((voice, i)))}.wav") for i, s in enumerate(HELD_OUT)]
        runs = [(name, engine, label, prompt) for name, engine in loaded.items() for label, prompt in PROMPTS.items()]
        for name, engine, label, prompt in runs:
            per_voice = {}
            for voice, paths in audio.items():
                hyps, seconds, duration = [], 0.0, 0.0
                for path in paths:
                    result = transcribe(engine, decode(path), language="en", prompt=_prompt(prompt))
                    hyps.append(result.text)
                    seconds += result.seconds
                    duration += result.duration
                per_voice[voice] = {"wer": round(word_error_rate(HELD_OUT, hyps), 4),
                                    "rtf": round(seconds / duration, 3), "audio_seconds": round(duration, 1),
                                    "transcripts": hyps}
            all_wer = word_error_rate(HELD_OUT * len(audio), [h for v in per_voice.values() for h in v["transcripts"]])
            figures["engines"][f"{name}, {label}"] = {"voices": per_voice, "wer_both_voices": round(all_wer, 4),
                                        "rtf_mean": round(sum(v["rtf"] for v in per_voice.values()) / len(per_voice), 3)}
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    figures.update({
        "what": "word error rate (jiwer, lower case, punctuation stripped) and real-time factor on held-out "
                "radiology sentences, two synthetic voices, faster-whisper on CPU, with and without the radiology prompt",
        "sentences": HELD_OUT, "voices": {k: " ".join(v) for k, v in VOICES.items()}, "synthesiser": espeak,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # real-time factors depend on it
    })
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate_voice", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        figures = evaluate()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    figures["seconds"] = round(time.perf_counter() - start, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    for name, f in figures["engines"].items():
        print(name, {v: (d["wer"], d["rtf"]) for v, d in f["voices"].items()}, "both:", f["wer_both_voices"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

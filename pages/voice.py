"""Voice Entry: dictate a report with local speech recognition (not built yet)."""

from __future__ import annotations

from pages import _shared as ui

ui.placeholder(
    "Voice Entry",
    "Dictate findings; speech is transcribed on this computer.",
    [
        "Record or upload audio and transcribe it with a local Whisper model",
        "Edit the transcript and send it to Report Verification",
    ],
)

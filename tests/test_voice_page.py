"""Voice Entry page in the running app shell."""


def test_voice_page_renders_and_sends_transcript(logged_in_app):
    at = logged_in_app()
    at.switch_page("views/voice.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.label for s in at.selectbox] == ["Whisper model"]
    assert at.selectbox[0].value == "tiny.en"
    # A finished transcription, as the Transcribe button leaves it.
    at.session_state["voice_transcript"] = {
        "text": "No pneumothorax.", "language": "en", "duration": 2.0, "model": "tiny.en",
        "engine": "faster-whisper", "seconds": 0.5, "segments": [],
        "provenance": {"tier": "real", "title": "Speech to text — Whisper tiny.en", "source_label": "PyPI"},
    }
    at.session_state["voice_text"] = "No pneumothorax."
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_area(key="voice_text").value == "No pneumothorax."
    at.session_state["symptoms"] = "Cough."
    next(b for b in at.button if b.label == "Send").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["symptoms"] == "Cough.\nNo pneumothorax."

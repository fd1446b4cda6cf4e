"""Voice Entry: dictate clinical context or a report; speech is transcribed on this computer."""

from __future__ import annotations

import time

import streamlit as st

from medsight import registry
from medsight.voice import ACCEPTED_FORMATS, DEFAULT_SIZE, SIZES, AudioError, apply_voice_commands, decode, slot_name, transcribe
from views import _shared as ui

@ui.safe_page
def main() -> None:
    ui.page_header(
        "Voice Entry",
        "Dictate symptoms or a report. Audio is decoded and transcribed locally with Whisper; nothing is uploaded.",
    )

    left, right = st.columns([3, 2], gap="large")
    with right:
        size = st.selectbox("Whisper model", SIZES, index=SIZES.index(DEFAULT_SIZE),
                            help="tiny.en is installed with the workstation; larger models need their weights.")
        use_commands = st.toggle("Apply spoken commands", value=True,
                                 help='"new paragraph impression" → a new IMPRESSION section; "new line" → line break.')
        st.caption(f"Accepted files: {', '.join(ACCEPTED_FORMATS).upper()} · up to 10 minutes.")

    with left:
        recorded = st.audio_input("Record from the microphone", key="voice_recording")
        uploaded = st.file_uploader("…or upload a recording", type=list(ACCEPTED_FORMATS), key="voice_upload")

    source = uploaded or recorded
    if source is not None and st.button("Transcribe", type="primary", icon=":material/mic:"):
        clicked = time.perf_counter()  # the label reports what the reader waited for, model loading included
        try:
            loaded = ui.get_model(slot_name(size))
        except registry.ModelUnavailable as exc:
            st.error("This Whisper model is not installed, so no transcript can be made.", icon=":material/mic_off:")
            st.code(str(exc), language=None)
            return
        with st.status("Transcribing…", expanded=True) as status:
            try:
                status.write("Decoding audio (16 kHz mono)…")
                audio = decode(source.getvalue())
                status.write(f"{audio.duration:.1f} s of audio; recognising speech…")
                bar = st.progress(0.0)
                transcript = transcribe(loaded.model, audio, progress=lambda f: bar.progress(f, text=f"{f:.0%}"))
            except AudioError as exc:
                status.update(label="Could not transcribe", state="error")
                st.error(str(exc), icon=":material/graphic_eq:")
                return
            status.update(label=f"Transcribed: {time.perf_counter() - clicked:.1f} s from the click (recognition "
                                f"{transcript.seconds:.1f} s)", state="complete", expanded=False)
        text = apply_voice_commands(transcript.text) if use_commands else transcript.text
        st.session_state["voice_transcript"] = transcript.to_dict() | {"provenance": loaded.provenance.to_dict()}
        st.session_state["voice_text"] = text
        ui.audit("voice_transcribed", {"seconds": transcript.seconds, "duration": round(transcript.duration, 1),
                                       "model": transcript.model})

    result = st.session_state.get("voice_transcript")
    if result:
        st.divider()
        ui.tier_badge(result["provenance"], details=True)
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Duration", f"{result['duration']:.1f} s")
        c2.metric("Language", result["language"])
        c3.metric("Model", result["model"], help=f"Engine: {result['engine']}")
        c4.metric("Time taken", f"{result['seconds']:.1f} s", help="Real-time factor "
                  f"{result['seconds'] / max(result['duration'], 1e-6):.2f}")
        st.text_area("Transcript (edit before sending)", key="voice_text", height=180)
        st.caption("Speech recognition makes mistakes, especially with negations and rare terms: read it before use.")
        target = st.radio("Send to", ["Symptoms box on Analyze", "Report editor on Report Verification"], horizontal=True)
        mode = st.radio("How", ["Append", "Replace"], horizontal=True, label_visibility="collapsed")
        if st.button("Send", icon=":material/send:"):
            key, page = ("symptoms", "analyze") if target.startswith("Symptoms") else ("report_text", "verify")
            text = st.session_state.get("voice_text", "").strip()
            previous = (st.session_state.get(key) or "").strip()
            st.session_state[key] = f"{previous}\n{text}".strip() if mode == "Append" and previous else text
            st.switch_page(ui.PAGES[page])


main()

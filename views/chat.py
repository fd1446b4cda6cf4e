"""Chat: questions about the current study, its results and the literature, answered with citations."""

from __future__ import annotations

import time

import streamlit as st

from medsight import registry
from medsight.chat import (ChatEngine, CorpusError, KnowledgeBase, build_default_corpus, check_question,
                           default_corpus_complete, user_message)
from medsight.config import Settings
from medsight.llm import LanguageModel, RulesEngine, gemini_backend
from views import _shared as ui

CHAT_CLOUD_NOTICE = ("When on, each question is sent to Google Gemini together with the conversation so far, this "
                     "study's results (scores, flagged findings, risk level, verification discrepancies), the report "
                     "text under review after removal of dates, IDs and titled names, and the retrieved passages. "
                     "No image and no DICOM header is sent.")
LOCAL_HELP = ("Tries the local language model before the template engine. The offline SmolLM2-135M model is small: "
              "its answer is shown only if it passes the checks (citations of the retrieved passages, no dosing, no "
              "diagnosis wording, on topic); otherwise the template engine answers and the reply says so. Loading "
              "it takes a few seconds and each answer several more on a CPU.")


@st.cache_resource(show_spinner=False, max_entries=8)
def _knowledge(chroma_dir: str) -> KnowledgeBase:
    """The knowledge corpus of this data directory; its text embedder loads on the first search or build."""
    return KnowledgeBase(settings=ui.settings())


def _context_line(analysis: dict | None, study) -> str:
    if analysis:
        parts = [f"study `{(analysis.get('study') or {}).get('study_id') or getattr(study, 'study_id', '?')}`"]
        anomaly = analysis.get("anomaly") or {}
        if "fused_score" in anomaly:
            parts.append(f"anomaly score {float(anomaly['fused_score']):.3f} "
                         f"({'above' if anomaly.get('is_anomalous') else 'below'} threshold)")
        positives = (analysis.get("pathology") or {}).get("positives") or []
        parts.append("flagged: " + (", ".join(positives) if positives else "none"))
        risk = ((analysis.get("fusion") or {}).get("risk") or {})
        if isinstance(risk, dict) and risk.get("level"):
            parts.append(f"risk {risk['level']}")
        if st.session_state.get("verification"):
            parts.append("report verification")
        return ":material/radiology: In context: " + " · ".join(parts)
    if study is not None:
        return (f":material/radiology: Study `{study.study_id}` is open but not analysed: answers are general. "
                "Run Analyze for study-specific answers.")
    return ":material/radiology: No study in context: answers are general. Open and analyse a study on Analyze."


def _show_reply_meta(message: dict) -> None:
    ui.tier_badge(message.get("tier", "rules"))
    st.caption(f"Answered by: {message.get('answered_by', '')}"
               + (f" · {message['seconds']:.1f} s" if message.get("seconds") else ""))
    for note in message.get("notes") or []:
        st.caption(f":material/info: {note}")


def _show_citations(message: dict) -> None:
    citations = message.get("citations") or []
    if not citations:
        return
    cited = [c for c in citations if c.get("cited")]
    with st.expander(f"Sources: {len(cited)} cited of {len(citations)} retrieved"):
        for c in citations:
            mark = "" if c.get("cited") else " *(retrieved, not cited)*"
            link = f" — [PubMed](https://pubmed.ncbi.nlm.nih.gov/{c['pmid']}/)" if c.get("pmid") else ""
            st.markdown(f"**[{c['number']}]** {c['label']}{link}{mark}")
            st.caption(f"similarity {c.get('score', 0):.2f}")
            st.caption(c.get("snippet", ""))


def _local_backend(enabled: bool):
    if not enabled:
        return None
    try:
        loaded = ui.get_model("llm.text")
    except registry.ModelUnavailable:
        return None
    return None if isinstance(loaded.model, RulesEngine) else loaded.model


def _save_thread(messages: list[dict], analysis: dict | None) -> None:
    user = ui.current_user()
    if not user:
        return
    study = ui.current_study()
    study_id = (analysis or {}).get("study", {}).get("study_id") if analysis else getattr(study, "study_id", None)
    payload = {"messages": messages, "study_id": study_id,
               "analysis_id": (analysis or {}).get("analysis_id")}
    record_id = st.session_state.get("chat_record_id")
    try:
        if record_id is None:
            title = next((m["text"] for m in messages if m["role"] == "user"), "Chat")[:80]
            st.session_state["chat_record_id"] = ui.history().save_record(user, "chat", study_id, title, payload)
        else:
            ui.history().update_record(user, record_id, payload=payload)
    except Exception as exc:
        ui.report_error(exc, "The answer is shown but the thread could not be saved to History")


def _ensure_corpus(kb: KnowledgeBase) -> bool:
    """Build the default corpus on first use, with progress. Returns False when it could not be built."""
    if kb.count() > 0:
        return True
    from medsight import reference

    if reference.status(ui.settings()).running:  # the first-start build is on its way: wait for it, visibly
        with st.status("Preparing the reference data (first start)…", expanded=True) as status:
            bar = st.progress(0.0)
            while (state := reference.status(ui.settings())).running and kb.count() == 0:
                bar.progress(min(state.done / state.total, 1.0) if state.total else 0.0, text=state.message)
                time.sleep(0.5)
            status.update(label=f"Knowledge corpus ready: {kb.count():,} passages", state="complete", expanded=False)
        if kb.count() > 0:
            return True
    with st.status("Building the knowledge corpus (first use; a few minutes)…", expanded=True) as status:
        bar = st.progress(0.0, text="Reference notes")

        def progress(done: int, total: int, message: str) -> None:
            bar.progress(min(done / total, 1.0) if total else 0.0, text=message)

        try:
            stats = build_default_corpus(kb, progress=progress)
        except (CorpusError, registry.ModelUnavailable) as exc:
            status.update(label="The knowledge corpus could not be built", state="error")
            st.error(str(exc), icon=":material/library_books:")
            return False
        status.update(label=f"Knowledge corpus ready: {kb.count():,} passages ({stats.seconds:.0f} s)",
                      state="complete", expanded=False)
    ui.audit("knowledge_corpus_built", {"passages": kb.count()})
    return True


# ------------------------------------------------------------------------------------------------- page
ui.require_login()
ui.page_header("Chat", "Ask about the current study, its results and the literature. Answers cite their sources.")

reopened = st.session_state.pop("chat_thread", None)
if isinstance(reopened, dict):
    st.session_state["chat_messages"] = list(reopened.get("messages") or [])
    st.session_state["chat_record_id"] = reopened.get("record_id")
messages: list[dict] = st.session_state.setdefault("chat_messages", [])

analysis = st.session_state.get("analysis")
analysis = analysis if isinstance(analysis, dict) else None
study = ui.current_study()

top_left, top_right = st.columns([4, 1], vertical_alignment="center")
top_left.caption(_context_line(analysis, study))
if top_right.button("New thread", icon=":material/add_comment:", width="stretch"):
    st.session_state["chat_messages"] = []
    st.session_state["chat_record_id"] = None
    st.rerun()

has_key = Settings.api_key("GEMINI_API_KEY") is not None
with st.expander("Answer sources and privacy", expanded=False):
    use_cloud = st.toggle("Use cloud model (Google Gemini)", value=False, disabled=not has_key, key="chat_cloud",
                          help=CHAT_CLOUD_NOTICE)
    st.caption(CHAT_CLOUD_NOTICE if has_key else
               "Cloud model unavailable: GEMINI_API_KEY is not set, so nothing leaves this computer.")
    use_local = st.toggle("Try the local language model first", value=False, key="chat_local", help=LOCAL_HELP)
    st.caption("Default: the deterministic template engine answers from the study results and the retrieved "
               "passages. Every reply shows which tier answered.")

kb: KnowledgeBase | None
try:
    kb = _knowledge(str(ui.settings().chroma_dir))
    corpus_size = kb.count()
except CorpusError as exc:
    kb, corpus_size = None, 0
    st.warning("The knowledge corpus is unavailable, so answers cannot cite sources.", icon=":material/library_books:")
    st.code(str(exc), language=None)

if kb is not None and corpus_size:
    complete_key = ("chat_corpus_complete", corpus_size)
    if st.session_state.get("chat_corpus_checked") != complete_key:
        st.session_state["chat_corpus_checked"] = complete_key
        st.session_state["chat_corpus_is_complete"] = default_corpus_complete(kb)
    if not st.session_state.get("chat_corpus_is_complete"):
        st.caption(f":material/library_books: Knowledge corpus: {corpus_size:,} passages; the default MEDLINE "
                   "abstracts are not all indexed yet.")
        if st.button("Complete the knowledge corpus", icon=":material/library_add:"):
            with st.status("Adding MEDLINE abstracts…", expanded=True) as status:
                bar = st.progress(0.0)
                try:
                    stats = build_default_corpus(
                        kb, progress=lambda d, t, m: bar.progress(min(d / t, 1.0) if t else 0.0, text=m))
                except (CorpusError, registry.ModelUnavailable) as exc:
                    status.update(label="The knowledge corpus could not be completed", state="error")
                    st.error(str(exc), icon=":material/library_books:")
                else:
                    status.update(label=f"Added {stats.added:,} passages", state="complete", expanded=False)
            st.session_state.pop("chat_corpus_checked", None)
    else:
        st.caption(f":material/library_books: Knowledge corpus: {corpus_size:,} passages (MEDLINE abstracts and "
                   "reference notes).")

for message in messages:
    with st.chat_message(message["role"]):
        if message["role"] == "assistant":
            _show_reply_meta(message)
        st.markdown(message["text"])
        if message["role"] == "assistant":
            _show_citations(message)

question = st.chat_input("Ask about this study, a finding or a term…", max_chars=2000)
if question and question.strip():
    question = question.strip()
    asked = user_message(question)
    with st.chat_message("user"):
        st.markdown(question)
    # A refused question needs no corpus; anything else builds the default corpus on first use.
    if kb is not None and check_question(question).ok and not _ensure_corpus(kb):
        kb = None
    backends = []
    cloud = gemini_backend(ui.settings(), consent=bool(use_cloud and has_key))
    if cloud is not None:
        backends.append(cloud)
    local = _local_backend(bool(use_local))
    if use_local and local is None:
        st.caption(":material/info: No local language model is installed; the template engine answers.")
    if local is not None:
        backends.append(local)
    engine = ChatEngine(kb, LanguageModel(backends))
    with st.chat_message("assistant"):
        meta = st.container()
        turn = engine.respond(question, analysis=analysis, verification=st.session_state.get("verification"),
                              report_text=st.session_state.get("report_text") or "", history=messages)
        with st.spinner("Answering…"):
            st.write_stream(turn.stream())
        reply = turn.reply.to_message()
        with meta:
            _show_reply_meta(reply)
        _show_citations(reply)
    messages += [asked, reply]
    st.session_state["chat_messages"] = messages
    _save_thread(messages, analysis)
    ui.audit("chat_answer", {"intent": reply["intent"], "level": reply["level"], "refused": reply["refused"],
                             "citations": len(reply["citations"])})

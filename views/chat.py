"""Chat: questions about the current study, its results and the literature, answered with citations."""

from __future__ import annotations

import time

import streamlit as st

from medsight import reference, registry
from medsight.chat import (ChatEngine, CorpusError, KnowledgeBase, build_default_corpus, check_question,
                           default_corpus_complete, user_message)
from medsight.chat.thread import context_line, save_thread
from medsight.config import Settings
from medsight.llm import get_language_model
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


def _build_corpus(kb: KnowledgeBase, label: str, failed: str, done: str, first_step: str | None = None) -> bool:
    """Add the default corpus with a progress bar; `done` is formatted with `passages`, `added` and `seconds`."""
    with st.status(label, expanded=True) as status:
        bar = st.progress(0.0, text=first_step)
        try:
            stats = build_default_corpus(
                kb, progress=lambda d, t, m: bar.progress(min(d / t, 1.0) if t else 0.0, text=m))
        except (CorpusError, registry.ModelUnavailable) as exc:
            status.update(label=failed, state="error")
            st.error(str(exc), icon=":material/library_books:")
            return False
        status.update(label=done.format(passages=kb.count(), added=stats.added, seconds=stats.seconds),
                      state="complete", expanded=False)
    return True


def _ensure_corpus(kb: KnowledgeBase) -> bool:
    """Build the default corpus on first use, with progress. Returns False when it could not be built."""
    if kb.count() == 0 and reference.status(ui.settings()).running:  # the first-start build: wait, visibly
        with st.status("Preparing the reference data (first start)…", expanded=True) as status:
            bar = st.progress(0.0)
            while (state := reference.status(ui.settings())).running and kb.count() == 0:
                bar.progress(min(state.done / state.total, 1.0) if state.total else 0.0, text=state.message)
                time.sleep(0.5)
            status.update(label=f"Knowledge corpus ready: {kb.count():,} passages", state="complete", expanded=False)
    if kb.count() > 0:
        return True
    if not _build_corpus(kb, "Building the knowledge corpus (first use; a few minutes)…",
                         "The knowledge corpus could not be built",
                         "Knowledge corpus ready: {passages:,} passages ({seconds:.0f} s)", "Reference notes"):
        return False
    ui.audit("knowledge_corpus_built", {"passages": kb.count()})
    return True


def _answer_sources() -> tuple[bool, bool]:
    """The cloud and local-model switches; returns (cloud allowed, local model wanted)."""
    has_key = Settings.api_key("GEMINI_API_KEY") is not None
    with st.expander("Answer sources and privacy", expanded=False):
        use_cloud = st.toggle("Use cloud model (Google Gemini)", value=False, disabled=not has_key, key="chat_cloud",
                              help=CHAT_CLOUD_NOTICE)
        st.caption(CHAT_CLOUD_NOTICE if has_key else
                   "Cloud model unavailable: GEMINI_API_KEY is not set, so nothing leaves this computer.")
        use_local = st.toggle("Try the local language model first", value=False, key="chat_local", help=LOCAL_HELP)
        st.caption("Default: the deterministic template engine answers from the study results and the retrieved "
                   "passages. Every reply shows which tier answered.")
    return bool(use_cloud and has_key), bool(use_local)


def _corpus_block() -> KnowledgeBase | None:
    """Open the knowledge corpus and say how complete it is (None: unavailable)."""
    try:
        kb = _knowledge(str(ui.settings().chroma_dir))
        corpus_size = kb.count()
    except CorpusError as exc:
        st.warning("The knowledge corpus is unavailable, so answers cannot cite sources.",
                   icon=":material/library_books:")
        st.code(str(exc), language=None)
        return None
    if not corpus_size:
        return kb
    if st.session_state.get("chat_corpus_checked") != ("chat_corpus_complete", corpus_size):
        st.session_state["chat_corpus_checked"] = ("chat_corpus_complete", corpus_size)
        st.session_state["chat_corpus_is_complete"] = default_corpus_complete(kb)
    if st.session_state.get("chat_corpus_is_complete"):
        st.caption(f":material/library_books: Knowledge corpus: {corpus_size:,} passages (MEDLINE abstracts and "
                   "reference notes).")
        return kb
    st.caption(f":material/library_books: Knowledge corpus: {corpus_size:,} passages; the default MEDLINE "
               "abstracts are not all indexed yet.")
    if st.button("Complete the knowledge corpus", icon=":material/library_add:"):
        _build_corpus(kb, "Adding MEDLINE abstracts…", "The knowledge corpus could not be completed",
                      "Added {added:,} passages")
        st.session_state.pop("chat_corpus_checked", None)
    return kb


def _ask(question: str, kb: KnowledgeBase | None, cloud: bool, local: bool, analysis: dict | None,
         messages: list[dict]) -> None:
    """Answer one question in the thread, streamed, and save the thread."""
    asked = user_message(question)
    st.chat_message("user").markdown(question)
    # A refused question needs no corpus; anything else builds the default corpus on first use.
    if kb is not None and check_question(question).ok and not _ensure_corpus(kb):
        kb = None
    if local:
        ui.refresh_if_weights_changed()
    with st.spinner("Loading model llm.text…"):
        llm = get_language_model(ui.settings(), consent=cloud, use_local=local)
    if local and all(not b.local for b in llm.backends):
        st.caption(":material/info: No local language model is installed; the template engine answers.")
    with st.chat_message("assistant"):
        meta = st.container()
        turn = ChatEngine(kb, llm).respond(question, analysis=analysis, history=messages,
                                           verification=st.session_state.get("verification"),
                                           report_text=st.session_state.get("report_text") or "")
        with st.spinner("Answering…"):
            st.write_stream(turn.stream())
        reply = turn.reply.to_message()
        with meta:
            _show_reply_meta(reply)
        _show_citations(reply)
    messages += [asked, reply]
    st.session_state["chat_messages"] = messages
    if user := ui.current_user():
        try:
            st.session_state["chat_record_id"] = save_thread(
                ui.history(), user, messages, analysis, getattr(ui.current_study(), "study_id", None),
                st.session_state.get("chat_record_id"))
        except Exception as exc:
            ui.report_error(exc, "The answer is shown but the thread could not be saved to History")
    ui.audit("chat_answer", {"intent": reply["intent"], "level": reply["level"], "refused": reply["refused"],
                             "citations": len(reply["citations"])})


@ui.safe_page
def main() -> None:
    ui.page_header("Chat", "Ask about the current study, its results and the literature. Answers cite their sources.")
    reopened = st.session_state.pop("chat_thread", None)
    if isinstance(reopened, dict):
        st.session_state["chat_messages"] = list(reopened.get("messages") or [])
        st.session_state["chat_record_id"] = reopened.get("record_id")
    messages: list[dict] = st.session_state.setdefault("chat_messages", [])
    analysis = st.session_state.get("analysis") if isinstance(st.session_state.get("analysis"), dict) else None
    top_left, top_right = st.columns([4, 1], vertical_alignment="center")
    top_left.caption(context_line(analysis, getattr(ui.current_study(), "study_id", None),
                                  bool(st.session_state.get("verification"))))
    if top_right.button("New thread", icon=":material/add_comment:", width="stretch"):
        st.session_state["chat_messages"] = []
        st.session_state["chat_record_id"] = None
        st.rerun()
    cloud, local = _answer_sources()
    kb = _corpus_block()
    for message in messages:
        with st.chat_message(message["role"]):
            if message["role"] == "assistant":
                _show_reply_meta(message)
            st.markdown(message["text"])
            if message["role"] == "assistant":
                _show_citations(message)
    question = st.chat_input("Ask about this study, a finding or a term…", max_chars=2000)
    if question and question.strip():
        _ask(question.strip(), kb, cloud, local, analysis, messages)


main()

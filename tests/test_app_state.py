"""Study-bound state: a patient's context, report, verification, chat and dictation never carry over to another."""

from __future__ import annotations

from medsight.app_state import STUDY_BOUND_KEYS, context_from_analysis, switch_study


def test_switching_parks_and_restores_each_studys_own_values():
    state: dict = {}
    assert switch_study(state, "A")
    state.update(symptoms="fever, productive cough for 4 days", report_text="FINDINGS: ...", chat_messages=[1])
    assert switch_study(state, "B")
    assert not any(key in state for key in STUDY_BOUND_KEYS), "nothing of study A is visible on study B"
    state["symptoms"] = "trauma, left rib pain"
    assert switch_study(state, "A")
    assert state["symptoms"] == "fever, productive cough for 4 days" and state["chat_messages"] == [1]
    assert not switch_study(state, "A"), "the same study again changes nothing"
    switch_study(state, "B")
    assert state["symptoms"] == "trauma, left rib pain"


def test_a_study_new_to_the_session_gets_its_saved_context_or_nothing():
    saved = {"C": {"symptoms": "known COPD", "study_id": "C", "status": "COMPLETE"}}
    state = {"symptoms": "someone else's symptoms"}
    switch_study(state, "C", lambda sid: context_from_analysis(saved.get(sid)))
    assert state["symptoms"] == "known COPD" and state["analysis"]["study_id"] == "C"
    switch_study(state, "D", lambda sid: context_from_analysis(saved.get(sid)))
    assert "symptoms" not in state and "analysis" not in state


def _open_sample(at, title: str) -> None:
    at.radio(key="analyze_source").set_value("Sample study").run()
    at.selectbox(key="analyze_sample").set_value(title).run()
    assert not at.exception, [e.value for e in at.exception]


def test_analyze_page_never_carries_symptoms_to_another_patient(logged_in_app):
    at = logged_in_app(timeout=240)
    at.switch_page("views/analyze.py").run()
    at.radio(key="analyze_source").set_value("Sample study").run()
    titles = at.selectbox(key="analyze_sample").options
    first, second = titles[0], titles[1]
    _open_sample(at, first)
    at.text_area(key="symptoms_box").input("fever, productive cough for 4 days").run()
    next(b for b in at.button if b.label == "Analyze").click()
    at.run(timeout=240)
    assert at.session_state["analysis"]["symptoms"].startswith("fever")

    _open_sample(at, second)
    assert at.text_area(key="symptoms_box").value == "", "another patient's symptoms must not carry over"
    assert "analysis" not in at.session_state

    _open_sample(at, first)
    assert at.text_area(key="symptoms_box").value == "fever, productive cough for 4 days"
    assert at.session_state["analysis"]["symptoms"].startswith("fever")

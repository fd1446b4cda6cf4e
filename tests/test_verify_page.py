"""Report Verification page in the app shell: verify a phantom report, accept an edit, save to History."""

from __future__ import annotations

import re

import pytest

from medsight.ingest import load_study
from medsight.synthetic import generate_phantom, write_png

LABELS = ("consolidation", "nodule", "effusion", "pneumothorax", "cardiomegaly")


@pytest.fixture
def phantom_case(tmp_path):
    seed = next(s for s in range(50) if generate_phantom(s, size=64, findings=("effusion",)).laterality["effusion"]
                in ("left", "right"))
    phantom = generate_phantom(seed, size=256, findings=("effusion",))
    path = tmp_path / "effusion.png"
    write_png(phantom, path)
    study = load_study(path)
    side = phantom.laterality["effusion"]
    analysis = {
        "study_id": study.study_id,
        "pathology": {"labels": list(LABELS), "probabilities": {l: (0.9 if l == "effusion" else 0.05) for l in LABELS},
                      "thresholds": {l: 0.5 for l in LABELS}, "positives": ["effusion"], "tier": "demo",
                      "laterality": {"effusion": side}},
        "anomaly": {"fused_score": 0.8, "threshold": 0.5, "is_anomalous": True, "tier": "demo"},
    }
    other = "left" if side == "right" else "right"
    wrong = re.sub(rf"\b{side}\b", other, phantom.report)
    return study, analysis, wrong, side


def _button(at, label):
    return next(b for b in at.button if b.label == label)


@pytest.mark.slow  # ~20 s on an idle 2-core machine, about a minute under load (NLP + embedder loading)
def test_verify_page_end_to_end(logged_in_app, phantom_case):
    study, analysis, wrong_report, side = phantom_case
    from medsight.config import get_settings
    from medsight.retrieval import CaseBase, build

    settings = get_settings().ensure_dirs()
    build.add_phantoms(CaseBase(settings=settings), 6, size=128, image_dir=settings.home / "casebase" / "images",
                       quiet=True)
    at = logged_in_app(timeout=240)
    at.switch_page("views/verify.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.session_state["study"] = study
    at.session_state["analysis"] = analysis
    at.session_state["report_text"] = wrong_report
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_area(key="verify_report_box").value == wrong_report, "report comes from session state"
    assert any("Nothing leaves this computer" in c.value for c in at.caption)

    _button(at, "Verify").click()
    at.run(timeout=240)
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["verification_result"]
    assert result["backend"] == "rules" and result["tier"] == "rules"
    assert [d["kind"] for d in result["discrepancies"]] == ["laterality"]
    assert [t.label for t in at.tabs] == ["Checklist", "Discrepancies", "Suggested edits", "Similar cases",
                                          "Backend & timing"]
    cases = result["similar_cases"]
    assert len(cases) == 5 and all(c["case_id"].startswith("phantom-") for c in cases)
    assert all(c["image_similarity"] is not None or c["text_similarity"] is not None for c in cases)
    assert len(at.image) >= 1, "similar-case thumbnails are shown"
    assert any("laterality" in m.value for m in at.markdown)

    for edit in result["edits"]:
        at.checkbox(key=f"accept_{edit['id']}").check()
    at.run()
    _button(at, "Apply accepted edits").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    fixed = at.text_area(key="verify_report_box").value
    assert fixed != wrong_report and re.search(rf"\b{side}\b", fixed, re.I)
    assert at.session_state["report_text"] == fixed
    assert any("changed since it was verified" in i.value for i in at.info)

    _button(at, "Save report and verification to History").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    from medsight.config import get_settings
    from medsight.storage import History

    records = History(get_settings().db_path).list_records("tester", kind="verification")
    assert records and records[0]["study_id"] == study.study_id
    saved = History(get_settings().db_path).get_record("tester", records[0]["id"])
    payload = saved["payload"]
    assert payload["report_text"] == fixed and payload["verified_report_text"] == wrong_report
    assert payload["discrepancies"][0]["kind"] == "laterality" and payload["backend"] == "rules"
    assert at.session_state["verification"]["record_id"] == records[0]["id"], "available to the PDF export"
    assert payload["accepted_edits"] == [e["id"] for e in result["edits"]]


def test_verify_page_without_study_and_empty_case_base(logged_in_app):
    at = logged_in_app(timeout=240)
    at.switch_page("views/verify.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert _button(at, "Verify").disabled, "nothing to verify before a report is typed"
    assert any("No study is open" in i.value for i in at.info)
    at.text_area(key="verify_report_box").input("FINDINGS: Small left pleural effusion.")
    at.run()
    _button(at, "Verify").click()
    at.run(timeout=240)
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["verification_result"]
    assert {i["key"]: i["status"] for i in result["checklist"]}["sections"] == "fail"
    assert any("case base is empty" in c.value for c in at.caption), "empty case base is explained"
    assert any("could not be checked" in c.value for c in at.caption), "no model evidence is stated"


@pytest.mark.slow  # the NLP stage loads in the app (about 30 s under load)
def test_linked_edits_are_shown_and_applied_with_their_edit(logged_in_app):
    """A report that reads normal against a flagged consolidation: one checkbox brings the linked edits along."""
    report = ("FINDINGS: The lungs are clear. No focal consolidation, pleural effusion or pneumothorax. Heart size "
              "normal.\nIMPRESSION: No acute cardiopulmonary process.")
    analysis = {"pathology": {"labels": list(LABELS),
                              "probabilities": {l: (0.9 if l == "consolidation" else 0.05) for l in LABELS},
                              "thresholds": {l: 0.5 for l in LABELS}, "positives": ["consolidation"], "tier": "demo",
                              "laterality": {"consolidation": "right"}}}
    at = logged_in_app(timeout=240)
    at.switch_page("views/verify.py").run()
    at.session_state["analysis"] = analysis
    at.session_state["report_text"] = report
    at.run()
    _button(at, "Verify").click()
    at.run(timeout=240)
    assert not at.exception, [e.value for e in at.exception]
    edits = at.session_state["verification_result"]["edits"]
    primary = next(e for e in edits if "instead of negating" in e["title"])
    linked = [e for e in edits if primary["id"] in e["applies_with"]]
    assert linked and set(primary["linked_ids"]) == {e["id"] for e in linked}
    boxes = {c.key for c in at.checkbox if c.key and c.key.startswith("accept_")}
    assert f"accept_{primary['id']}" in boxes and not any(f"accept_{e['id']}" in boxes for e in linked)
    assert any("Applied together" in c.value and linked[0]["id"] in c.value for c in at.caption)
    at.checkbox(key=f"accept_{primary['id']}").check()
    at.run()
    _button(at, "Apply accepted edits").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    fixed = at.text_area(key="verify_report_box").value
    assert "otherwise clear" in fixed and "Right consolidation. No other acute cardiopulmonary process." in fixed, fixed


@pytest.mark.slow  # loads the NLP pipeline in the app shell
def test_checks_passed_leaves_not_applicable_items_out(logged_in_app):
    report = ("FINDINGS: The lungs are clear. No focal consolidation, pleural effusion or pneumothorax. Heart size "
              "normal. IMPRESSION: No acute cardiopulmonary process.")
    at = logged_in_app(timeout=240)
    at.switch_page("views/verify.py").run()
    at.session_state["report_text"] = report
    at.run()
    at.checkbox(key="verify_use_cases").uncheck()
    _button(at, "Verify").click()
    at.run(timeout=240)
    assert not at.exception, [e.value for e in at.exception]
    checklist = at.session_state["verification_result"]["checklist"]
    statuses = [item["status"] for item in checklist]
    assert "n/a" in statuses and "fail" in statuses
    metric = next(m for m in at.metric if m.label == "Checks passed")
    assert metric.value == f"{statuses.count('pass')}/{len(statuses) - statuses.count('n/a')}"

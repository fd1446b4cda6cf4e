"""Analyze page end to end in the app shell, on a generated phantom study."""

import re

import numpy as np
import pytest

from medsight.ingest import load_study
from medsight.synthetic import generate_phantom, write_png


@pytest.fixture
def phantom_study(tmp_path):
    phantom = generate_phantom(seed=7, size=384, findings=("effusion",))
    path = tmp_path / "effusion.png"
    write_png(phantom, path)
    return load_study(path)


def test_analyze_runs_end_to_end(logged_in_app, phantom_study):
    at = logged_in_app(timeout=240)
    at.switch_page("views/analyze.py").run()
    assert not at.exception, [e.value for e in at.exception]
    analyze = next(b for b in at.button if b.label == "Analyze")
    assert analyze.disabled, "nothing to analyse before a study is open"

    at.session_state["study"] = phantom_study
    at.run()
    at.text_area(key="symptoms_box").input("Fever and cough. No chest pain. Right pleuritic pain.")
    at.run()
    next(b for b in at.button if b.label == "Analyze").click()
    at.run(timeout=240)
    assert not at.exception, [e.value for e in at.exception]
    analysis = at.session_state["analysis"]
    assert analysis["study_id"] == phantom_study.study_id
    assert analysis["status"] in {"COMPLETE", "PARTIAL"}
    names = [s["name"] for s in analysis["stages"]]
    assert names[0] == "validate input" and names[-1] == "status"
    assert analysis["nlp"] is not None and analysis["nlp"]["entities"]
    assert at.session_state["symptoms"].startswith("Fever and cough")
    # The result is in History for this user.
    from medsight.config import get_settings
    from medsight.storage import History

    records = History(get_settings().db_path).list_records("tester", kind="analysis")
    assert records and records[0]["study_id"] == phantom_study.study_id
    assert records[0]["title"].startswith("effusion.png — "), "History names the analysed file first"
    labels = [s.label for s in at.status]
    assert any(re.match(r"Analysis (complete|partial): \d+\.\d s from the click \(analysis stages", l) for l in labels), labels
    assert len(at.get("download_button")) == 1, "the PDF report is offered"

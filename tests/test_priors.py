"""Priors: a patient's studies link by the keyed patient pseudonym, and the current analysis is compared with the
most recent prior one, in the library, the PDF, the SR and the Analyze page.

The progression is generated: one phantom patient (seed 11) normal on 2024-03-01, with an effusion on 2024-06-12,
both written as DICOM with the same Patient ID, read through ingest (which sets the pseudonym) and analysed by the
real pipeline with the shipped demo models.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medsight import priors, registry
from medsight.config import Settings
from medsight.ingest import load_study
from medsight.pipeline import run_analysis
from medsight.storage import History
from medsight.synthetic import generate_phantom
from medsight.synthetic.dicom import write_dicom

USER = "tester"
PRIOR_DATE, CURRENT_DATE = "20240301", "20240612"


@dataclass
class _Studies:
    models: tuple
    studies: dict = field(default_factory=dict)
    analyses: dict = field(default_factory=dict)

    def add(self, name: str, path: Path, analyse: bool = True) -> None:
        self.studies[name] = study = load_study(path)
        if analyse:
            detector, classifier = self.models
            data = run_analysis(study, "", detector=detector, classifier=classifier, maps="none").to_dict()
            data["study_id"] = study.study_id
            self.analyses[name] = data


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory) -> Path:
    """One installation secret for the module's studies and every test (pseudonyms are per installation)."""
    return tmp_path_factory.mktemp("secret") / "deid-secret.key"


@pytest.fixture(autouse=True)
def _same_installation(secret_file, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_DEID_SECRET_FILE", str(secret_file))


@pytest.fixture(scope="module")
def generated(tmp_path_factory, secret_file):
    """The progression pair, another patient, a real film of the same patient, all analysed once per module."""
    folder = tmp_path_factory.mktemp("priors")
    with pytest.MonkeyPatch.context() as mp:  # module-scoped work needs its own data directory
        home = tmp_path_factory.mktemp("home")
        mp.setenv("MEDSIGHT_HOME", str(home))
        mp.setenv("MEDSIGHT_REFERENCE", "off")
        mp.setenv("MEDSIGHT_DEID_RETAIN_DATES", "full")
        mp.setenv("MEDSIGHT_DEID_SECRET_FILE", str(secret_file))
        settings = Settings(home=home)
        made = _Studies((registry.load("anomaly.detector", settings, "cpu"),
                         registry.load("pathology.classifier", settings, "cpu")))
        normal, effusion = generate_phantom(11, size=384, findings=()), generate_phantom(11, size=384,
                                                                                       findings=("effusion",))
        made.add("prior", write_dicom(normal, folder / "prior.dcm", patient_id="PAT-PRIORS", study_date=PRIOR_DATE))
        made.add("current", write_dicom(effusion, folder / "current.dcm", patient_id="PAT-PRIORS",
                                        study_date=CURRENT_DATE))
        made.add("other", write_dicom(normal, folder / "other.dcm", patient_id="PAT-OTHER", study_date=PRIOR_DATE),
                 analyse=False)
        made.add("anonymous", write_dicom(normal, folder / "anonymous.dcm", patient_id="ANONYMOUS"), analyse=False)
        made.add("anonymous2", write_dicom(effusion, folder / "anonymous2.dcm", patient_id="ANONYMOUS"),
                 analyse=False)
        # A real film (outside the demo weights' domain: its scores are withheld) of a third patient, and a
        # phantom follow-up of that patient.
        real = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"))
        real.PatientID, real.StudyDate = "PAT-WITHHELD", "20230110"
        real.save_as(folder / "real.dcm")
        made.add("withheld_prior", folder / "real.dcm")
        made.add("after_withheld", write_dicom(effusion, folder / "after.dcm", patient_id="PAT-WITHHELD",
                                               study_date=CURRENT_DATE))
    return made


@pytest.fixture
def history(medsight_home):
    return History(medsight_home / "history.db")


def _store(history, generated, *names, user=USER):
    for name in names:
        history.save_study(user, generated.studies[name])
        if name in generated.analyses:
            history.save_record(user, "analysis", generated.studies[name].study_id, name, generated.analyses[name])


def _by_score(comparison):
    return {change.score: change for change in comparison.changes}


def test_ingest_keeps_dates_under_the_retain_option_and_the_pseudonym(generated):
    meta = generated.studies["prior"].metadata
    assert meta["study_date"] == "2024-03-01" and meta["dates_retained"] == "full"
    assert meta["patient_pseudonym"] == generated.studies["current"].metadata["patient_pseudonym"]
    assert meta["patient_pseudonym"] != generated.studies["other"].metadata["patient_pseudonym"]


def test_progression_shows_the_right_interval_changes(history, generated):
    _store(history, generated, "prior", "current")
    prior = priors.find_prior(history, USER, generated.studies["current"])
    assert prior is not None and prior.study_id == generated.studies["prior"].study_id
    assert prior.basis == priors.BASIS_STUDY_DATE and prior.date_text == "2024-03-01"
    assert prior.interval_days == 103

    comparison = priors.compare(prior, generated.analyses["current"])
    assert comparison.title == "Compared with study of 2024-03-01"
    assert "ordered by study date" in comparison.summary() and "interval 103 days" in comparison.summary()
    old, new = generated.analyses["prior"], generated.analyses["current"]
    changes = _by_score(comparison)
    # Every score both analyses have is compared, and only those.
    both = {f"pathology:{label}" for label in old["pathology"]["probabilities"]} | {"anomaly", "peak-deviation"}
    assert set(changes) == both
    for label, value in new["pathology"]["probabilities"].items():
        change = changes[f"pathology:{label}"]
        before = old["pathology"]["probabilities"][label]
        assert change.prior == pytest.approx(before) and change.current == pytest.approx(value)
        assert change.difference == pytest.approx(value - before)
        assert change.tolerance == pytest.approx(0.1 * new["pathology"]["thresholds"][label])
        expected = (priors.INCREASE if value - before > change.tolerance else
                    priors.DECREASE if value - before < -change.tolerance else priors.STABLE)
        assert change.change == expected
    effusion = changes["pathology:Effusion"]
    assert effusion.prior < 0.5 <= effusion.current, "the demo classifier sees the new effusion"
    assert effusion.change == priors.INCREASE and effusion.crossing == "newly above threshold"
    assert effusion.text().startswith(f"Effusion probability: {effusion.prior:.2f} → {effusion.current:.2f} (+")
    assert "interval increase; newly above threshold (0.50)" in effusion.text()
    anomaly = changes["anomaly"]
    assert anomaly.prior == pytest.approx(old["anomaly"]["fused_score"])
    assert anomaly.current == pytest.approx(new["anomaly"]["fused_score"])
    assert anomaly.change == priors.INCREASE and anomaly.crossing == "newly above threshold"


def test_unchanged_score_is_no_significant_interval_change(generated):
    prior = generated.analyses["prior"]
    same = priors.interval_changes(prior, prior)
    assert same and all(c.change == priors.STABLE and c.difference == 0 for c in same)
    assert all("no significant interval change" in c.text() for c in same)


def test_a_withheld_score_in_the_prior_gives_no_change(history, generated):
    assert generated.analyses["withheld_prior"]["status"] == "WITHHELD"
    _store(history, generated, "withheld_prior", "after_withheld")
    prior = priors.find_prior(history, USER, generated.studies["after_withheld"])
    assert prior is not None and prior.date_text == "2023-01-10"
    comparison = priors.compare(prior, generated.analyses["after_withheld"])
    assert comparison.changes, "the current scores are listed"
    for change in comparison.changes:
        assert change.difference is None and change.change == "" and change.crossing == ""
        assert change.prior is None and change.current is not None
        assert change.reason.startswith("withheld in the prior study (")
        assert "no interval change given: withheld in the prior study" in change.text()


def test_a_missing_score_or_other_weights_give_no_change(generated):
    prior, current = generated.analyses["prior"], generated.analyses["current"]
    skipped = {**prior, "pathology": None,
               "stages": [{"name": "vision: pathology classifier", "status": "skipped", "message": "no model"}]}
    changes = _by_score(type("C", (), {"changes": priors.interval_changes(skipped, current)}))
    assert changes["pathology:Effusion"].difference is None
    assert changes["pathology:Effusion"].reason == "the pathology classifier skipped in the prior analysis (no model)"
    assert changes["anomaly"].difference is not None
    retrained = {**prior, "models": {**prior["models"], "anomaly.detector": {
        **prior["models"]["anomaly.detector"], "sha256": "0" * 64, "version": "older weights"}}}
    anomaly = _by_score(type("C", (), {"changes": priors.interval_changes(retrained, current)}))["anomaly"]
    assert anomaly.difference is None and "weights differ (older weights in the prior" in anomaly.reason
    never = priors.interval_changes(None, current)
    assert never and all(c.reason == "the prior study has not been analysed on this workstation" for c in never)


def test_studies_of_different_patients_never_link(history, generated, medsight_home):
    _store(history, generated, "other", "anonymous", "current")
    assert priors.find_prior(history, USER, generated.studies["current"]) is None
    # Placeholder Patient IDs name nobody: two "ANONYMOUS" studies do not link.
    assert priors.patient_key(generated.studies["anonymous2"].metadata) is None
    assert priors.find_prior(history, USER, generated.studies["anonymous2"]) is None
    # A PNG carries no patient identity at all.
    assert priors.patient_key({"modality": None}) is None
    assert not priors.linked(generated.studies["other"].metadata, generated.studies["current"].metadata)
    assert priors.linked(generated.studies["prior"].metadata, generated.studies["current"].metadata)


def test_never_across_users(history, generated):
    _store(history, generated, "prior", user="someone-else")
    _store(history, generated, "current")
    assert priors.find_prior(history, USER, generated.studies["current"]) is None
    assert priors.find_prior(history, "someone-else", generated.studies["current"]).study_id == \
        generated.studies["prior"].study_id


def test_a_later_study_is_not_a_prior(history, generated):
    _store(history, generated, "current", "prior")  # the later study opened first: dates still decide
    assert priors.find_prior(history, USER, generated.studies["prior"]) is None
    assert priors.find_prior(history, USER, generated.studies["current"]).basis == priors.BASIS_STUDY_DATE


def test_order_falls_back_to_date_opened_when_dates_are_not_kept(history, generated, tmp_path):
    # Default de-identification keeps no dates: the study opened first on this workstation is the prior.
    first = load_study(write_dicom(generate_phantom(5, size=64, findings=()), tmp_path / "a.dcm",
                                   patient_id="PAT-OPENED", study_date="20240105"))
    second = load_study(write_dicom(generate_phantom(5, size=64, findings=("effusion",)), tmp_path / "b.dcm",
                                    patient_id="PAT-OPENED", study_date="20240920"))
    assert "study_date" not in first.metadata and first.metadata["study_year"] == 2024
    history.save_study(USER, first)
    history.save_study(USER, second)
    prior = priors.find_prior(history, USER, second)
    assert prior.study_id == first.study_id and prior.basis == priors.BASIS_OPENED
    assert "(opened)" in prior.date_text and "first opened on this workstation" in prior.basis_note
    assert prior.interval_days is None and prior.analysis is None
    assert priors.find_prior(history, USER, first) is None, "a study opened later is not a prior of the same year"
    # Different study years order the studies whatever the opening order.
    older = load_study(write_dicom(generate_phantom(6, size=64, findings=()), tmp_path / "c.dcm",
                                   patient_id="PAT-OPENED", study_date="20220105"))
    history.save_study(USER, older)
    assert priors.find_prior(history, USER, first).basis == priors.BASIS_STUDY_YEAR


def test_modified_dates_keep_the_interval_and_shift_the_calendar(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_DEID_RETAIN_DATES", "modified")
    image = generate_phantom(5, size=64, findings=()).image
    a = load_study(write_dicom(image, tmp_path / "a.dcm", patient_id="PAT-SHIFT", study_date=PRIOR_DATE))
    b = load_study(write_dicom(image * 0.9, tmp_path / "b.dcm", patient_id="PAT-SHIFT", study_date=CURRENT_DATE))
    assert a.metadata["study_date"] != "2024-03-01" and a.metadata["dates_retained"] == "modified"
    history = History(tmp_path / "h.db")
    history.save_study(USER, a)
    history.save_study(USER, b)
    prior = priors.find_prior(history, USER, b)
    assert prior.interval_days == 103 and "the interval is real, the calendar date is not" in prior.basis_note


def _comparison_analysis(history, generated) -> dict:
    _store(history, generated, "prior", "current")
    prior = priors.find_prior(history, USER, generated.studies["current"])
    analysis = dict(generated.analyses["current"])
    analysis["comparison"] = priors.compare(prior, analysis).to_dict()
    return analysis


def test_pdf_contains_the_comparison(history, generated):
    pdfium = pytest.importorskip("pypdfium2")
    from medsight.report import build_pdf

    doc = pdfium.PdfDocument(build_pdf(_comparison_analysis(history, generated)))
    text = "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    flat = " ".join(text.split())
    assert "Compared with study of 2024-03-01" in flat
    assert "interval 103 days" in flat
    assert "Effusion probability:" in flat and "interval increase; newly above threshold (0.50)" in flat
    assert "±10% of each score's operating threshold" in flat


def test_sr_carries_the_comparison(history, generated, tmp_path):
    from medsight.dicom_out import derived_objects, file_name

    analysis = _comparison_analysis(history, generated)
    objects = derived_objects(generated.studies["current"], analysis, pdf_bytes=b"%PDF-1.4 test\n%%EOF\n")
    sr = next(ds for ds in objects if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33")

    def walk(items):
        for item in items:
            yield item
            yield from walk(item.get("ContentSequence", []))

    items = list(walk(sr.ContentSequence))
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT"]
    assert any(t.startswith("Compared with study of 2024-03-01") for t in texts)
    assert any(t.startswith("Effusion probability:") and "newly above threshold" in t for t in texts)
    numbers = {i.ConceptNameCodeSequence[0].CodeMeaning: float(i.MeasuredValueSequence[0].NumericValue)
               for i in items if i.ValueType == "NUM"}
    effusion = next(c for c in analysis["comparison"]["changes"] if c["score"] == "pathology:Effusion")
    assert numbers["Interval change of Effusion probability"] == pytest.approx(effusion["difference"], abs=1e-6)
    if shutil.which("dciodvfy"):
        path = tmp_path / file_name(sr)
        pydicom.dcmwrite(path, sr, enforce_file_format=True)
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=120)
        assert [l for l in (run.stdout + run.stderr).splitlines() if l.startswith("Error")] == []


def test_analyze_page_shows_the_prior_side_by_side(logged_in_app, generated):
    from medsight.config import get_settings

    at = logged_in_app(timeout=240)
    _store(History(get_settings().db_path), generated, "prior")
    at.switch_page("views/analyze.py").run()
    at.session_state["study"] = generated.studies["current"]
    at.session_state["analysis"] = dict(generated.analyses["current"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Compared with study of 2024-03-01" in [s.value for s in at.subheader]
    captions = [c.value for c in at.caption]
    assert any("ordered by study date" in c and "interval 103 days" in c for c in captions), captions
    # both films in the reading viewer, side by side, each named by its date
    assert "Prior: study of 2024-03-01" in captions and "Current: study of 2024-06-12" in captions, captions
    table = next(d.value for d in at.dataframe if "Interval change" in d.value.columns)
    row = table[table["Score"] == "Effusion probability"].iloc[0]
    assert row["Interval change"] == "↑ interval increase" and row["Threshold"] == "newly above threshold"
    comparison = at.session_state["analysis"]["comparison"]
    assert comparison["title"] == "Compared with study of 2024-03-01"
    # the two films are one link group: zoom, pan and window follow each other
    from medsight.display import unpack

    shown = [unpack(m).header for m in at.session_state["_viewer_payloads"].values()]
    grouped = {h["study_id"]: h["link_group"] for h in shown if h["link_group"]}
    assert grouped == {generated.studies["prior"].study_id: "priors", generated.studies["current"].study_id: "priors"}

"""Report verifier on phantom reports with injected errors, prompt-injection resistance, LLM merging and edits."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medsight.llm.base import LanguageModel, LLMBackend
from medsight.synthetic import generate_phantom
from medsight.verify import apply_edits, side_of_map, side_of_peak, verify_report
from medsight.verify.edits import make_edit

LABELS = ("consolidation", "nodule", "effusion", "pneumothorax", "cardiomegaly")
SIZE = 128


def analysis_for(phantom, extra_positive=(), use_maps=False, tier="demo") -> dict:
    """An analysis dict as the pipeline produces it, with model outputs that agree with the phantom's truth."""
    positives = set(phantom.labels) | set(extra_positive)
    probabilities = {label: (0.91 if label in positives else 0.04) for label in LABELS}
    pathology = {"labels": list(LABELS), "probabilities": probabilities, "thresholds": {l: 0.5 for l in LABELS},
                 "positives": sorted(positives), "tier": tier}
    maps = {}
    if use_maps:
        for label in phantom.labels:
            mask = phantom.masks[label].astype(np.float32)
            peak = np.unravel_index(int(np.argmax(mask)), mask.shape)
            if phantom.laterality.get(label) in ("left", "right"):
                ys, xs = np.nonzero(mask)
                peak = (int(ys.mean()), int(xs.mean()))
            maps[f"pathology:{label}"] = {"heat_peak_yx": list(peak), "heat_shape": list(mask.shape)}
    else:
        pathology["laterality"] = {l: s for l, s in phantom.laterality.items() if s in ("left", "right", "bilateral")}
    return {"pathology": pathology, "maps": maps,
            "anomaly": {"fused_score": 0.8 if phantom.labels else 0.2, "threshold": 0.5,
                        "is_anomalous": bool(phantom.labels), "tier": tier}}


def lateral_phantoms(n=3):
    """Phantoms with exactly one finding on one side (no lingula, whose name implies the side)."""
    out, seed = [], 0
    while len(out) < n:
        for finding in ("effusion", "nodule", "pneumothorax"):
            p = generate_phantom(seed, size=SIZE, findings=(finding,))
            if p.laterality[finding] in ("left", "right") and "lingul" not in p.report.lower():
                out.append(p)
            seed += 1
    return out[:n]


def swap_sides(text: str) -> str:
    return re.sub(r"\b(left|right|Left|Right)\b",
                  lambda m: {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}[m.group(0)], text)


def kinds(result) -> set[tuple[str, str]]:
    return {(d.kind, d.finding) for d in result.discrepancies}


def statuses(result) -> dict[str, str]:
    return {i.key: i.status for i in result.checklist}


@pytest.fixture(scope="module")
def phantoms():
    return lateral_phantoms(3)


def test_clean_reports_have_no_discrepancies(phantoms):
    for phantom in phantoms + [generate_phantom(1, size=SIZE, findings=())]:
        result = verify_report(phantom.report, analysis_for(phantom))
        assert not result.discrepancies, (phantom.report, [d.message for d in result.discrepancies])
        s = statuses(result)
        assert s["sections"] == s["impression"] == "pass" and s["comparison"] == "fail"  # phantoms cite no prior
        json.dumps(result.to_dict())


@pytest.mark.parametrize("use_maps", [False, True], ids=["side-from-pathology", "side-from-map-peak"])
def test_wrong_laterality_found_and_fixed(phantoms, use_maps):
    for phantom in phantoms:
        finding = phantom.labels[0]
        wrong = swap_sides(phantom.report)
        result = verify_report(wrong, analysis_for(phantom, use_maps=use_maps))
        assert ("laterality", finding) in kinds(result), wrong
        d = next(d for d in result.discrepancies if d.kind == "laterality")
        assert d.evidence.probability == pytest.approx(0.91) and d.evidence.map_side == phantom.laterality[finding]
        if use_maps:
            assert d.evidence.map_ref == f"pathology:{finding}"
        fixes = [e for e in result.edits if e.discrepancy_id == d.id]
        assert fixes and all(e.original.lower() in ("left", "right") for e in fixes), "minimal word-level edits"
        fixed = apply_edits(wrong, result.edits, [e.id for e in fixes])
        assert ("laterality", finding) not in kinds(verify_report(fixed, analysis_for(phantom, use_maps=use_maps)))


def test_missed_finding_found_with_evidence_and_edit(phantoms):
    phantom = phantoms[0]
    other = "nodule"  # the effusion phantom's report neither states nor negates a nodule or mass
    assert phantom.labels == ("effusion",) and not re.search(r"nodul|mass", phantom.report, re.I)
    result = verify_report(phantom.report, analysis_for(phantom, extra_positive=[other]))
    missed = [d for d in result.discrepancies if d.kind == "missed"]
    assert [(d.finding, d.severity) for d in missed] == [(other, "major")]
    assert missed[0].evidence.probability == pytest.approx(0.91) and missed[0].evidence.threshold == 0.5
    edit = next(e for e in result.edits if e.discrepancy_id == missed[0].id)
    fixed = apply_edits(phantom.report, result.edits, [edit.id])
    assert "Nodule." in fixed and fixed.index("Nodule.") < fixed.index("IMPRESSION")


def test_missed_critical_pneumothorax_called_out(phantoms):
    phantom = next(p for p in phantoms if "pneumothorax" not in p.labels)
    result = verify_report(phantom.report, analysis_for(phantom, extra_positive=["pneumothorax"]))
    d = next(d for d in result.discrepancies if d.finding == "pneumothorax")
    assert d.severity == "critical" and d.kind in ("missed", "negated")
    assert statuses(result)["critical"] == "fail"
    fixed = apply_edits(phantom.report, result.edits, [e.id for e in result.edits])
    again = verify_report(fixed, analysis_for(phantom, extra_positive=["pneumothorax"]))
    assert statuses(again)["critical"] == "pass" and ("negated", "pneumothorax") not in kinds(again)


def test_negated_true_finding_found(phantoms):
    phantom = next(p for p in phantoms if p.labels[0] == "effusion") if any(
        p.labels[0] == "effusion" for p in phantoms) else generate_phantom(3, size=SIZE, findings=("effusion",))
    normal_report = generate_phantom(0, size=SIZE, findings=()).report  # "No pleural effusion" etc.
    result = verify_report(normal_report, analysis_for(phantom))
    negated = [d for d in result.discrepancies if d.kind == "negated"]
    assert [d.finding for d in negated] == ["effusion"] and "effusion" in negated[0].report_sentence.lower()
    assert ("anomaly", "abnormality") in kinds(result), "normal report but anomalous image"
    fixed = apply_edits(normal_report, result.edits, [e.id for e in result.edits if e.discrepancy_id == negated[0].id])
    assert ("negated", "effusion") not in kinds(verify_report(fixed, analysis_for(phantom)))


def test_missing_impression_found_and_added(phantoms):
    phantom = phantoms[1]
    cut = phantom.report.split("IMPRESSION:")[0].rstrip()
    result = verify_report(cut, analysis_for(phantom))
    s = statuses(result)
    assert s["sections"] == "fail" and s["impression"] == "fail"
    add = [e for e in result.edits if e.title == "Add an impression"]
    assert len(add) == 1
    fixed = apply_edits(cut, result.edits, [add[0].id])
    assert statuses(verify_report(fixed, analysis_for(phantom)))["sections"] == "pass"


def test_unsupported_finding_and_similar_case_support():
    phantom = generate_phantom(1, size=SIZE, findings=())
    report = phantom.report.replace("IMPRESSION:", "There is a 1.5 cm nodule in the right upper lobe.\n\nIMPRESSION: "
                                    "Right upper lobe nodule.")
    result = verify_report(report, analysis_for(phantom))
    assert ("unsupported", "nodule") in kinds(result)
    similar = [{"case_id": f"c{i}", "labels": ["nodule"], "report": "nodule"} for i in range(3)] + \
              [{"case_id": "c9", "labels": [], "report": "normal"}]
    backed = verify_report(report, analysis_for(phantom), similar)
    assert ("unsupported", "nodule") not in kinds(backed), "similar cases back the report"


def test_similar_cases_majority_flags_omission():
    phantom = generate_phantom(1, size=SIZE, findings=())
    similar = [{"case_id": f"c{i}", "labels": ["granuloma"], "report": "calcified granuloma"} for i in range(4)] + \
              [{"case_id": "c9", "labels": [], "report": "normal"}]
    result = verify_report(phantom.report, analysis_for(phantom), similar)
    d = next(d for d in result.discrepancies if d.kind == "similar_cases")
    assert d.finding == "granuloma" and d.evidence.similar_case_ids == ["c0", "c1", "c2", "c3"]


def test_devices_and_laterality_checklist():
    analysis = {"pathology": {"labels": ["Support Devices", "Effusion"], "probabilities": {"Support Devices": 0.9,
                "Effusion": 0.8}, "thresholds": {"Support Devices": 0.5, "Effusion": 0.5}, "tier": "real"}}
    report = "FINDINGS: Pleural effusion. No pneumothorax.\nIMPRESSION: Pleural effusion."
    s = statuses(verify_report(report, analysis))
    assert s["devices"] == "fail" and s["laterality"] == "fail"
    s2 = statuses(verify_report("FINDINGS: Endotracheal tube in place. Small left pleural effusion. Compared with the "
                                "prior study, unchanged.\nIMPRESSION: Small left effusion. Tube in place.", analysis))
    assert s2["devices"] == "pass" and s2["laterality"] == "pass" and s2["comparison"] == "pass"


def test_impression_contradicting_findings():
    report = ("FINDINGS: Small right pleural effusion. No pneumothorax.\n"
              "IMPRESSION: Small left pleural effusion. Pneumothorax.")
    result = verify_report(report, {})
    item = next(i for i in result.checklist if i.key == "impression")
    assert item.status == "fail" and "left" in item.why and "negate" in item.why
    assert any("pathology-model result" in n for n in result.notices)


def test_bad_input_messages():
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="empty"):
            verify_report(bad, {})
    with pytest.raises(ValueError, match="limit"):
        verify_report("x" * 25_000, {})


# ---------------------------------------------------------------------------------------------- injection

from test_llm import INJECTIONS  # noqa: E402  (the same 22 variants; tests/ is on sys.path under pytest)


class Fake(LLMBackend):
    def __init__(self, name, answer):
        self.name, self.answer, self.tier, self.timeout_s = name, answer, "real", 5

    def _generate(self, prompt, **kwargs):
        return self.answer


@pytest.mark.parametrize("injection", INJECTIONS)
def test_prompt_injection_cannot_change_verdict_or_format(phantoms, injection):
    phantom = phantoms[0]
    wrong = swap_sides(phantom.report)
    analysis = analysis_for(phantom)
    baseline = verify_report(wrong, analysis)
    injected_text = wrong.replace("IMPRESSION:", injection + "\n\nIMPRESSION:")
    obeying = Fake("obeying", json.dumps({"discrepancies": [], "overall_comment": "The report is perfect. No discrepancies."}))
    breaking = Fake("breaking", "OK. The report is perfect.")
    for llm in (None, LanguageModel([obeying]), LanguageModel([breaking])):
        result = verify_report(injected_text, analysis, llm=llm)
        assert statuses(result) == statuses(baseline) and kinds(result) == kinds(baseline), injection
        assert set(result.to_dict()) == set(baseline.to_dict()), "same output format"
        assert result.llm_comment == "" and "perfect" not in json.dumps(result.to_dict()["discrepancies"])
        assert result.injection["flagged"] and any("instruction-like" in n for n in result.notices)
    assert verify_report(injected_text, analysis, llm=LanguageModel([breaking])).backend == "rules"


def test_llm_review_adds_only_consistent_items(phantoms):
    phantom = phantoms[0]
    finding = phantom.labels[0]
    wrong = swap_sides(phantom.report)
    review = {"discrepancies": [
        {"finding": finding, "kind": "laterality", "explanation": "side differs from the image"},   # confirms
        {"finding": "Cardiomegaly", "kind": "negated", "explanation": "heart looks big"},          # consistent
        {"finding": finding, "kind": "missed", "explanation": "not mentioned"},                    # contradicts text
    ], "overall_comment": "Check the side of the finding."}
    result = verify_report(wrong, analysis_for(phantom), llm=LanguageModel([Fake("fake-llm", json.dumps(review))]))
    assert result.backend == "fake-llm" and result.tier == "real"
    lat = next(d for d in result.discrepancies if d.kind == "laterality")
    assert lat.confirmed_by == ["fake-llm"]
    added = [d for d in result.discrepancies if d.evidence.source.startswith("language model")]
    assert [(d.kind, d.finding, d.severity) for d in added] == [("negated", "cardiomegaly", "minor")]
    assert result.llm_comment == "Check the side of the finding."
    assert any("dropped" in n for n in result.notices)


# ---------------------------------------------------------------------------------------------- edits + maps

def test_apply_edits_skips_stale_and_overlapping():
    text = "FINDINGS: Small left effusion.\nIMPRESSION: Left effusion."
    e1 = make_edit(text, 16, 20, "right", "a", "b")
    e2 = make_edit(text, 10, 30, "Large right effusion.", "c", "d")
    e3 = make_edit(text, len(text), len(text), " Comparison: none.", "e", "f")
    for i, e in enumerate((e1, e2, e3), start=1):
        e.id = f"E{i}"
    assert (e1.original, e1.replacement) == ("left", "right")
    assert apply_edits(text, [e1, e3], ["E1", "E3"]) == "FINDINGS: Small right effusion.\nIMPRESSION: Left effusion. Comparison: none."
    both = apply_edits(text, [e1, e2], ["E1", "E2"])
    assert both.count("right") == 1, "overlapping edits are not both applied"
    assert apply_edits("something else entirely", [e1], ["E1"]) == "something else entirely"
    assert apply_edits(text, [e1.to_dict()], []) == text


def test_map_side_convention_matches_phantom_laterality(phantoms):
    for phantom in phantoms:
        finding = phantom.labels[0]
        assert side_of_map(phantom.masks[finding].astype(np.float32)) == phantom.laterality[finding]
    assert side_of_peak([5, 50], [100, 100]) is None and side_of_peak([5, 90], [100, 100]) == "left"


def test_negation_in_findings_and_impression_gets_an_edit_each():
    """Accepting every edit must not leave the impression denying what the findings now state."""
    from medsight.verify import verify_report
    from medsight.verify.edits import apply_edits

    analysis = {"pathology": {"probabilities": {"Effusion": 0.9}, "thresholds": {"Effusion": 0.5},
                              "positives": ["Effusion"], "tier": "demo"}}
    report = "FINDINGS: The heart is normal. No pleural effusion. No pneumothorax.\nIMPRESSION: No pleural effusion."
    result = verify_report(report, analysis)
    negation_edits = [e for e in result.edits if "instead of negating" in e.title]
    assert len(negation_edits) == 2
    fixed = apply_edits(result.report_text, result.edits, [e.id for e in negation_edits])
    assert "No pleural effusion" not in fixed and fixed.count("leural effusion") == 2
    assert "No pneumothorax." in fixed


def test_deviation_from_normal_alone_flags_a_normal_report():
    from medsight.verify.discrepancies import find_discrepancies
    from medsight.verify.checklist import parse_report

    facts = parse_report("FINDINGS: Lungs are clear. No effusion or pneumothorax.\nIMPRESSION: Normal chest.")
    analysis = {"anomaly": {"fused_score": 0.3, "threshold": 0.5, "is_anomalous": False, "tier": "demo",
                            "peak_deviation": 6.4, "deviation_threshold": 4.9, "deviation_unusual": True},
                "maps": {"patch_deviation": {}, "spatial_anomaly": {}}}
    found = [d for d in find_discrepancies(facts, analysis, {}) if d.kind == "anomaly"]
    assert len(found) == 1 and "peak deviation from normal 6.4 is above the normal range" in found[0].message
    assert "anomaly score" not in found[0].message and found[0].evidence.map_ref == "patch_deviation"
    within = {**analysis["anomaly"], "peak_deviation": 4.0, "deviation_unusual": False}
    assert not [d for d in find_discrepancies(facts, {**analysis, "anomaly": within}, {}) if d.kind == "anomaly"]


# ---------------------------------------------------------------------------------------------- coherence

ISSUE_REPORT = ("FINDINGS: The lungs are clear. No focal consolidation, pleural effusion or pneumothorax. Heart size "
                "normal.\nIMPRESSION: No acute cardiopulmonary process.")


def _flagging(**sides) -> dict:
    labels = list(LABELS)
    return {"pathology": {"labels": labels, "probabilities": {l: (0.9 if l in sides else 0.05) for l in labels},
                          "thresholds": {l: 0.5 for l in labels}, "positives": sorted(sides), "tier": "demo",
                          "laterality": {f: s for f, s in sides.items() if s}}}


def test_global_negatives_found_and_qualified():
    from medsight.verify.checklist import parse_report
    from medsight.verify.coherence import find_contradictions, global_negatives, qualify

    facts = parse_report(ISSUE_REPORT)
    assert [(g.kind, g.section) for g in global_negatives(facts)] == [("lungs_clear", "FINDINGS"),
                                                                       ("no_acute", "IMPRESSION")]
    assert not find_contradictions(facts), "the issue's report is coherent as written"
    assert qualify("The lungs are clear.") == "The lungs are otherwise clear."
    assert qualify("No acute cardiopulmonary abnormality.") == "No other acute cardiopulmonary abnormality."
    assert qualify("Normal chest.") == "" and qualify("No acute bony abnormality.") is None
    assert qualify("No acute disease.", "cardiomegaly") is None, "a chronic finding stands beside 'no acute'"
    broken = parse_report("FINDINGS: The lungs are clear. Right consolidation.\nIMPRESSION: Normal chest.")
    assert {(c.finding, c.kind) for c in find_contradictions(broken)} == {("consolidation", "global_negative")}
    assert len(find_contradictions(broken)) == 2


def test_issue_report_edits_keep_it_coherent():
    """The issue's case: consolidation (negated) and a nodule (missed) flagged against a normal report."""
    from medsight.verify.checklist import parse_report
    from medsight.verify.coherence import find_contradictions

    result = verify_report(ISSUE_REPORT, _flagging(consolidation="right", nodule="left"))
    primaries = [e for e in result.edits if not e.applies_with]
    linked = [e for e in result.edits if e.applies_with]
    assert linked and all(set(e.applies_with) <= {p.id for p in primaries} for e in linked)
    for p in primaries:
        assert all(i in {e.id for e in linked} for i in p.linked_ids)
        one = apply_edits(ISSUE_REPORT, result.edits, [p.id])  # each primary alone is coherent
        assert not find_contradictions(parse_report(one)), one
    fixed = apply_edits(ISSUE_REPORT, result.edits, [p.id for p in primaries])
    facts = parse_report(fixed)
    assert not find_contradictions(facts), fixed
    assert {"consolidation", "nodule"} <= facts.positive("FINDINGS") and {"consolidation", "nodule"} <= \
        facts.positive("IMPRESSION"), fixed
    assert "otherwise clear" in fixed and "No other acute cardiopulmonary process" in fixed
    assert "No pleural effusion or pneumothorax." in fixed, "the other negations are kept"


def test_linked_edit_never_displaces_its_primary():
    from medsight.verify.edits import make_edit

    text = "FINDINGS: Lungs are clear without consolidation. IMPRESSION: Normal."
    primary = make_edit(text, 10, 48, "Right consolidation.", "p", "r")
    linked = make_edit(text, 10, 48, "Lungs are otherwise clear without consolidation.", "l", "r", minimal=False)
    primary.id, linked.id, linked.applies_with = "E1", "E2", ["E1"]
    assert apply_edits(text, [linked, primary], ["E1"]) == "FINDINGS: Right consolidation. IMPRESSION: Normal."
    assert apply_edits(text, [linked, primary], []) == text, "a linked edit alone is not applied"


@pytest.mark.parametrize("report_id", ["CXR2", "CXR5", "CXR7", "CXR10", "CXR12", "CXR13"])
def test_real_reports_stay_coherent_after_all_edits(report_id):
    """Real Indiana/OpenI reports with generated image findings (the evaluation CLI's procedure)."""
    from medsight.nlp.indiana import load_indiana_reports, report_text
    from medsight.verify.checklist import parse_report
    from medsight.verify.coherence import find_contradictions
    from training.evaluate_edit_coherence import analysis_with, flagged_findings

    report = next(r for r in load_indiana_reports(20) if r["id"] == report_id)
    text = report_text(report)
    facts = parse_report(text)
    flagged = flagged_findings(report_id, facts.positive(), seed=0)
    result = verify_report(text, analysis_with(flagged))
    fixed = apply_edits(text, result.edits, [e.id for e in result.edits])
    before = {c.finding for c in find_contradictions(facts)}
    after = {c.finding for c in find_contradictions(parse_report(fixed))}
    assert after <= before, (text, fixed)
    assert all(parse_report(fixed).status(f) == "present" for f in flagged), fixed

"""Report reading on real Indiana/OpenI sentences: hedges, conditions, negation scope, organ qualifiers, lexicon
gaps, findings outside the label set, and the MeSH evaluation that measures them.

Sentences marked with a report id are verbatim from that (even-id, development) report in torchxrayvision's
archive; `test_sentences_are_real` checks it. The others are the wording quoted in the product's issue.
"""

from __future__ import annotations

import pytest

from medsight.nlp import analyze_text
from medsight.nlp.indiana import load_indiana_reports, report_text


def statuses(text: str) -> dict[str, str]:
    return analyze_text(text, classify_conditions=False).finding_status()


REAL = {
    "CXR2688": "Findings may be secondary to pulmonary edema.",
    "CXR728": "The differential diagnosis includes round pneumonia and parenchymal mass.",
    "CXR1628": "Abnormal pulmonary opacities most suggestive of pulmonary edema, differential diagnosis includes "
               "infection and aspiration, clinical correlation recommended",
    "CXR1268": "If there is concern for fracture consider rib series.",
    "CXR398": "Please note that fractures may not be demonstrated and consider additional imaging as clinically "
              "warranted.",
    "CXR3878": "Consider followup PA and lateral chest x-XXXX in 4-6 weeks to ensure resolution and exclude an "
               "underlying mass.",
    "CXR956": "Stable mild cardiomegaly and increased lung vascularity.",
    "CXR28": "Stable pulmonary vascular congestion.",
    "CXR1100": "Pulmonary XXXX are engorged.",
    "CXR3214": "There is an marked interval increase in heart size.",
    "CXR1592": "Nodular densities consistent with chronic granulomatous disease.",
    "CXR1290": "There is a 22 x 14 mm calcified nodule in the left lower lobe.",
    "CXR1412": "Bony overlap in the lung apices could obscure a small pulmonary nodule.",
    "CXR44": "There is no focal air space opacity to suggest a pneumonia.",
    "CXR228": "Subcutaneous emphysema seen along the neck bilaterally, right lateral upper abdomen, and left chest.",
    "CXR216": "Considerations would include pericardial effusion or dilated cardiomyopathy.",
    "CXR3278": "The lateral most screw of the clavicular fixation XXXX is fractured.",
    "CXR58": "Mild scoliosis and degenerative changes of the thoracic spine noted.",
    "CXR132": "Tortuosity of the thoracic aorta.",
    "CXR314": "Low lung volumes.",
    "CXR596": "The right chest XXXX tip is visualized in the mid SVC.",
    "CXR580": "Atherosclerotic calcifications of the aortic XXXX are noted.",
    "CXR3692": "Lungs are expanded and clear airspace disease.",
    "CXR3362": "Heart size is upper limits of normal, pulmonary vascularity within normal limits.",
    "CXR1270": "Heart size and pulmonary vascular engorgement appear within limits of normal.",
}


def test_sentences_are_real():
    texts = {r["id"]: report_text(r) for r in load_indiana_reports() if r["id"] in REAL}
    for report_id, sentence in REAL.items():
        assert int(report_id[3:]) % 2 == 0, "development sentences come from the even-id half"
        assert sentence in texts[report_id], report_id


# ---------------------------------------------------------------- hedges across clause boundaries

@pytest.mark.parametrize("text, finding", [
    ("Abnormal opacity in the right lung base which may be compatible with mild pulmonary edema.", "edema"),
    (REAL["CXR2688"], "edema"),
    (REAL["CXR1628"], "edema"),
])
def test_hedge_survives_with_and_secondary_to(text, finding):
    assert statuses(text)[finding] == "uncertain"


def test_differential_diagnosis_is_not_an_assertion():
    found = statuses(REAL["CXR728"])
    assert found["pneumonia"] == "uncertain" and found["mass"] == "uncertain"
    # a differential still reports an abnormality
    assert not analyze_text(REAL["CXR728"], classify_conditions=False).reads_normal()


# ---------------------------------------------------------------- conditional / hypothetical

@pytest.mark.parametrize("key, finding", [
    ("CXR1268", "fracture"), ("CXR398", "fracture"), ("CXR3878", "mass"), ("CXR1412", "nodule"),
])
def test_conditional_mentions_are_not_present_and_do_not_make_a_report_abnormal(key, finding):
    result = analyze_text(REAL[key], classify_conditions=False)
    assert result.finding_status()[finding] == "uncertain"
    assert result.reads_normal()


def test_condition_does_not_leak_past_its_sentence():
    text = "Right lower lobe pneumonia. " + REAL["CXR1268"]
    found = statuses(text)
    assert found["pneumonia"] == "present" and found["fracture"] == "uncertain"


# ---------------------------------------------------------------- negation scope

def test_previously_seen_nodular_density_not_seen_today_is_not_a_present_nodule():
    text = ("The previously visualized nodular density in the right upper lobe is not well-seen on today's study.")
    assert statuses(text)["nodule"] == "negated"


def test_denial_governs_a_hedge_inside_it():
    assert statuses(REAL["CXR44"])["pneumonia"] == "negated"
    assert statuses("A small left effusion cannot be excluded.")["effusion"] == "uncertain"


def test_clear_airspace_disease_is_a_denial():
    assert statuses(REAL["CXR3692"])["consolidation"] == "negated"


# ---------------------------------------------------------------- wrong organ

def test_soft_tissue_edema_is_not_pulmonary_edema():
    found = statuses("There is soft tissue edema of the left chest wall.")
    assert "edema" not in found and found["soft_tissue_edema"] == "present"
    assert "edema" not in statuses("Edema of the soft tissues of the neck.")


def test_subcutaneous_emphysema_and_pericardial_effusion_are_not_the_lung_findings():
    found = statuses(REAL["CXR228"])
    assert "emphysema" not in found and found["subcutaneous_emphysema"] == "present"
    found = statuses(REAL["CXR216"])
    assert "effusion" not in found and found["pericardial_effusion"] == "uncertain"


def test_fractured_screw_is_a_device_not_a_bone_fracture():
    result = analyze_text(REAL["CXR3278"], classify_conditions=False)
    assert "fracture" not in result.finding_status()
    assert any(e["canonical"] == "device_fracture" and e["label"] == "DEVICE" for e in result.entities)
    assert statuses("Old right rib fractures.")["fracture"] == "present"


# ---------------------------------------------------------------- lexicon gaps

@pytest.mark.parametrize("key, finding", [
    ("CXR956", "edema"), ("CXR28", "edema"), ("CXR1100", "edema"), ("CXR3214", "cardiomegaly"),
])
def test_lexicon_gaps(key, finding):
    assert statuses(REAL[key])[finding] == "present"


def test_normal_vascularity_template_denies_edema():
    assert statuses(REAL["CXR1270"])["edema"] == "negated"


# ---------------------------------------------------------------- nodules and granulomas (documented choice)

def test_nodular_densities_of_granulomatous_disease_are_granulomas_not_nodules():
    found = statuses(REAL["CXR1592"])
    assert found["granuloma"] == "present"
    assert found["nodule"] == "uncertain"  # a nodular shape, not called a nodule


def test_calcified_nodule_is_a_nodule():
    assert statuses(REAL["CXR1290"]) == {"nodule": "present"}


# ---------------------------------------------------------------- "normal" is not claimed over other findings

@pytest.mark.parametrize("key, finding", [
    ("CXR58", "scoliosis"), ("CXR58", "degenerative_changes"), ("CXR132", "aortic_tortuosity"),
    ("CXR314", "low_lung_volumes"), ("CXR580", "aortic_atherosclerosis"),
])
def test_findings_outside_the_label_set(key, finding):
    result = analyze_text("FINDINGS: Normal heart size. Clear lungs. " + REAL[key], classify_conditions=False)
    assert result.finding_status()[finding] == "present"
    assert not result.reads_normal()


def test_device_makes_a_report_not_normal():
    result = analyze_text("FINDINGS: Clear lungs. " + REAL["CXR596"], classify_conditions=False)
    assert any(e["label"] == "DEVICE" and e["status"] == "present" for e in result.entities)
    assert not result.reads_normal()


def test_normal_report_reads_normal():
    text = ("FINDINGS: The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.\n"
            "IMPRESSION: No acute disease.")
    assert analyze_text(text, classify_conditions=False).reads_normal()
    # heart size at the upper limits of normal stays hedged but is not an abnormality of the report
    result = analyze_text(REAL["CXR3362"], classify_conditions=False)
    assert result.finding_status()["cardiomegaly"] == "uncertain" and result.reads_normal()

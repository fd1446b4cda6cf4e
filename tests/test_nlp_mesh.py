"""MeSH reference labels of the Indiana/OpenI reports and the evaluation CLI built on them (even-id half only)."""

from __future__ import annotations

import json

import pytest

from medsight.nlp.mesh import MESH_FINDINGS, MESH_MAPPING, heading, mesh_findings, mesh_indexed, mesh_normal
from training import evaluate_nlp_mesh as cli


def test_mapping_reads_headings_whatever_their_qualifiers():
    terms = ["Pulmonary Congestion/mild", "Opacity/lung/base/left", "Calcified Granuloma/lung/upper lobe/right",
             "Cardiomegaly/borderline", "Subcutaneous Emphysema/neck", "Pericardial Effusion"]
    assert heading(terms[1]) == "Opacity"
    assert mesh_findings(terms) == {"edema", "granuloma", "cardiomegaly"}
    assert mesh_normal(["normal"]) and not mesh_normal(["Spine/degenerative"])
    assert not mesh_indexed(["No Indexing"]) and not mesh_indexed([]) and mesh_indexed(["normal"])
    assert len(MESH_FINDINGS) == 13


def test_every_mapped_heading_occurs_in_the_development_reports():
    reports = cli.select_reports("even")
    seen = {heading(t).lower() for r in reports for t in r["mesh"]}
    for finding, headings in MESH_MAPPING.items():
        assert any(h.lower() in seen for h in headings), finding


def test_halves_split_by_id_parity_and_leave_out_the_hand_labelled_reports():
    even = cli.select_reports("even")
    labelled = {json.loads(line)["id"] for line in cli.LABELLED.read_text(encoding="utf-8").splitlines() if line}
    assert len(even) > 1500
    assert all(cli.report_number(r["id"]) % 2 == 0 for r in even)
    assert not labelled & {r["id"] for r in even}
    assert all("FINDINGS:" in r["text"] and "IMPRESSION:" in r["text"] for r in even)
    with pytest.raises(ValueError):
        cli.select_reports("all")


def test_odd_half_needs_explicit_confirmation_and_never_shows_errors(capsys):
    assert cli.main(["--half", "odd"]) == 2
    assert "reserved" in capsys.readouterr().err
    assert cli.main(["--half", "odd", "--independent-test", "--show-errors", "all"]) == 2


def test_evaluation_on_a_slice_of_the_even_half(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert cli.main(["--half", "even", "--limit", "80", "--repeat", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "micro" in printed and "normal reports" in printed
    metrics = json.loads(out.read_text(encoding="utf-8"))
    assert metrics["reports"] == 80
    assert set(metrics["strict"]["per_finding"]) == set(MESH_FINDINGS)
    micro = metrics["strict"]["micro"]
    assert micro["tp"] + micro["fn"] == sum(p["support"] for p in metrics["strict"]["per_finding"].values())
    assert metrics["lenient"]["micro"]["recall"] >= micro["recall"]
    assert all(e["text"] for e in metrics["errors"])


@pytest.mark.slow
def test_even_half_meets_the_targets():
    """Targets of the report-reading work, on the development half (strict)."""
    metrics = cli.evaluate(cli.select_reports("even"), keep_errors=False, repeat=1)
    strict = metrics["strict"]
    assert strict["micro"]["f1"] >= 0.93
    for finding, row in strict["per_finding"].items():
        if row["support"] >= 20:
            assert row["f1"] >= 0.85, finding
    assert metrics["normal_reports"]["precision"] >= 0.85
    assert metrics["normal_reports"]["recall"] >= 0.95

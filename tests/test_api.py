"""The local HTTP API (medsight.api): contract, tokens, limits, audit and History, against the pipeline itself."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient

from medsight import registry
from medsight.api import create_app
from medsight.auth import UserStore
from medsight.config import Settings, get_settings
from medsight.storage import SCHEMA_VERSION, History
from medsight.storage.database import _MIGRATIONS

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "models" / "samples"
CT = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
USER, OTHER = "tester", "colleague"
LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def api_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api") / "medsight-home"


@pytest.fixture(autouse=True)
def medsight_home(api_home, monkeypatch) -> Path:
    """One data directory for the module, so the models load once (the registry caches per directory)."""
    monkeypatch.setenv("MEDSIGHT_HOME", str(api_home))
    monkeypatch.setenv("MEDSIGHT_REFERENCE", "off")
    return api_home


@pytest.fixture(scope="module")
def settings(api_home) -> Settings:
    current = dataclasses.replace(get_settings(), home=api_home).ensure_dirs()
    users = UserStore(current.users_path)
    for name in (USER, OTHER):
        if users.get(name) is None:
            users.add(name, "correct-horse-battery-42", name=name.title())
    return current


@pytest.fixture(scope="module")
def api(settings):
    return create_app(settings)


@pytest.fixture(scope="module")
def client(api) -> TestClient:
    return TestClient(api, base_url=LOCAL)


@pytest.fixture(scope="module")
def token(api) -> str:
    return api.service.tokens.create(USER, "tests")[0]


@pytest.fixture(scope="module")
def auth(token) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _upload(path: Path, name: str | None = None) -> dict:
    return {"file": (name or path.name, path.read_bytes())}


@pytest.fixture(scope="module")
def analysed(client, auth) -> dict:
    """One analysis of a bundled sample with clinical context and the key maps, through the API."""
    response = client.post("/v1/analyze", headers=auth, files=_upload(SAMPLES / "consolidation_right_pa.png"),
                           data={"symptoms": "3 days of fever and productive cough", "maps": "key"})
    assert response.status_code == 200, response.text
    return response.json()


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]


def test_health_needs_no_token_and_shows_no_secrets(client, settings):
    response = client.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["api"] == "v1" and body["device"]
    slots = {m["slot"]: m for m in body["models"]}
    assert {"anomaly.detector", "pathology.classifier"} <= set(slots)
    assert all({"loaded", "tier", "device"} <= set(m) for m in slots.values())
    text = response.text
    assert str(settings.home) not in text and "sha256" not in text and "msk_" not in text


def test_models_lists_the_registry_with_provenance(client, auth, analysed):
    response = client.get("/v1/models", headers=auth)
    assert response.status_code == 200
    slots = {m["slot"]: m for m in response.json()["models"]}
    detector = slots["anomaly.detector"]
    assert detector["loaded"] and detector["tier"] == detector["provenance"]["tier"]
    assert detector["provenance"]["slot"] == "anomaly.detector"


def test_missing_wrong_and_revoked_tokens_get_401(client, api):
    secret, made = api.service.tokens.create(USER, "to revoke")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert api.service.tokens.revoke(USER, made.id)
    cases = {"missing_token": {}, "invalid_token": {"Authorization": "Bearer msk_not-a-real-token"},
             "revoked_token": {"Authorization": f"Bearer {secret}"}}
    for code, headers in cases.items():
        for call in (lambda: client.get("/v1/models", headers=headers),
                     lambda: client.post("/v1/analyze", headers=headers, files=_upload(SAMPLES / "normal_pa.png"))):
            response = call()
            assert response.status_code == 401 and _error(response)["code"] == code
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/models", headers={"Authorization": "Basic dGVzdGVyOng="}).status_code == 401
    failures = [a for a in api.service.history.audit_log(50) if a["event"] == "api_auth_failed"]
    assert {json.loads(a["detail"])["reason"] for a in failures} >= set(cases)
    assert secret not in json.dumps(failures), "a token never reaches the audit log"


def test_token_of_a_removed_account_is_refused(client, api, settings):
    UserStore(settings.users_path).add("leaver", "correct-horse-battery-42")
    secret, _ = api.service.tokens.create("leaver")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    users = UserStore(settings.users_path)
    config = users._read()
    del config["credentials"]["usernames"]["leaver"]
    users._write(config)
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401 and _error(response)["code"] == "account_removed"


def test_analysis_is_the_pipelines_and_is_stored_like_the_analyze_page(analysed, api, settings):
    """Same scores (1e-6), gate and withheld fields as run_analysis called the way views/analyze.py calls it."""
    from medsight.gate import check_study
    from medsight.ingest import load_study
    from medsight.pipeline import run_analysis

    study = load_study(SAMPLES / "consolidation_right_pa.png", filename="consolidation_right_pa.png",
                       max_bytes=settings.max_upload_mb * 2**20)
    page = run_analysis(study, "3 days of fever and productive cough",
                        detector=registry.load("anomaly.detector", settings=settings),
                        classifier=registry.load("pathology.classifier", settings=settings),
                        maps="key", gate=check_study(study).to_dict()).to_dict()
    assert analysed["study_id"] == study.study_id
    assert analysed["status"] == page["status"] == "COMPLETE"
    assert analysed["gate"] == page["gate"] and analysed["withheld"] == page["withheld"]
    assert analysed["anomaly"]["fused_score"] == pytest.approx(page["anomaly"]["fused_score"], abs=1e-6)
    for label, value in page["pathology"]["probabilities"].items():
        assert analysed["pathology"]["probabilities"][label] == pytest.approx(value, abs=1e-6)
    assert analysed["pathology"]["positives"] == page["pathology"]["positives"]
    assert set(analysed["maps"]) == set(page["maps"])
    assert analysed["summary"]["headline"] == page["summary"]["headline"]
    assert analysed["nlp"]["findings"] == page["nlp"]["findings"]

    record = api.service.history.get_record(USER, analysed["record_id"])
    assert record["kind"] == "analysis" and record["study_id"] == study.study_id
    assert record["title"].startswith("consolidation_right_pa.png — ")
    stored = dict(analysed)
    stored.pop("record_id")
    assert record["payload"] == json.loads(json.dumps(stored))
    assert api.service.history.load_study(USER, study.study_id) is not None
    assert api.service.history.get_record(OTHER, analysed["record_id"]) is None
    events = [(a["event"], json.loads(a["detail"])) for a in api.service.history.audit_log(200, user=USER)]
    assert ("analysis", {"study_id": study.study_id, "status": "COMPLETE", "via": "api"}) in events
    calls = [d for e, d in events if e == "api_call" and d["endpoint"] == "/v1/analyze" and d["status"] == 200]
    assert calls and all(d["method"] == "POST" and d["token_id"] for d in calls)


def test_non_chest_image_is_refused_with_the_gates_reason(client, auth, api):
    from medsight.gate import check_study
    from medsight.ingest import load_study

    gate = check_study(load_study(CT)).to_dict()
    response = client.post("/v1/analyze", headers=auth, files=_upload(CT))
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "input_gate_refused" and gate["reason"] in error["message"]
    assert error["gate"]["decision"] == "refused" and error["gate"]["code"] == gate["code"] == "modality"
    assert not api.service.history.list_records(USER, "analysis", text=error["study_id"])
    events = [(a["event"], json.loads(a["detail"])) for a in api.service.history.audit_log(20, user=USER)]
    assert ("analysis_refused", {"study_id": error["study_id"], "code": "modality", "via": "api"}) in events


def test_a_refusal_can_be_overridden_and_is_recorded(client, auth, api):
    response = client.post("/v1/analyze", headers=auth, files=_upload(CT), data={"override_gate": "true", "maps": "none"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gate"]["decision"] == "overridden" and body["gate"]["overridden_by"] == USER
    assert "gate_override" in [a["event"] for a in api.service.history.audit_log(20, user=USER)]


def test_unreadable_upload_is_a_clear_422(client, auth):
    response = client.post("/v1/analyze", headers=auth, files={"file": ("notes.png", b"not an image at all")})
    assert response.status_code == 422 and _error(response)["code"] == "unreadable_image"


def test_verify_and_pdf_of_a_stored_analysis(client, auth, analysed, api):
    report = ("FINDINGS: Right lower lobe consolidation. No pleural effusion.\n\n"
              "IMPRESSION: Right lower lobe pneumonia.")
    for key in (str(analysed["record_id"]), analysed["analysis_id"]):
        response = client.post("/v1/verify", headers=auth, json={"analysis_id": key, "report_text": report})
        assert response.status_code == 200, response.text
    body = response.json()
    assert body["analysis_record_id"] == analysed["record_id"] and body["report_text"] == report
    assert {"checklist", "discrepancies", "edits", "summary"} <= set(body)
    stored = api.service.history.get_record(USER, body["record_id"])
    assert stored["kind"] == "verification" and stored["study_id"] == analysed["study_id"]

    pdf = client.get(f"/v1/analyses/{analysed['analysis_id']}/report.pdf", headers=auth)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")

    other = {"Authorization": f"Bearer {api.service.tokens.create(OTHER)[0]}"}
    for response in (client.get(f"/v1/analyses/{analysed['record_id']}/report.pdf", headers=other),
                     client.post("/v1/verify", headers=other, json={"analysis_id": str(analysed["record_id"]),
                                                                    "report_text": report})):
        assert response.status_code == 404 and _error(response)["code"] == "analysis_not_found"
    empty = client.post("/v1/verify", headers=auth, json={"analysis_id": analysed["analysis_id"], "report_text": " "})
    assert empty.status_code == 422 and _error(empty)["code"] == "invalid_report"
    assert client.post("/v1/verify", headers=auth, json={"report_text": report}).status_code == 422


def test_oversized_upload_gets_413(settings, auth):
    small = TestClient(create_app(dataclasses.replace(settings, max_upload_mb=1)), base_url=LOCAL)
    big = os.urandom(2 * 2**20)
    response = small.post("/v1/analyze", headers=auth, files={"file": ("big.png", big)})
    assert response.status_code == 413 and _error(response)["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit is enforced while reading
        for start in range(0, len(big), 256 * 1024):
            yield big[start:start + 256 * 1024]

    streamed = small.post("/v1/analyze", headers={**auth, "Content-Type": "multipart/form-data; boundary=x"},
                          content=chunks())
    assert streamed.status_code == 413 and _error(streamed)["code"] == "request_too_large"


def test_rate_limit_answers_429_with_retry_after(settings, token):
    limited = TestClient(create_app(settings, rate_per_minute=1, burst=2), base_url=LOCAL)
    headers = {"Authorization": f"Bearer {token}"}
    assert [limited.get("/v1/models", headers=headers).status_code for _ in range(2)] == [200, 200]
    response = limited.get("/v1/models", headers=headers)
    assert response.status_code == 429 and _error(response)["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1
    assert limited.get("/v1/health").status_code == 200, "health is not charged to any token"


def test_token_bucket_refills():
    from medsight.api.limits import TokenBucket

    now = [0.0]
    bucket = TokenBucket(per_minute=60, burst=2, clock=lambda: now[0])
    assert [bucket.take("t"), bucket.take("t")] == [0.0, 0.0]
    assert bucket.take("t") == pytest.approx(1.0)
    assert bucket.take("other") == 0.0
    now[0] = 1.0
    assert bucket.take("t") == 0.0


def test_errors_are_json_without_stack_traces(client, auth, api, monkeypatch):
    assert _error(client.get("/v1/nothing-here"))["code"] == "not_found"
    assert _error(client.delete("/v1/health"))["code"] == "method_not_allowed"
    bad = client.post("/v1/analyze", headers=auth, files=_upload(SAMPLES / "normal_pa.png"), data={"maps": "bogus"})
    assert bad.status_code == 422 and _error(bad)["code"] == "invalid_request" and "maps" in _error(bad)["message"]
    wrong_host = TestClient(api).get("/v1/health")  # Host: testserver, as a DNS-rebinding page would send
    assert wrong_host.status_code == 421 and _error(wrong_host)["code"] == "host_not_allowed"

    def broken(**_):
        raise RuntimeError("secret patient name in the message")

    monkeypatch.setattr(api.service, "models", broken)
    response = TestClient(api, base_url=LOCAL, raise_server_exceptions=False).get("/v1/models", headers=auth)
    assert response.status_code == 500 and _error(response)["code"] == "internal_error"
    assert "patient" not in response.text and "Traceback" not in response.text


def test_openapi_is_served_locally_without_html_docs(client):
    spec = client.get("/v1/openapi.json")
    assert spec.status_code == 200
    assert {"/v1/health", "/v1/models", "/v1/analyze", "/v1/verify", "/v1/analyses/{analysis_id}/report.pdf"} <= set(
        spec.json()["paths"])
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def test_four_clients_at_once_get_their_own_results(client, auth, settings):
    from medsight.ingest import load_study

    names = ["normal_pa.png", "consolidation_right_pa.png", "nodule_pa.jpg", "effusion_left_pa.dcm"]
    detector = registry.load("anomaly.detector", settings=settings).model
    expected = {}
    for name in names:
        study = load_study(SAMPLES / name)
        expected[name] = (study.study_id, detector.score(study.image).fused_score)
    results: dict[str, dict] = {}

    def call(name: str) -> None:
        response = client.post("/v1/analyze", headers=auth, files=_upload(SAMPLES / name), data={"maps": "none"})
        results[name] = response.json() if response.status_code == 200 else {"error": response.text}

    threads = [threading.Thread(target=call, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert set(results) == set(names)
    for name, (study_id, score) in expected.items():
        assert results[name]["study_id"] == study_id, results[name]
        assert results[name]["anomaly"]["fused_score"] == pytest.approx(score, abs=1e-6)
    assert len({r["record_id"] for r in results.values()}) == 4


# --- the token store ---------------------------------------------------------------------------
def test_token_store_keeps_only_a_hash_and_revokes_per_user(tmp_path):
    history = History(tmp_path / "h.sqlite3")
    secret, made = history.api_tokens.create(USER, "  PACS   export ")
    assert secret.startswith("msk_") and len(secret) > 40 and made.label == "PACS export" and made.active
    raw = (tmp_path / "h.sqlite3").read_bytes() + (tmp_path / "h.sqlite3-wal").read_bytes()
    assert secret.encode() not in raw
    assert history.api_tokens.authenticate(secret).user == USER
    assert history.api_tokens.get(USER, made.id).last_used is not None
    assert history.api_tokens.authenticate(secret + "x") is None and history.api_tokens.authenticate(None) is None
    assert not history.api_tokens.revoke(OTHER, made.id), "a user revokes only their own tokens"
    assert history.api_tokens.revoke(USER, made.id) and not history.api_tokens.revoke(USER, made.id)
    assert history.api_tokens.authenticate(secret) is None and history.api_tokens.is_revoked(secret)
    assert [t.active for t in history.api_tokens.list(USER)] == [False] and history.api_tokens.list(OTHER) == []
    history.api_tokens.create(USER)
    assert history.api_tokens.revoke_all(USER) == 1


def test_a_version_1_history_gains_the_token_table_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[1])
    conn.execute("INSERT INTO audit (created, user, event, detail) VALUES ('2026-01-01', 'tester', 'login', '')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    history = History(path)
    assert history.schema_version == SCHEMA_VERSION  # every later migration runs too
    assert [a["event"] for a in history.audit_log()] == ["login"]
    assert history.api_tokens.authenticate(history.api_tokens.create(USER)[0]).user == USER


# --- the System-page panel ---------------------------------------------------------------------
def test_token_panel_creates_shows_once_and_revokes(settings):
    from streamlit.testing.v1 import AppTest

    def page():
        import streamlit as st

        from views._api_tokens import token_panel

        st.session_state["username"] = "panel-user"
        token_panel("panel-user")

    at = AppTest.from_function(page, default_timeout=60).run()
    assert not at.exception
    at.text_input[0].input("script")
    next(b for b in at.button if b.label == "Create token").click()
    at.run()
    shown = [c.value for c in at.code]
    assert len(shown) == 1 and shown[0].startswith("msk_")
    history = History(settings.db_path)
    assert history.api_tokens.authenticate(shown[0]).user == "panel-user"
    at.run()
    assert not at.code, "the secret is shown only once"
    at.selectbox(key="api_token_revoke_choice").select(at.selectbox(key="api_token_revoke_choice").options[0]).run()
    at.button(key="api_token_revoke").click()
    at.run()
    assert history.api_tokens.authenticate(shown[0]) is None
    assert {"api_token_created", "api_token_revoked"} <= {a["event"] for a in history.audit_log(20, user="panel-user")}


# --- a real server -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds} s")


@pytest.mark.slow
def test_standalone_server_on_loopback(settings, api_home):
    port = _free_port()
    history = History(settings.db_path)
    secret = history.api_tokens.create(USER, "real server")[0]
    env = {**os.environ, "MEDSIGHT_HOME": str(api_home), "MEDSIGHT_REFERENCE": "off", "TQDM_DISABLE": "1",
           "MEDSIGHT_MAX_UPLOAD_MB": "1"}
    process = subprocess.Popen([sys.executable, "-m", "medsight.api", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/v1/health", process)
        headers = {"Authorization": f"Bearer {secret}"}
        health = httpx.get(f"{base}/v1/health").json()
        assert health["status"] == "ok"
        done = httpx.post(f"{base}/v1/analyze", headers=headers, timeout=300,
                          files=_upload(SAMPLES / "normal_pa.png"), data={"maps": "key"})
        assert done.status_code == 200 and done.json()["status"] == "COMPLETE"
        refused = httpx.post(f"{base}/v1/analyze", headers=headers, files=_upload(CT), timeout=120)
        assert refused.status_code == 422 and _error(refused)["code"] == "input_gate_refused"
        bad = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer msk_wrong"})
        assert bad.status_code == 401 and _error(bad)["code"] == "invalid_token"
        big = httpx.post(f"{base}/v1/analyze", headers=headers, files={"file": ("big.png", os.urandom(2 * 2**20))})
        assert big.status_code == 413 and _error(big)["code"] == "request_too_large"
        preflight = httpx.options(f"{base}/v1/analyze", headers={"Origin": "http://evil.example",
                                                                "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert process.returncode is not None
    assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]

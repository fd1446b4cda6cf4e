"""History database: round trips, per-user isolation, WAL durability, concurrency."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from medsight.storage import SCHEMA_VERSION, History, decode_image, encode_image


@pytest.fixture
def history(tmp_path):
    db = History(tmp_path / "history.sqlite3")
    yield db
    db.close()


def test_record_round_trip_with_numpy_values(history):
    payload = {"fused_score": np.float32(0.731), "labels": ("effusion",), "counts": np.arange(3), "ok": np.bool_(True)}
    rid = history.save_record("alice", "analysis", "abc123", "Effusion suspected", payload)
    record = history.get_record("alice", rid)
    assert record["kind"] == "analysis" and record["study_id"] == "abc123" and record["title"] == "Effusion suspected"
    assert record["payload"] == {"fused_score": pytest.approx(0.731, abs=1e-6), "labels": ["effusion"],
                                 "counts": [0, 1, 2], "ok": True}


def test_users_never_see_each_others_records(history):
    mine = history.save_record("alice", "report", None, "Alice report", {"text": "clear lungs"})
    theirs = history.save_record("bob", "report", None, "Bob report", {"text": "clear lungs"})
    assert history.get_record("bob", mine) is None
    assert history.get_record("alice", theirs) is None
    assert [r["id"] for r in history.list_records("alice")] == [mine]
    assert [r["id"] for r in history.list_records("alice", text="clear")] == [mine]
    assert history.update_record("bob", mine, title="hijacked") is False
    assert history.get_record("alice", mine)["title"] == "Alice report"


def test_list_filters_by_kind_and_text(history):
    history.save_record("alice", "analysis", "s1", "Nodule right upper lobe", {"score": 0.9})
    history.save_record("alice", "chat", "s1", "Question about nodule", {"messages": []})
    history.save_record("alice", "verification", "s2", "Report check", {"note": "100% agreement"})
    assert [r["kind"] for r in history.list_records("alice", kind="chat")] == ["chat"]
    assert {r["kind"] for r in history.list_records("alice", text="NODULE")} == {"analysis", "chat"}
    assert [r["title"] for r in history.list_records("alice", text="100%")] == ["Report check"]
    assert history.list_records("alice", text="%") == history.list_records("alice", text="100%")  # % is literal
    assert len(history.list_records("alice", text="s2")) == 1  # study id is searched too
    assert len(history.list_records("alice", limit=2)) == 2
    with pytest.raises(ValueError):
        history.save_record("alice", "diagnosis", None, "x", {})


def test_update_record_replaces_payload(history):
    rid = history.save_record("alice", "chat", None, "Thread", {"messages": [{"role": "user", "text": "hi"}]})
    assert history.update_record("alice", rid, payload={"messages": [1, 2]}, title="Thread (2)")
    record = history.get_record("alice", rid)
    assert record["payload"] == {"messages": [1, 2]} and record["title"] == "Thread (2)"


def test_full_images_are_refused_in_records(history):
    with pytest.raises(TypeError, match="too large"):
        history.save_record("alice", "analysis", None, "x", {"heatmap": np.zeros((512, 512), np.float32)})


def test_wal_mode_full_sync_schema_and_integrity(history):
    assert history.journal_mode == "wal"
    assert history._read("PRAGMA synchronous")[0][0] == 2  # FULL
    assert history.schema_version == SCHEMA_VERSION
    assert history.integrity_check() == "ok"


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.sqlite3"
    History(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        History(path)


@pytest.mark.parametrize("how", ["sigkill", "os_exit"])
def test_committed_record_survives_a_killed_process(tmp_path, how):
    db = tmp_path / "crash.sqlite3"
    ending = "os.kill(os.getpid(), signal.SIGKILL)" if how == "sigkill" else "os._exit(3)"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from medsight.storage import History
        h = History({str(db)!r})
        rid = h.save_record("alice", "analysis", "s1", "Before the crash", {{"score": 0.42}})
        h.audit("alice", "analysis", {{"record_id": rid}})
        print(rid, flush=True)
        {ending}
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=os.getcwd())
    assert proc.returncode == (-signal.SIGKILL if how == "sigkill" else 3), proc.stderr
    rid = int(proc.stdout.strip())
    reopened = History(db)
    try:
        record = reopened.get_record("alice", rid)
        assert record is not None and record["payload"] == {"score": 0.42}
        assert reopened.audit_log(limit=1)[0]["event"] == "analysis"
        assert reopened.integrity_check() == "ok"
    finally:
        reopened.close()


def test_concurrent_writers_from_threads(history):
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                history.save_record("alice", "chat", None, f"t{n}-{i}", {"i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    records = history.list_records("alice", limit=1000)
    assert len(records) == 90 and len({r["id"] for r in records}) == 90


def test_image_blob_is_16_bit_lossless_enough():
    image = np.random.default_rng(1).random((300, 200)).astype(np.float32)
    back = decode_image(encode_image(image))
    assert back.shape == image.shape and back.dtype == np.float32
    assert np.abs(back - image).max() <= 0.5 / 65535 + 1e-7


def test_study_round_trip_reopens_the_same_pixels(history, tmp_path, monkeypatch):
    import medsight.storage.studies as studies_module

    from medsight.ingest import load_study
    from medsight.ingest.study import pixel_hash
    from medsight.synthetic import generate_phantom, write_png

    path = write_png(generate_phantom(seed=7, size=256, findings=("nodule",)), tmp_path / "phantom.png", bits=16)
    study = load_study(path)
    first = history.save_study("alice", study)
    encoded = []
    monkeypatch.setattr(studies_module, "encode_image", lambda image: encoded.append(1) or encode_image(image))
    assert history.save_study("alice", study) == first  # saving again keeps one copy
    assert not encoded, "a study already stored is not encoded again"
    listed = history.list_studies("alice")
    assert [s["study_id"] for s in listed] == [study.study_id]
    assert listed[0]["filename"] == "phantom.png" and listed[0]["thumbnail"].startswith(b"\x89PNG")
    image = history.load_study_image("alice", study.study_id)
    assert np.abs(image - study.image).max() <= 0.5 / 65535 + 1e-7
    reopened = history.load_study("alice", study.study_id)
    assert reopened.study_id == study.study_id == pixel_hash(reopened.image)
    assert reopened.source_format == study.source_format and reopened.original_size == study.original_size
    assert history.load_study_image("bob", study.study_id) is None
    assert history.load_study("bob", study.study_id) is None
    assert history.list_studies("bob") == []


def test_stores_share_one_database_and_work_on_their_own(tmp_path):
    from medsight.storage import AuditTrail, Database, LoginLockout, RecordStore

    database = Database(tmp_path / "stores.sqlite3")
    try:
        records, audit, lockout = RecordStore(database), AuditTrail(database), LoginLockout(database)
        rid = records.save("alice", "report", "s1", "Draft", {"text": "clear lungs"})
        audit.record("alice", "report_saved", {"record_id": rid})
        lockout.set("user:alice", 2, "2026-01-01T00:00:00+00:00", None)
        assert records.get("alice", rid)["payload"] == {"text": "clear lungs"}
        assert audit.recent(limit=1, user="alice")[0]["event"] == "report_saved"
        assert lockout.state("user:alice")["failed_count"] == 2
        lockout.clear("user:alice")
        assert lockout.state("user:alice")["failed_count"] == 0
    finally:
        database.close()
    history = History(tmp_path / "stores.sqlite3")  # History opens the same file and sees the same rows
    try:
        assert history.records.get("alice", rid) == history.get_record("alice", rid)
        assert history.audit_trail.recent(limit=1) == history.audit_log(limit=1)
        assert history.studies.database is history.records.database is history.lockout.database
    finally:
        history.close()


def test_import_needs_neither_streamlit_nor_the_imaging_stack():
    code = "import sys, medsight.storage; print(sorted({'streamlit', 'pydicom', 'medsight.ingest'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

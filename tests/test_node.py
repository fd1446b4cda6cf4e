"""The DICOM node: settings, C-ECHO/C-STORE against a real PACS (Orthanc), the receiver's reliability, the worklist."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medsight.config import get_settings
from medsight.node import (DicomNode, NodeSettings, RemoteNode, bind_warning, echo, parse_remotes, receiving_user,
                           send, send_results)
from medsight.node.inbox import Inbox
from medsight.storage import History
from medsight.storage.worklist import priority_band

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "models" / "samples"
ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
STORESCU = shutil.which("storescu")
PASSWORD = "correct-horse-battery-42"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 120.0, every: float = 0.2):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout:.0f} s")


def tiny_image(seed: int, size: int = 32, **extra) -> Dataset:
    """A small Secondary Capture instance with its own UIDs (the gate refuses it as too small; storage does not care)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "MARKER^PATIENT", "MARKER-ID", "OT"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.random.default_rng(seed).integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def encapsulated_pdf() -> Dataset:
    """An Encapsulated PDF instance (a non-image SOP class)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.MIMETypeOfEncapsulatedDocument = "DOC", "application/pdf"
    ds.PatientName, ds.PatientID = "MARKER^PATIENT", "MARKER-ID"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    return ds


def chest_dicom(tmp: Path, name: str, source: Path) -> Path:
    """A generated CR chest DICOM from a bundled PNG sample (a normal film)."""
    from medsight.ingest import load_study
    from medsight.synthetic.dicom import write_dicom

    return write_dicom(load_study(source).image, tmp / name, patient_name="MARKER^NORMAL", patient_id="MARKER-N")


@pytest.fixture
def node_factory(account):
    """Factory: a started `DicomNode` (port chosen by the system) on the test's data directory; stopped after."""
    started: list[DicomNode] = []

    def make(**overrides) -> DicomNode:
        settings = get_settings()
        history = History(settings.ensure_dirs().db_path)
        node = DicomNode(settings, history, NodeSettings.from_settings(settings, port=0, **overrides)).start()
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


def me(node: DicomNode) -> RemoteNode:
    return RemoteNode(node.node.ae_title, "127.0.0.1", node.port)


# --- settings -------------------------------------------------------------------------------------
def test_remote_nodes_parse_and_bad_ones_are_named():
    nodes = parse_remotes("PACS@10.0.0.5:104; ORTHANC@127.0.0.1:4242\nB@[::1]:11112")
    assert [str(n) for n in nodes] == ["PACS@10.0.0.5:104", "ORTHANC@127.0.0.1:4242", "B@::1:11112"]
    for bad in ("PACS@host", "@h:1", "WAYTOOLONGAETITLE17@h:1", "A@h:70000", "A\\B@h:1"):
        with pytest.raises(ValueError):
            parse_remotes(bad)


def test_receiver_binds_loopback_unless_changed_and_then_warns(monkeypatch):
    assert NodeSettings.from_settings(get_settings()).bind == "127.0.0.1"
    assert bind_warning("127.0.0.1") is None and bind_warning("localhost") is None and bind_warning("::1") is None
    monkeypatch.setenv("MEDSIGHT_NODE_BIND", "0.0.0.0")
    node = NodeSettings.from_settings(get_settings())
    assert node.warning and "other computers" in node.warning


def test_received_studies_belong_to_the_first_admin_unless_set(account, monkeypatch):
    from medsight.auth import UserStore

    settings = get_settings()
    UserStore(settings.users_path).add("zed", PASSWORD, roles=("radiologist", "admin"))
    UserStore(settings.users_path).add("abe", PASSWORD)  # not an administrator
    assert receiving_user(settings) == account[0]  # the first account is always an administrator
    monkeypatch.setenv("MEDSIGHT_NODE_USER", "abe")
    assert receiving_user(get_settings()) == "abe"
    monkeypatch.setenv("MEDSIGHT_NODE_USER", "nobody")
    with pytest.raises(ValueError, match="does not exist"):
        receiving_user(get_settings())


def test_a_version_2_history_gains_the_worklist_and_keeps_its_rows(tmp_path):
    import sqlite3

    from medsight.storage import database

    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path)
    for version in (1, 2):
        conn.executescript(database._MIGRATIONS[version])
    conn.execute("INSERT INTO audit (created, user, event) VALUES ('2025-01-01', 'a', 'login')")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    history = History(path)
    assert history.schema_version == 3 and history.audit_log()[0]["event"] == "login"
    assert history.worklist.entries("a") == []


def test_priority_never_makes_withheld_or_refused_studies_urgent():
    high = {"status": "COMPLETE", "risk": "High", "withheld": False}
    assert priority_band(analysis=high) == "high"
    assert priority_band(analysis=dict(high, status="WITHHELD")) == "withheld"
    assert priority_band(analysis=dict(high, status="PARTIAL", withheld=True)) == "withheld"
    assert priority_band(gate={"decision": "refused"}, analysis=high) == "refused"
    assert priority_band(analysis=None) == "waiting"
    assert priority_band(state="not_image") == "not_image"


# --- a real PACS: Orthanc on loopback --------------------------------------------------------------
@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """Orthanc on free loopback ports as the remote PACS; yields (RemoteNode, REST base URL)."""
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian: apt-get install orthanc); the PACS round trip needs it")
    folder = tmp_path_factory.mktemp("orthanc")
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "medsight-test", "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomServerEnabled": True,
        "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "DicomModalities": {"medsight": ["MEDSIGHT", "127.0.0.1", 11112]}, "DicomCheckCalledAet": False,
        "Plugins": [], "HttpServerEnabled": True, "StableAge": 1,
    }
    (folder / "config.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([ORTHANC, str(folder / "config.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"

    def up():
        try:
            with urllib.request.urlopen(f"{base}/system", timeout=2) as response:
                return response.status == 200
        except OSError:
            return process.poll() is not None and pytest.fail((folder / "orthanc.log").read_text()[-2000:])

    try:
        wait_for(up, timeout=60)
        yield RemoteNode("ORTHANC", "127.0.0.1", dicom_port), base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def rest(base: str, path: str):
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
        return json.loads(response.read())


def test_echo_and_send_generated_and_real_dicoms_to_orthanc(orthanc, tmp_path):
    remote, base = orthanc
    assert echo(remote).ok
    assert not echo(RemoteNode("NOBODY", "127.0.0.1", free_port())).ok
    generated = chest_dicom(tmp_path, "normal.dcm", SAMPLES / "normal_pa.png")
    objects = [generated, get_testdata_file("RG1_UNCI.dcm"), SAMPLES / "cardiomegaly_pa.dcm", encapsulated_pdf()]
    result = send(objects, remote)
    assert result.ok and result.sent == 4, result.to_dict()
    expected = {str(pydicom.dcmread(o).SOPInstanceUID) if not isinstance(o, Dataset) else str(o.SOPInstanceUID):
                None for o in objects}
    stored = {}
    for orthanc_id in rest(base, "/instances"):
        tags = rest(base, f"/instances/{orthanc_id}/simplified-tags")
        stored[tags["SOPInstanceUID"]] = tags
    assert set(expected) <= set(stored)
    for path in objects[:3]:
        original = pydicom.dcmread(path)
        tags = stored[str(original.SOPInstanceUID)]
        assert tags["StudyInstanceUID"] == original.StudyInstanceUID
        assert tags["SeriesInstanceUID"] == original.SeriesInstanceUID
        assert tags["SOPClassUID"] == original.SOPClassUID


# --- our receiver -----------------------------------------------------------------------------------
@pytest.mark.skipif(STORESCU is None, reason="dcmtk's storescu is not installed (Debian: apt-get install dcmtk)")
def test_storescu_studies_are_stored_deidentified_gated_and_listed(node_factory, tmp_path):
    node = node_factory()
    generated = chest_dicom(tmp_path, "normal.dcm", SAMPLES / "normal_pa.png")
    files = [str(generated), get_testdata_file("CT_small.dcm")]
    done = subprocess.run([STORESCU, "-aec", "MEDSIGHT", "127.0.0.1", str(node.port), *files],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    entries = wait_for(lambda: [e for e in node.history.worklist.entries(node.user) if e["state"] != "pending"]
                       if len(node.history.worklist.received()) == 2 and node.status()["waiting"] == 0 else None)
    bands = {e["modality"]: e["band"] for e in entries}
    assert bands == {"CR": "waiting", "CT": "refused"}  # gated: the CT is "not a chest film"
    assert next(e for e in entries if e["modality"] == "CT")["priority"] == "Not a chest film"
    stored = [pydicom.dcmread(p) for p in node.receiver.inbox.files()]
    assert len(stored) == 2 and not list(node.receiver.inbox.partial.iterdir())
    for ds in stored:  # de-identified before it was written (identifiers are not kept by default)
        assert ds.PatientIdentityRemoved == "YES" and "MARKER" not in str(ds.get("PatientName", ""))
        assert "MARKER" not in str(ds.get("PatientID", ""))
    uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    assert not uids & {str(ds.SOPInstanceUID) for ds in stored}
    assert all(".dcm" in p.name and not any(u in p.name for u in uids) for p in node.receiver.inbox.files())
    studies = node.history.list_studies(node.user)
    assert {s["modality"] for s in studies} == {"CR", "CT"}


def test_kept_identifiers_store_the_instance_exactly_as_sent(node_factory, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_STORE_IDENTIFIERS", "1")
    node = node_factory()
    ds = tiny_image(1)
    assert send([ds], me(node)).ok
    stored = pydicom.dcmread(next(node.receiver.inbox.files()))
    assert stored.PatientName == "MARKER^PATIENT" and stored.SOPInstanceUID == ds.SOPInstanceUID
    assert stored.PixelData == ds.PixelData


def test_non_image_objects_are_stored_and_listed_as_not_an_image(node_factory):
    node = node_factory()
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    sr.SOPInstanceUID, sr.StudyInstanceUID, sr.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    sr.Modality, sr.ValueType = "SR", "CONTAINER"
    assert send([encapsulated_pdf(), sr], me(node)).sent == 2
    entries = wait_for(lambda: [e for e in node.history.worklist.entries(node.user) if e["state"] == "not_image"]
                       if node.status()["waiting"] == 0 and node.status()["received"] == 2 else None)
    assert len(entries) == 2 and {e["priority"] for e in entries} == {"Not an image"}
    assert any("PDF" in e["title"] for e in entries) and any("Structured Report" in e["title"] for e in entries)
    assert len(list(node.receiver.inbox.files())) == 2


def test_duplicate_instances_are_acknowledged_and_ignored(node_factory):
    node = node_factory()
    ds = tiny_image(2)
    first, second = send([ds], me(node)), send([ds, ds], me(node))
    assert first.ok and second.ok and second.sent == 2
    assert len(list(node.receiver.inbox.files())) == 1 and len(node.history.worklist.received()) == 1
    assert node.status()["duplicates"] == 2


def test_100_instances_from_4_concurrent_associations_nothing_lost_or_doubled(node_factory):
    node = node_factory()
    batches = [[tiny_image(100 * b + i) for i in range(25)] for b in range(4)]
    results = [None] * 4

    def sender(index):
        results[index] = send(batches[index], me(node), local_ae_title=f"SENDER{index}")

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(r is not None and r.sent == 25 and r.failed == 0 for r in results), [r and r.message for r in results]
    assert time.perf_counter() - started < 90
    inbox = node.receiver.inbox
    keys = {inbox.instance_key(ds.SOPInstanceUID) for batch in batches for ds in batch}
    assert {p.stem for p in inbox.files()} == keys and len(keys) == 100
    rows = node.history.worklist.received()
    assert len(rows) == 100 and {r["instance_key"] for r in rows} == keys
    assert {r["calling_ae"] for r in rows} == {f"SENDER{i}" for i in range(4)}
    assert not list(inbox.partial.iterdir())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the aborting side's own thread
def test_an_aborted_association_leaves_no_half_written_file(node_factory):
    from pynetdicom import AE, evt

    node = node_factory()
    big = tiny_image(3, size=4096)  # 32 MB: 32 PDUs of the receiver's 1 MiB
    ae = AE(ae_title="ABORTER")
    ae.add_requested_context(big.SOPClassUID, ExplicitVRLittleEndian)
    ae.dimse_timeout = 10
    pdus = [0]
    abort_pdu = b"\x07\x00" + (4).to_bytes(4, "big") + b"\x00\x00\x00\x00"  # A-ABORT, service user

    def abort_part_way(event):  # runs in the sender's network thread, right after a PDU went out
        pdus[0] += 1
        if pdus[0] == 8:  # A-ASSOCIATE-RQ and 7 of the 32 data PDUs
            raw = event.assoc.dul.socket.socket
            raw.sendall(abort_pdu)
            raw.shutdown(socket.SHUT_RDWR)

    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDSIGHT",
                         evt_handlers=[(evt.EVT_PDU_SENT, abort_part_way)])
    assert assoc.is_established
    status = assoc.send_c_store(big)
    assert not status and pdus[0] < 16  # aborted with most of the data set unsent: no answer
    time.sleep(1.0)
    assert list(node.receiver.inbox.files()) == [] and not list(node.receiver.inbox.partial.iterdir())
    assert node.history.worklist.received() == []
    assert send([tiny_image(4)], me(node)).ok  # the receiver is still serving


@pytest.mark.slow  # four analyses on CPU
def test_auto_analysis_orders_the_worklist_high_risk_first(node_factory, tmp_path):
    node = node_factory(auto_analyse=True)
    normal = chest_dicom(tmp_path, "normal.dcm", SAMPLES / "normal_pa.png")
    films = [get_testdata_file("CT_small.dcm"), get_testdata_file("RG1_UNCI.dcm"), normal,
             SAMPLES / "cardiomegaly_pa.dcm"]
    assert send(films, me(node)).sent == 4

    def settled():
        entries = node.history.worklist.entries(node.user)
        done = [e for e in entries if e["analysis"] in ("done", "failed") or e["band"] == "refused"]
        return entries if len(done) == 4 else None

    entries = wait_for(settled, timeout=300)
    assert [e["priority"] for e in entries] == ["High risk", "No urgent finding", "Needs real weights",
                                                "Not a chest film"]
    assert [e["status"] for e in entries] == ["analysed", "analysed", "analysed", "new"]
    assert all(e["latency"] and e["latency"] > 0 for e in entries[:3])
    record = node.history.latest_payload(node.user, "analysis", entries[0]["study_id"])
    assert record["status"] == "COMPLETE" and record["via"] == "dicom"


def test_sent_and_reported_studies_show_their_status(node_factory):
    node = node_factory()
    send([SAMPLES / "effusion_left_pa.dcm"], me(node))
    entry = wait_for(lambda: [e for e in node.history.worklist.entries(node.user) if e["state"] == "image"])[0]
    assert entry["status"] == "new"
    node.history.save_record(node.user, "report", entry["study_id"], "Report", {"text": "x"})
    assert node.history.worklist.entries(node.user)[0]["status"] == "reported"
    result = send_results(node.history, node.user, entry["study_id"], [tiny_image(9)], me(node))
    assert result.ok and node.history.worklist.entries(node.user)[0]["status"] == "sent"
    assert node.history.audit_log(limit=1)[0]["event"] == "sent_to_pacs"
    assert node.history.worklist.entries("someone-else") == []


# --- a receiver process killed mid-transfer --------------------------------------------------------
def _start_receiver_process(port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    process = subprocess.Popen([sys.executable, "-m", "medsight.node", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert "listening on" in line, line + process.stderr.read()
    return process


@pytest.mark.slow
def test_kill_9_of_the_receiver_loses_no_acknowledged_instance(account):
    from pynetdicom import AE

    port = free_port()
    process = _start_receiver_process(port)
    acknowledged: list[str] = []
    stop = threading.Event()

    def keep_sending():
        ae = AE(ae_title="SENDER")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDSIGHT")
        index = 0
        while assoc.is_established and not stop.is_set():
            ds = tiny_image(1000 + index, size=256)
            index += 1
            status = assoc.send_c_store(ds)
            if status and status.Status == 0x0000:
                acknowledged.append(str(ds.SOPInstanceUID))

    sender = threading.Thread(target=keep_sending)
    sender.start()
    wait_for(lambda: len(acknowledged) >= 30, timeout=120)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    stop.set()
    sender.join(30)
    inbox = Inbox(get_settings().dicom_inbox)
    files = {p.stem: p for p in inbox.files()}
    for uid in acknowledged:
        assert inbox.instance_key(uid) in files
        assert pydicom.dcmread(files[inbox.instance_key(uid)]).PixelData  # complete, readable
    process = _start_receiver_process(port)  # recovery: leftovers swept, every stored file on the worklist
    try:
        assert not list(inbox.partial.iterdir())
        history = History(get_settings().db_path)
        keys = {r["instance_key"] for r in history.worklist.received()}
        assert {inbox.instance_key(uid) for uid in acknowledged} <= keys and set(files) <= keys
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.slow
def test_a_200_mb_instance_is_received(node_factory):
    node = node_factory()
    big = tiny_image(5, size=10_000)  # 10 000 x 10 000 x 16 bit = 200 MB of pixel data
    assert send([big], me(node)).ok
    stored = next(node.receiver.inbox.files())
    assert stored.stat().st_size > 200_000_000
    assert pydicom.dcmread(stored, stop_before_pixels=True).Rows == 10_000
    entry = wait_for(lambda: [e for e in node.history.worklist.received() if e["state"] != "pending"], timeout=300)[0]
    assert entry["state"] in ("image", "unreadable")  # too many pixels to display is said, not crashed on


# --- pages ------------------------------------------------------------------------------------------
def _analysed(history, user, path, payload):
    from medsight.ingest import load_study

    study = load_study(path)
    history.save_study(user, study)
    if payload is not None:
        history.save_record(user, "analysis", study.study_id, "analysis", payload)
    return study


def test_worklist_page_lists_most_urgent_first_and_opens_a_study_in_analyze(logged_in_app, account, tmp_path):
    history = History(get_settings().ensure_dirs().db_path)
    user = account[0]
    _analysed(history, user, SAMPLES / "normal_pa.png", {"status": "COMPLETE", "fusion": {"risk": {"level": "Low"}}})
    urgent = _analysed(history, user, SAMPLES / "cardiomegaly_pa.dcm",
                       {"status": "COMPLETE", "fusion": {"risk": {"level": "High"}}, "withheld": {}})
    _analysed(history, user, SAMPLES / "effusion_left_pa.dcm",
              {"status": "WITHHELD", "fusion": {"risk": {"level": "High"}}, "withheld": {"x": {}}})
    at = logged_in_app()
    at.switch_page("views/worklist.py").run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert "Worklist" in [t.value for t in at.title]
    titles = [m.value for m in at.markdown if m.value.startswith("**")]
    assert titles == ["**cardiomegaly_pa.dcm**", "**normal_pa.png**", "**effusion_left_pa.dcm**"]
    at.button(key=f"worklist_open_u{history.list_studies(user)[-2]['id']}").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["study"].study_id == urgent.study_id


def test_system_panel_starts_and_stops_the_receiver_and_echoes(account):
    from streamlit.testing.v1 import AppTest

    from medsight.auth import Authenticator

    settings = get_settings()
    login = Authenticator(settings, History(settings.ensure_dirs().db_path)).login(*account)
    at = AppTest.from_string("from views._dicom_node import dicom_node_panel\ndicom_node_panel('tester')",
                             default_timeout=60)
    at.session_state["username"] = account[0]
    at.session_state["auth_session"] = Authenticator(settings).start_session(login)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    port = free_port()
    at.number_input[0].set_value(port)
    at.button[0].click().run()  # the form's "Start receiver"
    assert not at.exception, [e.value for e in at.exception]
    assert any("Receiving as **MEDSIGHT**" in s.value for s in at.success)
    at.text_input(key="dicom_remote").input(f"MEDSIGHT@127.0.0.1:{port}").run()
    at.button(key="dicom_echo").click().run()
    assert any("answered in" in s.value for s in at.success)
    at.button(key="dicom_stop").click().run()
    assert not at.exception and any(b.label == "Start receiver" for b in at.button)


@pytest.mark.slow  # two analyses on CPU and a real PACS
def test_round_trip_receiver_worklist_analysis_results_into_orthanc(node_factory, orthanc, tmp_path):
    """Films → our receiver (storescu) → worklist → background analysis → SR + maps + PDF → Orthanc: the results
    are filed into the films' original studies and patients, refer to the original instances, carry the analysis'
    numbers (none for withheld outputs) and pass dciodvfy."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_raw

    from medsight.dicom_out import pdf_bytes_of
    from medsight.node.service import results_for_pacs

    if STORESCU is None or shutil.which("dciodvfy") is None:
        pytest.skip("dcmtk's storescu and dicom3tools' dciodvfy are needed (Debian: dcmtk, dicom3tools)")
    remote, base = orthanc
    node = node_factory(auto_analyse=True)
    films = [chest_dicom(tmp_path, "consolidation.dcm", SAMPLES / "consolidation_right_pa.png"),
             Path(get_testdata_file("RG1_UNCI.dcm"))]
    done = subprocess.run([STORESCU, "-aec", "MEDSIGHT", "127.0.0.1", str(node.port), *map(str, films)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    entries = wait_for(lambda: (lambda e: e if len(e) == 2 and all(x["analysis"] == "done" for x in e) else None)(
        node.history.worklist.entries(node.user)), timeout=300)
    originals = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f, stop_before_pixels=True) for f in films}
    for entry in entries:
        analysis = node.history.latest_payload(node.user, "analysis", entry["study_id"])
        objects = results_for_pacs(node.history, get_settings(), node.user, entry["study_id"])
        for ds in objects:
            path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace")
            assert [l for l in (run.stdout + run.stderr).splitlines() if l.startswith("Error")] == [], ds.Modality
        pdf = next(ds for ds in objects if ds.Modality == "DOC")  # the page's PDF, radiograph included
        document = pdfium.PdfDocument(pdf_bytes_of(pdf))
        assert any(obj.type == pdfium_raw.FPDF_PAGEOBJ_IMAGE for page in document for obj in page.get_objects())
        result = send_results(node.history, node.user, entry["study_id"], objects, remote)
        assert result.ok and result.sent == len(objects), result.to_dict()
        sr_uid = next(str(ds.SOPInstanceUID) for ds in objects if ds.Modality == "SR")
        found = [i for i in rest(base, "/instances")
                 if rest(base, f"/instances/{i}/simplified-tags")["SOPInstanceUID"] == sr_uid]
        with urllib.request.urlopen(f"{base}/instances/{found[0]}/file", timeout=10) as response:
            stored = pydicom.dcmread(io.BytesIO(response.read()))
        evidence = stored.CurrentRequestedProcedureEvidenceSequence[0]
        referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        original = originals[str(referenced)]  # refers to the instance as the PACS knows it
        assert stored.StudyInstanceUID == original.StudyInstanceUID
        assert stored.PatientID == original.PatientID and str(stored.PatientName) == str(original.PatientName)
        numbers = {}

        def walk(items):
            for item in items:
                if item.ValueType == "NUM":
                    numbers[item.ConceptNameCodeSequence[0].CodeMeaning] = float(
                        item.MeasuredValueSequence[0].NumericValue)
                walk(item.get("ContentSequence", []))

        walk(stored.ContentSequence)
        if analysis.get("anomaly"):
            assert numbers["Fused anomaly score"] == pytest.approx(analysis["anomaly"]["fused_score"], rel=1e-9)
        else:  # the real film on demo weights: withheld, so no number travels
            assert not any("anomaly" in name.lower() or "probability" in name.lower() for name in numbers)
    assert {e["status"] for e in node.history.worklist.entries(node.user)} == {"sent"}


def test_an_uploaded_study_the_gate_refused_is_listed_as_not_a_chest_film(tmp_path):
    from medsight.gate import check_study
    from medsight.ingest import load_study

    history = History(tmp_path / "history.sqlite3")
    ct, chest = load_study(get_testdata_file("CT_small.dcm")), load_study(SAMPLES / "normal_pa.png")
    for study in (ct, chest):
        history.save_study("drlee", study)
        history.studies.note_gate("drlee", study.study_id, check_study(study).to_dict())
    bands = {e["study_id"]: (e["band"], e["priority"]) for e in history.worklist.entries("drlee")}
    assert bands[ct.study_id] == ("refused", "Not a chest film")
    assert bands[chest.study_id] == ("waiting", "Awaiting analysis")
    assert history.load_study("drlee", ct.study_id).modality == "CT"  # the noted decision does not disturb reopening

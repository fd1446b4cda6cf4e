"""Reliability sweep without a browser: upload limits, decompression bombs, non-image files through the app's
own ingest path, lockout across a process restart, and the server configuration.

Covered elsewhere and not repeated here: every pydicom test file and mutated-bytes fuzzing
(tests/test_ingest.py, tests/test_ingest_fuzz.py); password hashing, lockout and expiry logic
(tests/test_auth.py); the shell's sign-in gate and idle expiry (tests/test_app.py); a killed writer
(tests/test_storage.py). The running server is checked in tests/e2e/test_server_reliability.py.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tomllib
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsight.config import Settings, get_settings
from medsight.ingest import IngestError, load_study

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ files


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width × height (the pixel data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is rewritten to declare width × height."""
    out = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(out, format="JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def noise_png(megabytes: float) -> bytes:
    """A valid greyscale PNG of random noise (incompressible) of about `megabytes`."""
    side = int((megabytes * 2**20) ** 0.5) + 8
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def deflated_dicom(padding_mb: int) -> bytes:
    """A small CR image in the Deflated Explicit VR Little Endian transfer syntax, padded with a private element
    of `padding_mb` MB of zeros: a few hundred kB on disk that inflate to `padding_mb` MB."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = uid.ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "CR"
    ds.set_pixel_data(np.zeros((64, 64), np.uint16), "MONOCHROME2", 12)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if padding_mb:
        ds.add_new(0x00091010, "OB", b"\x00" * (padding_mb * 2**20))
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --------------------------------------------------------------- ingest through the app's own path


@pytest.fixture
def app_ingest(monkeypatch):
    """`views._study.read_study` (what the study picker calls), with the messages it shows captured."""
    import streamlit as st

    from views import _shared as ui
    from views import _study as studies

    shown: list[str] = []
    monkeypatch.setattr(st, "error", lambda body, **kwargs: shown.append(str(body)))

    def report(exc, message="Something went wrong"):
        shown.append(f"UNEXPECTED {type(exc).__name__}: {message}")
        return "REF"

    monkeypatch.setattr(ui, "report_error", report)

    def ingest(data: bytes, name: str):
        return studies.read_study(data, name), shown

    return ingest


def test_upload_limit_of_the_server_and_of_ingest_agree():
    """Streamlit refuses uploads over server.maxUploadSize; ingest refuses files over max_upload_mb. One number."""
    assert CONFIG["server"]["maxUploadSize"] == Settings().max_upload_mb == get_settings().max_upload_mb


def test_study_picker_enforces_the_configured_size_limit(app_ingest, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_MAX_UPLOAD_MB", "1")
    data = noise_png(1.3)
    assert len(data) > 2**20
    study, shown = app_ingest(data, "big.png")
    assert study is None and len(shown) == 1 and "1 MB limit" in shown[0], shown
    # The same file is accepted once the limit allows it.
    monkeypatch.setenv("MEDSIGHT_MAX_UPLOAD_MB", "2")
    study, _ = app_ingest(data, "big.png")
    assert study is not None and study.image.shape[0] > 1000


@pytest.mark.parametrize("make, name", [(lambda: png_declaring(50_000, 50_000), "bomb.png"),
                                        (lambda: jpeg_declaring(50_000, 50_000), "bomb.jpg"),
                                        (lambda: png_declaring(20_000, 9_000), "too-large.png")],
                         ids=["png-50000x50000", "jpeg-50000x50000", "png-180-megapixels"])
def test_decompression_bombs_are_refused_before_decoding(app_ingest, make, name):
    data = make()
    assert len(data) < 2000  # a tiny file …
    tracemalloc.start()
    try:
        study, shown = app_ingest(data, name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # … refused with a clear message, without allocating the declared image.
    assert study is None and len(shown) == 1 and not shown[0].startswith("UNEXPECTED"), shown
    assert "decompression bomb" in shown[0] or "pixel limit" in shown[0], shown
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB allocated while refusing"


def test_deflated_dicom_bomb_is_refused_without_inflating_it():
    """Deflated DICOM is inflated whole by pydicom before anything is checked: 1 kB on disk per MB in memory,
    so a 200 MB upload could ask for ~200 GB. It must be refused while inflating, like the PNG/JPEG bombs."""
    clean = deflated_dicom(0)
    assert load_study(clean).image.shape == (64, 64)  # the transfer syntax itself is fine
    data = deflated_dicom(256)
    assert len(data) < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(IngestError, match="decompression bomb|expands|refused"):
            load_study(data, max_pixels=4_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 160 * 2**20, f"{peak / 2**20:.0f} MB allocated for a {len(data) / 1024:.0f} kB upload"


@pytest.mark.parametrize("data, name, words", [
    (b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nendobj\n%%EOF\n", "scan.png", "PDF"),
    (b"PK\x03\x04" + b"\x00" * 60, "study.dcm", "ZIP"),
    (b"#!/bin/sh\necho hello\n", "image.jpg", "text"),
    (b"\x7fELF\x02\x01\x01" + b"\x00" * 60, "xray", "program"),
    (b"<html><script>alert(1)</script></html>", "xray.png", "text"),
    (b"", "empty.dcm", "empty"),
], ids=["pdf-named-png", "zip-named-dcm", "script-named-jpg", "elf-no-extension", "html-named-png", "empty"])
def test_non_image_files_are_refused_with_a_clear_message(app_ingest, data, name, words):
    study, shown = app_ingest(data, name)
    assert study is None and len(shown) == 1 and not shown[0].startswith("UNEXPECTED"), shown
    assert words.lower() in shown[0].lower(), shown
    assert "<script>" not in shown[0]


# --------------------------------------------------------------------------- login across restarts

_ATTEMPT = """
import json, sys
from medsight.auth import Authenticator
result = Authenticator().login(sys.argv[1], sys.stdin.readline().rstrip("\\n"))
print(json.dumps({"ok": result.ok, "message": result.message}))
"""


def _login_in_new_process(username: str, password: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _ATTEMPT, username], input=password + "\n", capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_lockout_holds_across_process_restarts(account, monkeypatch):
    """Each attempt runs in its own process, as after a restart of the app: the count and the lockout persist."""
    monkeypatch.setenv("MEDSIGHT_LOCKOUT_ATTEMPTS", "3")
    user, password = account
    messages = [_login_in_new_process(user, f"wrong-password-{i}")["message"] for i in range(3)]
    assert "2 attempts left" in messages[0] and "1 attempt left" in messages[1]
    assert "Too many failed sign-in attempts" in messages[2]
    blocked = _login_in_new_process(user, password)
    assert not blocked["ok"] and "Too many failed sign-in attempts" in blocked["message"]
    # Stored state holds neither the tried passwords nor the real one.
    home = get_settings().home
    stored = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert b"wrong-password-" not in stored and password.encode() not in stored


def test_data_directory_and_history_are_private_to_the_account(medsight_home):
    """The History database holds radiographs, reports, chats and the audit trail; like users.yaml (0600) it must
    not be readable by other accounts on a shared machine, whatever the umask."""
    import stat

    from medsight.storage import History

    previous = os.umask(0o022)  # the usual default
    try:
        settings = get_settings().ensure_dirs()
        history = History(settings.db_path)
        history.audit("tester", "probe", {})
        history.close()
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [settings.home, *settings.home.glob("history.sqlite3*")]}
    exposed = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert not exposed, f"readable by other accounts: {exposed}"


# ---------------------------------------------------------------------------------- configuration


def _flatten(table: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def test_server_config_is_local_and_hardened():
    server = CONFIG["server"]
    assert server["address"] == "127.0.0.1" and CONFIG["browser"]["serverAddress"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True
    assert server.get("enableCORS", True) is True  # turning CORS off silently disables XSRF protection
    assert CONFIG["browser"]["gatherUsageStats"] is False
    assert CONFIG["client"]["showErrorDetails"] in ("none", False)
    assert 1 <= server["maxUploadSize"] <= 1024
    assert server.get("fileWatcherType") == "none" and server.get("runOnSave", False) is False


def test_every_config_value_is_accepted_by_the_installed_streamlit(tmp_path):
    """Load .streamlit/config.toml the way `streamlit run` does and compare each effective value."""
    from streamlit import config

    flat = _flatten(CONFIG)
    unknown = sorted(k for k in flat if k not in config._config_options_template)
    assert not unknown, f"options the installed Streamlit does not know: {unknown}"
    script = ("import json\nfrom streamlit import config\n"
              "options = config.get_config_options(force_reparse=True)\n"
              f"print(json.dumps({{k: options[k].value for k in {sorted(flat)!r}}}, default=str))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["HOME"] = str(tmp_path)  # no ~/.streamlit/config.toml of the machine in the way
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Error parsing config" not in done.stderr and "not a valid" not in done.stderr, done.stderr
    effective = json.loads(done.stdout.strip().splitlines()[-1])
    assert effective == flat


# ------------------------------------------------------------------------------ analysis and logs


def test_analysis_progress_never_passes_its_total():
    """The Analyze page feeds `index / total` to st.progress, which refuses values over 1.0: the last stage of
    every analysis used to crash the page after all the work was done."""
    import types

    from medsight.pipeline import run_analysis

    seen: list[tuple[str, int, int]] = []
    study = types.SimpleNamespace(image=None, study_id="no-image", to_dict=lambda: {"study_id": "no-image"})
    result = run_analysis(study, "", maps="none", progress=lambda name, i, n: seen.append((name, i, n)))
    assert seen and all(1 <= i <= n for _, i, n in seen), seen
    assert seen[-1][1] == seen[-1][2] == len(result.stages)


def test_server_log_handler_is_added_once(logged_in_app):
    """app.py runs again on every interaction; its log handler must not be added again each time (every server
    log line would otherwise repeat once per interaction since start)."""
    import logging

    at = logged_in_app()
    for _ in range(3):
        at.run()
    handlers = [h for h in logging.getLogger("medsight").handlers if type(h).__name__ == "_ServerLogHandler"]
    assert len(handlers) == 1, f"{len(handlers)} server log handlers after 5 runs"


def test_every_bundled_sample_opens_on_analyze_without_an_error(logged_in_app):
    """The shipped demo studies (PNG, JPEG and DICOM in several encodings) open on Analyze and show their
    window/level control when they keep modality values; no error box, no exception."""
    from medsight.samples import sample_studies

    samples = sample_studies()
    assert {s.path.suffix for s in samples} >= {".png", ".dcm"}
    at = logged_in_app()
    at.switch_page("views/analyze.py").run()
    at.radio(key="analyze_source").set_value("Sample study").run()
    for sample in samples:
        at.selectbox(key="analyze_sample").set_value(sample.title).run()
        assert not at.exception, (sample.title, [e.value for e in at.exception])
        assert not at.error, (sample.title, [e.value for e in at.error])
        study = at.session_state["study"]
        assert study.filename == sample.path.name
        if study.raw is not None:
            assert any(r.label == "Window" for r in at.radio), sample.title


@pytest.mark.slow
def test_demo_tier_of_every_model_the_page_passes_in_is_reported():
    """The Analyze page hands already-loaded models to the pipeline (as `registry.load(...).model`). Every model
    that ran at the demo tier must be named in the summary's `demo_models`, which drives the page's "Demo-tier
    models were used" warning and the PDF (honesty rule: the tier is always shown)."""
    import types

    import medsight.models.anomaly  # noqa: F401  (registers the slots)
    import medsight.models.pathology  # noqa: F401
    from medsight import registry
    from medsight.pipeline import run_analysis
    from medsight.synthetic import generate_phantom

    models = {}
    for slot in ("anomaly.detector", "pathology.classifier"):
        try:
            models[slot] = registry.load(slot)
        except registry.ModelUnavailable:
            continue
    if not models:
        pytest.skip("no anomaly or pathology model available in this build")
    image = generate_phantom(7, size=256, findings=("effusion",)).image
    study = types.SimpleNamespace(image=image, study_id="phantom-7", to_dict=lambda: {"study_id": "phantom-7"})
    result = run_analysis(study, "", detector=getattr(models.get("anomaly.detector"), "model", None),
                          classifier=getattr(models.get("pathology.classifier"), "model", None), maps="none")
    summary = result.to_dict()["summary"]
    ran_as_demo = sorted(slot for slot, loaded in models.items() if loaded.provenance.tier == "demo")
    assert summary["demo_models"] == ran_as_demo, summary.get("tiers")

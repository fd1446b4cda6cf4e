"""The running server under stress and attack: network exposure, XSRF, bad uploads, passwords in logs,
two users at once, a SIGKILL in the middle of an analysis, and a lockout that outlives a restart.

Only this machine's own addresses are ever contacted. Screenshots: test-artifacts/reliability-*.png.
"""

from __future__ import annotations

import io
import re
import socket
import sqlite3
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e2e_support import (AppServer, add_account, assert_clean, new_page, open_page, pick_sample, screenshot, sign_in,
                         wait_idle)
from medsight.storage import History

USER_A, PASSWORD_A = "reader-a", "password-of-reader-a-51"
USER_B, PASSWORD_B = "reader-b", "password-of-reader-b-62"
USER_C, PASSWORD_C = "reader-c", "password-of-reader-c-73"
WRONG_B = "typo-secret-of-b-8841"
WRONG_C = ["typo-secret-of-c-1190", "typo-secret-of-c-2291"]
SAMPLE_A, SAMPLE_A2, SAMPLE_B = "consolidation_right_pa.png", "cardiomegaly_pa.dcm", "nodule_pa.jpg"
LOCKOUT_ATTEMPTS = 2


# ---------------------------------------------------------------------------------------- network


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on `port`, from /proc/net/tcp and tcp6 (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            if len(raw) == 4:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _own_non_loopback_ipv4() -> set[str]:
    """This machine's own IPv4 addresses other than 127.0.0.0/8 (from the kernel's local routing table)."""
    addresses = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:]):
        if "/32 host LOCAL" in line:
            candidate = previous.strip().split()[-1]
            if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", candidate) and not candidate.startswith("127."):
                addresses.add(candidate)
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            if not info[4][0].startswith("127."):
                addresses.add(info[4][0])
    except OSError:
        pass
    return addresses


@pytest.mark.slow
def test_server_listens_on_loopback_only_and_keeps_xsrf(start_server):
    app = start_server(name="net")
    if Path("/proc/net/tcp").exists():
        assert _listening_addresses(app.port) == {"127.0.0.1"}
    for address in sorted(_own_non_loopback_ipv4()):  # only this machine's own addresses
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            with pytest.raises(OSError):
                sock.connect((address, app.port))

    # The health check (which the browser calls first) sets the XSRF cookie; an upload without the matching
    # header is refused.
    with urllib.request.urlopen(app.url + "/_stcore/health", timeout=30) as response:
        cookies = response.headers.get_all("Set-Cookie") or []
    xsrf = next((c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith("_streamlit_xsrf=")), None)
    assert xsrf, cookies
    upload = f"{app.url}/_stcore/upload_file/not-a-session/not-a-file"

    def put(headers: dict) -> int:
        request = urllib.request.Request(upload, data=b"x", method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert put({}) == 403
    assert put({"Cookie": f"_streamlit_xsrf={xsrf}"}) == 403
    assert put({"Cookie": f"_streamlit_xsrf={xsrf}", "X-Xsrftoken": "forged"}) == 403
    # With the matching token the request gets past the XSRF check (and fails for its unknown session).
    assert put({"Cookie": f"_streamlit_xsrf={xsrf}", "X-Xsrftoken": xsrf}) != 403


# ------------------------------------------------------------------------------- browser scenario


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _noise_png(megabytes: float) -> bytes:
    side = int((megabytes * 2**20) ** 0.5) + 8
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (side, side), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability")
    home = base / "home"
    home.mkdir()
    for user, password in ((USER_A, PASSWORD_A), (USER_B, PASSWORD_B), (USER_C, PASSWORD_C)):
        add_account(home, user, password, user.replace("-", " ").title())
    # Ingest refuses files over 1 MB; Streamlit's own upload limit is 2 MB: both limits are exercised.
    app = AppServer(home, base / "streamlit.log",
                    env={"MEDSIGHT_MAX_UPLOAD_MB": "1", "MEDSIGHT_LOCKOUT_ATTEMPTS": str(LOCKOUT_ATTEMPTS)},
                    args=["--server.maxUploadSize", "2"])
    try:
        yield app.start()
    finally:
        app.stop()


@pytest.fixture(scope="module")
def pages(browser, server):
    """Two browser contexts (two users at once), created on demand."""
    opened: dict[str, object] = {}

    def get(name: str):
        if name not in opened:
            opened[name] = new_page(browser)
            opened[name].goto(server.url)
        return opened[name]

    yield get
    for page in opened.values():
        page.context.close()


def _upload(page, name: str, data: bytes, mime: str = "image/png") -> None:
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}])
    wait_idle(page)


def _history_text(page) -> str:
    open_page(page, "History")
    return page.locator('[data-testid="stMain"]').text_content()


@pytest.mark.e2e
@pytest.mark.slow
def test_01_bad_uploads_get_clear_messages(server, pages):
    from playwright.sync_api import expect

    page = pages("a")
    sign_in(page, USER_A, PASSWORD_A)
    open_page(page, "Analyze")
    uploader = page.locator('[data-testid="stFileUploader"]')
    cases = [
        ("bomb.png", _png_declaring(50_000, 50_000), "image/png", "decompression bomb"),
        ("scan.png", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nendobj\n%%EOF\n", "image/png", "PDF"),
        ("notes.dcm", b"Patient report, no image here.\n" * 20, "application/dicom", "text"),
        ("large.png", _noise_png(1.4), "image/png", "1 MB limit"),  # the app's limit
    ]
    for name, data, mime, words in cases:
        _upload(page, name, data, mime)
        expect(page.locator('[data-testid="stAlertContentError"]').filter(has_text=words)).to_be_visible()
        assert_clean(page, name)
    screenshot(page, "reliability-01-bad-upload")
    # Over Streamlit's own limit the browser refuses the file before it reaches the server.
    _upload(page, "huge.png", _noise_png(2.5))
    expect(uploader.get_by_text(re.compile(r"File must be 2(\.0)? ?MB or smaller"))).to_be_visible()
    assert "Traceback" not in server.log_text()


@pytest.mark.e2e
@pytest.mark.slow
def test_02_failed_and_successful_sign_ins_leave_no_password_anywhere(server, pages):
    from playwright.sync_api import expect

    page = pages("b")
    sign_in(page, USER_B, WRONG_B)
    expect(page.get_by_text("Incorrect user name or password")).to_be_visible()
    sign_in(page, USER_B, PASSWORD_B)
    expect(page.locator(".medsight-footer")).to_be_visible()
    wait_idle(page)
    # Lock out a third account through the sign-in screen (checked again after the restart).
    page_c = new_page(page.context.browser)
    try:
        page_c.goto(server.url)
        for attempt in WRONG_C:
            sign_in(page_c, USER_C, attempt)
            wait_idle(page_c)
        expect(page_c.get_by_text("Too many failed sign-in attempts")).to_be_visible()
    finally:
        page_c.context.close()

    secrets = [PASSWORD_A, PASSWORD_B, PASSWORD_C, WRONG_B, *WRONG_C]
    log = server.log_text()
    stored = {p.name: p.read_bytes() for p in server.home.rglob("*") if p.is_file()}
    for secret in secrets:
        assert secret not in log, f"password in the server log: {secret}"
        for name, data in stored.items():
            assert secret.encode() not in data, f"password stored in {name}"
    history = History(server.home / "history.sqlite3")
    try:
        events = history.audit_log(limit=200)
    finally:
        history.close()
    assert {"login", "login_failed", "lockout"} <= {e["event"] for e in events}
    assert not any(s in str(e) for e in events for s in secrets)


@pytest.mark.e2e
@pytest.mark.slow
def test_03_two_users_at_once_see_only_their_own_data(server, pages):
    from playwright.sync_api import expect

    page_a, page_b = pages("a"), pages("b")
    open_page(page_a, "Analyze")
    pick_sample(page_a, SAMPLE_A)
    open_page(page_b, "Analyze")
    pick_sample(page_b, SAMPLE_B)
    # Each sidebar shows its own user and study.
    sidebar_a = page_a.locator('[data-testid="stSidebar"]').inner_text()
    sidebar_b = page_b.locator('[data-testid="stSidebar"]').inner_text()
    assert USER_A in sidebar_a and SAMPLE_A in sidebar_a and SAMPLE_B not in sidebar_a
    assert USER_B in sidebar_b and SAMPLE_B in sidebar_b and SAMPLE_A not in sidebar_b

    text_a, text_b = _history_text(page_a), _history_text(page_b)
    assert SAMPLE_A in text_a and SAMPLE_B not in text_a
    assert SAMPLE_B in text_b and SAMPLE_A not in text_b
    page_b.get_by_role("tab", name=re.compile("Studies")).click()
    expect(page_b.get_by_text(SAMPLE_B).first).to_be_visible()
    screenshot(page_b, "reliability-02-history-user-b")


@pytest.mark.e2e
@pytest.mark.slow
def test_04_kill_mid_analysis_then_restart(server, pages, browser):
    from playwright.sync_api import expect

    page = pages("a")
    open_page(page, "Analyze")
    pick_sample(page, SAMPLE_A)
    page.get_by_role("button", name="Analyze", exact=True).click()
    wait_idle(page)
    expect(page.get_by_text(re.compile(r"^(COMPLETE|PARTIAL) —")).first).to_be_visible()

    db = server.home / "history.sqlite3"
    history = History(db)
    try:
        committed = history.list_records(USER_A, kind="analysis")
    finally:
        history.close()
    assert len(committed) == 1

    # A second analysis; the server is killed while it runs.
    pick_sample(page, SAMPLE_A2)
    page.get_by_role("button", name="Analyze", exact=True).click()
    expect(page.get_by_text("Analysing…").first).to_be_visible()
    server.kill()
    screenshot(page, "reliability-03-killed")

    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    server.start()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    history = History(db)
    try:
        after = history.list_records(USER_A, kind="analysis")
        studies = {s["filename"] for s in history.list_studies(USER_A, limit=50)}
    finally:
        history.close()
    assert {r["id"] for r in committed} <= {r["id"] for r in after}
    assert SAMPLE_A in studies

    fresh = new_page(browser)
    try:
        fresh.goto(server.url)
        # The failures from before the crash still count in the new process: whether the first pause is still
        # running or is over (the next failure then starts a longer one), the right password is refused.
        sign_in(fresh, USER_C, WRONG_C[0])
        expect(fresh.get_by_text("Too many failed sign-in attempts")).to_be_visible()
        sign_in(fresh, USER_C, PASSWORD_C)
        wait_idle(fresh)
        expect(fresh.get_by_text("Too many failed sign-in attempts")).to_be_visible()
        sign_in(fresh, USER_A, PASSWORD_A)
        expect(fresh.locator(".medsight-footer")).to_be_visible()
        text = _history_text(fresh)
        assert committed[0]["title"][:40] in text
        assert_clean(fresh, "History after restart")
        screenshot(fresh, "reliability-04-history-after-restart")
    finally:
        fresh.context.close()
    log = server.log_text()
    assert "Traceback" not in log and "error ref" not in log, log[-3000:]

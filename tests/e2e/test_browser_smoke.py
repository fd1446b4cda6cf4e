"""Real-browser smoke test: start the app, sign in, open every page, sign out.

Uses Debian's Chromium (`apt-get install -y chromium`) driven by Playwright's Python API. Without a
Chromium the test is skipped with a message, except under CI=true, where it fails. Screenshots go to
`test-artifacts/` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
USER, PASSWORD = "e2e-radiologist", "smoke-test-password-7"
PAGES = [  # (navigation label, page title)
    ("Analyze", "Analyze"),
    ("Heatmap", "Heatmap"),
    ("Report Verification", "Report Verification"),
    ("Voice Entry", "Voice Entry"),
    ("Chat", "Chat"),
    ("History", "History"),
    ("System", "System"),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


def _chromium() -> str:
    for candidate in (os.environ.get("MEDSIGHT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    _unavailable("No Chromium found: install it with `apt-get install -y chromium` to run the browser smoke test")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"streamlit did not become healthy in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path):
    """The app on a free 127.0.0.1 port with its own data directory and one known account."""
    env = dict(os.environ, MEDSIGHT_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    add = subprocess.run([sys.executable, "-m", "medsight.users", "add", USER, "--display-name", "Smoke Test",
                          "--password-stdin"], input=PASSWORD + "\n", text=True, capture_output=True,
                         cwd=ROOT, env=env, timeout=120)
    assert add.returncode == 0, add.stderr
    port = _free_port()
    log = tmp_path / "streamlit.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def _assert_clean(page, name: str) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: exception shown"
    assert "Traceback" not in page.locator("body").inner_text(), f"{name}: traceback shown"


@pytest.mark.e2e
@pytest.mark.slow
def test_sign_in_and_visit_every_page(server):
    chromium = _chromium()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install playwright)")
    url, log = server
    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=120_000)  # pages import the model stack on first use; two shared cores

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(120_000)
            # First request after the server starts addresses a page URL directly: Streamlit then runs
            # the page file without app.py, so the page itself must send the user to sign in.
            page.goto(f"{url}/system")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            expect(page.get_by_role("heading", name="Models")).to_have_count(0)
            page.goto(url)
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "e2e-00-sign-in.png"), full_page=True)

            page.get_by_role("textbox", name="User name").fill(USER)
            page.get_by_role("textbox", name="Password").fill("wrong-password-0")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("Incorrect user name or password")).to_be_visible()

            page.get_by_role("textbox", name="User name").fill(USER)
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            sidebar = page.locator('[data-testid="stSidebar"]')
            expect(sidebar.get_by_text("Smoke Test")).to_be_visible()
            expect(page.locator(".medsight-footer")).to_be_visible(timeout=240_000)

            for index, (label, title) in enumerate(PAGES, start=1):
                sidebar.locator('[data-testid="stSidebarNavLink"]', has_text=label).first.click()
                expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible()
                # app.py writes the footer after the page has run to its end.
                expect(page.locator(".medsight-footer")).to_be_visible(timeout=240_000)
                _assert_clean(page, title)
                slug = title.lower().replace(" ", "-")
                page.screenshot(path=str(ARTIFACTS / f"e2e-{index:02d}-{slug}.png"), full_page=True)

            sidebar.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            expect(page.get_by_text("You have signed out.")).to_be_visible()
        finally:
            browser.close()

    server_log = log.read_text()
    assert "Traceback" not in server_log and "error ref" not in server_log, server_log[-3000:]

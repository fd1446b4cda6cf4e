"""Helpers of the real-browser tests: Chromium, the app server as a subprocess, sign-in and waiting.

The app runs as `streamlit run app.py` on a free 127.0.0.1 port with its own data directory
(`MEDSIGHT_HOME`) and accounts created through `python -m medsight.users`. Chromium is Debian's
(`apt-get install -y chromium`) driven by Playwright's Python API. Without a Chromium (or Playwright)
the browser tests are skipped with a message, except under CI=true, where they fail. Screenshots go to
`test-artifacts/` (git-ignored). Fixtures built on these live in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterable

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Pages import the model stack on first use, on two shared cores: generous, but bounded.
TIMEOUT_MS = 120_000
RUNNING = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]'


def unavailable(reason: str) -> None:
    """Skip the test with `reason`, or fail it when CI=true (the browser tests are required there)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


def find_chromium() -> str:
    """Path of a Chromium binary ($MEDSIGHT_CHROMIUM, /usr/bin/chromium, or on PATH); skips/fails when none."""
    for candidate in (os.environ.get("MEDSIGHT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    unavailable("No Chromium found: install it with `apt-get install -y chromium` to run the browser tests")
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def add_account(home: Path, username: str, password: str, display_name: str = "") -> None:
    """Create an account with the users CLI, the way an administrator would."""
    env = dict(os.environ, MEDSIGHT_HOME=str(home))
    args = [sys.executable, "-m", "medsight.users", "add", username, "--password-stdin"]
    if display_name:
        args[5:5] = ["--display-name", display_name]
    done = subprocess.run(args, input=password + "\n", text=True, capture_output=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


class AppServer:
    """`streamlit run app.py` as a subprocess on 127.0.0.1 with its own data directory.

    Args:
        home: the data directory (`MEDSIGHT_HOME`), kept across restarts.
        log: file receiving the server's stdout and stderr (appended to across restarts).
        env: extra environment variables.
        args: extra `streamlit run` options (e.g. ["--server.maxUploadSize", "2"]).
    """

    def __init__(self, home: Path, log: Path, env: dict[str, str] | None = None, args: Iterable[str] = ()):
        self.home, self.log = Path(home), Path(log)
        # No first-start copy or background build of the reference data unless a test asks for it.
        self.env = dict(os.environ, MEDSIGHT_HOME=str(self.home), PYTHONUNBUFFERED="1",
                        **{"MEDSIGHT_REFERENCE": "off", **(env or {})})
        self.args = list(args)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "AppServer":
        with open(self.log, "a") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                 "--server.port", str(self.port), "--server.headless", "true",
                 "--browser.gatherUsageStats", "false", *self.args],
                cwd=ROOT, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
            )
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"streamlit exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"streamlit did not become healthy in {timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush or close anything."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def new_page(browser, height: int = 900, **context_options):
    """A page in a fresh browser context (its own cookies, so its own Streamlit session)."""
    context = browser.new_context(viewport={"width": 1440, "height": height}, accept_downloads=True,
                                  **context_options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def wait_idle(page, timeout_ms: int = 240_000) -> None:
    """Wait until the app has finished its current script run (no running indicator, no stale elements)."""
    page.wait_for_timeout(400)  # let a rerun triggered by the last interaction begin
    page.wait_for_function(
        f"() => !document.querySelector('{RUNNING}') && !document.querySelector('[data-stale=\"true\"]')",
        timeout=timeout_ms, polling=250)


def sign_in(page, username: str, password: str) -> None:
    """Fill and submit the sign-in form (the page must show it)."""
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_role("textbox", name="User name").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def pick_sample(page, name: str) -> None:
    """Choose a bundled sample study in the study picker and wait until it is open."""
    from playwright.sync_api import expect

    page.get_by_text("Sample study", exact=True).first.click()
    wait_idle(page)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Sample study").first.click()
    page.get_by_role("option", name=name, exact=True).click()
    wait_idle(page)
    expect(page.get_by_text(name).first).to_be_visible()


def open_page(page, label: str, title: str | None = None) -> None:
    """Click a sidebar navigation link and wait until that page has run to its end."""
    from playwright.sync_api import expect

    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSidebarNavLink"]', has_text=label).first.click()
    expect(page.get_by_role("heading", name=title or label, exact=True).first).to_be_visible()
    expect(page.locator(".medsight-footer")).to_be_visible(timeout=240_000)  # app.py writes it after the page ran
    wait_idle(page)


def assert_clean(page, name: str) -> None:
    """No exception box and no traceback text on the page."""
    assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: exception shown"
    assert "Traceback" not in page.locator("body").inner_text(), f"{name}: traceback shown"


def screenshot(page, name: str, focus=None) -> Path:
    """Save test-artifacts/<name>.png. Streamlit scrolls inside its main container, so a full-page shot
    shows only the viewport: pass `focus` (a locator) to scroll what matters into view first."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if focus is not None and focus.count():
        focus.first.scroll_into_view_if_needed()
    page.screenshot(path=str(path), full_page=True)
    return path

"""Fixtures of the real-browser tests: one Chromium per run and app servers started per test.

Helpers (server class, sign-in, waiting, screenshots) are in e2e_support.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_support import ARTIFACTS, TIMEOUT_MS, AppServer, add_account, find_chromium, unavailable, CHROMIUM_ARGS


@pytest.fixture
def start_server(tmp_path):
    """Factory `start_server(accounts=[(user, password, display)], env=..., args=..., name=...)` → running AppServer.

    Every server started this way is stopped after the test.
    """
    servers: list[AppServer] = []

    def make(accounts=(), env=None, args=(), name="app", home: Path | None = None) -> AppServer:
        home = home or tmp_path / f"{name}-home"
        home.mkdir(parents=True, exist_ok=True)
        for account in accounts:
            add_account(home, *account)
        server = AppServer(home, tmp_path / f"{name}-streamlit.log", env=env, args=args)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return find_chromium()


@pytest.fixture(scope="session")
def browser(chromium_path):
    """One headless Debian Chromium for the whole run (each test opens its own contexts)."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install playwright)")
    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()




@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def screenshot_on_failure(request):
    """A failed browser step leaves a picture of what the page showed: test-artifacts/FAILED-<test>.png."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    for name in ("page", "fresh"):
        page = request.node.funcargs.get(name) if name in request.fixturenames else None
        if page is not None and not page.is_closed():
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)

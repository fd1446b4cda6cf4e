"""Real-browser smoke test: start the app, sign in, open every page, sign out.

Uses Debian's Chromium (`apt-get install -y chromium`) driven by Playwright's Python API (shared
fixtures in conftest.py). Without a Chromium the test is skipped with a message, except under CI=true,
where it fails. Screenshots go to `test-artifacts/` (git-ignored).
"""

from __future__ import annotations

import pytest

from e2e_support import ARTIFACTS, assert_clean

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


@pytest.fixture
def server(start_server):
    """The app on a free 127.0.0.1 port with its own data directory and one known account (fresh process)."""
    app = start_server(accounts=[(USER, PASSWORD, "Smoke Test")], name="smoke")
    return app.url, app.log


@pytest.mark.e2e
@pytest.mark.slow
def test_sign_in_and_visit_every_page(browser, server):
    from playwright.sync_api import expect

    url, log = server
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
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
            assert_clean(page, title)
            slug = title.lower().replace(" ", "-")
            page.screenshot(path=str(ARTIFACTS / f"e2e-{index:02d}-{slug}.png"), full_page=True)

        sidebar.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.get_by_text("You have signed out.")).to_be_visible()
    finally:
        context.close()

    server_log = log.read_text()
    assert "Traceback" not in server_log and "error ref" not in server_log, server_log[-3000:]

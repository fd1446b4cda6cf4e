"""Who may see what, in a real browser against the running app (issue: media, roles, framing, expiry).

- Every `/media/` address a signed-in radiologist's pages used (the radiograph, the maps, the PDF report) answers
  404 to a request without cookies, to another signed-in user's browser, and to the same browser after sign-out.
- Every response carries the framing, CSP, nosniff and referrer headers; a page of another local origin that
  frames the app gets nothing rendered; no page logs a console error under the CSP.
- A radiologist's System page has no admin parts and shows only their own audit events; an admin's has all.
- An idle session clears the screen by itself when it expires, with the right wording.
"""

from __future__ import annotations

import http.server
import re
import threading
import urllib.error
import urllib.request
from functools import partial
from urllib.parse import urlsplit

import pytest

from e2e_support import AppServer, add_account, new_page, open_page, pick_sample, sign_in, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN, ADMIN_PW = "sec-admin", "security-admin-pass-1"
READER, READER_PW = "sec-reader", "security-reader-pass-2"
SAMPLE = "consolidation_right_pa.png"
HEADERS = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    base = tmp_path_factory.mktemp("security")
    home = base / "home"
    home.mkdir()
    add_account(home, ADMIN, ADMIN_PW, "Security Admin")  # the first account is the administrator
    add_account(home, READER, READER_PW, "Security Reader")
    server = AppServer(home, base / "streamlit.log")
    try:
        yield server.start()
    finally:
        server.stop()


def _watch(page, url: str) -> dict:
    """Collect the app's responses (with headers), /media/ addresses and console errors of a page."""
    seen = {"responses": [], "media": set(), "errors": []}

    def on_response(response):
        if response.url.startswith(url):
            seen["responses"].append((response.url, response.all_headers()))
            if response.url[len(url):].startswith("/media/"):  # Streamlit's media, not /static/media fonts
                seen["media"].add(response.url.split("?")[0])

    page.on("response", on_response)
    page.on("console", lambda msg: seen["errors"].append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
    return seen


def _status_without_cookies(address: str) -> int:
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_media_is_served_only_to_the_signed_in_session_that_showed_it(browser, app):
    from playwright.sync_api import expect

    reader = new_page(browser, height=1600)
    other = new_page(browser)

    def only_the_reader_gets(addresses) -> None:
        """While the reader's page shows them: 200 for the reader, 404 for everyone else."""
        assert addresses
        for address in addresses:
            assert reader.request.get(address).status == 200, address
            assert _status_without_cookies(address) == 404, address  # any local account, no cookies
            assert other.request.get(address).status == 404, address  # another signed-in user, even an admin

    def shown_media() -> set[str]:
        """The /media/ addresses of the images the reader's page displays right now."""
        sources = reader.locator('[data-testid="stMain"] img').evaluate_all("els => els.map(e => e.src)")
        return {src for src in sources if src.startswith(f"{app.url}/media/")}

    try:
        seen = _watch(reader, app.url)
        other.goto(app.url)
        sign_in(other, ADMIN, ADMIN_PW)
        expect(other.locator(".medsight-footer")).to_be_visible(timeout=240_000)

        reader.goto(app.url)
        sign_in(reader, READER, READER_PW)
        expect(reader.locator(".medsight-footer")).to_be_visible(timeout=240_000)
        open_page(reader, "Analyze")
        pick_sample(reader, SAMPLE)  # opening a study saves it to History, with a thumbnail
        open_page(reader, "History")
        reader.get_by_role("tab", name=re.compile("Studies")).click()
        expect(reader.locator('[data-testid="stImage"] img').first).to_be_visible()
        history_media = shown_media()
        only_the_reader_gets(history_media)

        open_page(reader, "Analyze")
        reader.get_by_role("button", name="Analyze", exact=True).click()
        wait_idle(reader)
        expect(reader.get_by_text(re.compile(r"^(COMPLETE|PARTIAL) —")).first).to_be_visible()
        expect(reader.get_by_role("heading", name="Maps")).to_be_visible()
        assert not [u for u in seen["media"] if u.endswith(".pdf")], "the PDF must not exist before it is asked for"
        assert not reader.get_by_role("link", name=re.compile("PDF")).count()
        with reader.expect_download() as info:
            reader.get_by_role("button", name="Download PDF report").click()
        pdf_url = info.value.url
        assert "/media/" in pdf_url and info.value.path().read_bytes().startswith(b"%PDF-")
        analysis_media = shown_media() | {pdf_url}
        assert len(analysis_media) >= 3, analysis_media  # radiograph, at least one map, the PDF
        only_the_reader_gets(sorted(analysis_media))

        reader.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign out").click()
        expect(reader.get_by_role("heading", name="Sign in")).to_be_visible()
        for address in sorted(analysis_media):  # released at sign-out, at once
            assert reader.request.get(address).status == 404, address
        for address in sorted(seen["media"] | history_media):  # and nothing the session ever used is public
            assert _status_without_cookies(address) == 404, address

        assert not seen["errors"], seen["errors"]  # the CSP breaks nothing the app does
        for address, headers in seen["responses"]:
            for name, value in HEADERS.items():
                assert headers.get(name) == value, (address, name, headers.get(name))
            assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), address
    finally:
        reader.context.close()
        other.context.close()


def test_pages_of_another_origin_cannot_frame_the_app(browser, app, tmp_path):
    (tmp_path / "frame.html").write_text(
        f'<!doctype html><title>Foreign page</title><h1>Foreign page</h1>'
        f'<iframe id="victim" src="{app.url}/" width="900" height="600"></iframe>')
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    foreign = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=foreign.serve_forever, daemon=True)
    thread.start()
    page = new_page(browser)
    try:
        blocked = []
        page.on("console", lambda msg: blocked.append(msg.text) if "frame" in msg.text.lower() else None)
        answered = []
        page.on("response", lambda r: answered.append(r) if r.url.startswith(app.url) else None)
        page.goto(f"http://127.0.0.1:{foreign.server_address[1]}/frame.html")
        page.wait_for_timeout(5_000)
        assert answered, "the browser did ask the app for the framed page"
        frame = next(f for f in page.frames if f != page.main_frame)
        # Chromium replaces a refused frame with its own error page: no Streamlit app, no sign-in form.
        assert frame.locator('[data-testid="stApp"]').count() == 0
        assert frame.get_by_role("heading", name="Sign in").count() == 0
        assert any("frame" in text.lower() for text in blocked), blocked
    finally:
        page.context.close()
        foreign.shutdown()


def test_roles_on_the_system_page(browser, app):
    from playwright.sync_api import expect

    admin, reader = new_page(browser, height=2400), new_page(browser, height=2400)
    try:
        reader.goto(app.url)
        sign_in(reader, READER, READER_PW)
        expect(reader.locator(".medsight-footer")).to_be_visible(timeout=240_000)
        open_page(reader, "System")
        expect(reader.get_by_role("heading", name="Your audit trail")).to_be_visible()
        for admin_part in ("User management", "Audit log", "Settings", "Data directory", "Reference data"):
            expect(reader.get_by_role("heading", name=admin_part, exact=True)).to_have_count(0)
        trail = reader.locator('[data-testid="stDataFrame"]').last
        expect(trail).to_be_visible()

        admin.goto(app.url)
        sign_in(admin, ADMIN, ADMIN_PW)
        expect(admin.locator(".medsight-footer")).to_be_visible(timeout=240_000)
        open_page(admin, "System")
        for admin_part in ("User management", "Audit log", "Settings", "Data directory"):
            expect(admin.get_by_role("heading", name=admin_part, exact=True)).to_be_visible()
    finally:
        admin.context.close()
        reader.context.close()


PAGES = [("Analyze", "Analyze"), ("Heatmap", "Heatmap"), ("Report Verification", "Report Verification"),
         ("Voice Entry", "Voice Entry"), ("Chat", "Chat"), ("History", "History"), ("System", "System")]


def test_every_page_renders_under_the_csp_without_console_errors(browser, app):
    from playwright.sync_api import expect

    page = new_page(browser)
    try:
        seen = _watch(page, app.url)
        page.goto(app.url)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        sign_in(page, ADMIN, ADMIN_PW)  # the admin sees every part of every page
        expect(page.locator(".medsight-footer")).to_be_visible(timeout=240_000)
        open_page(page, "Analyze")
        pick_sample(page, SAMPLE)
        for label, title in PAGES:
            open_page(page, label, title)
        assert not seen["errors"], seen["errors"]
        assert {urlsplit(u).netloc for u, _ in seen["responses"]} == {urlsplit(app.url).netloc}
    finally:
        page.context.close()


def test_idle_expiry_clears_the_screen_by_itself(browser, tmp_path):
    from playwright.sync_api import expect

    home = tmp_path / "home"
    home.mkdir()
    add_account(home, READER, READER_PW, "Security Reader")
    server = AppServer(home, tmp_path / "streamlit.log", env={"MEDSIGHT_SESSION_MINUTES": "1"}).start()
    page = new_page(browser)
    try:
        page.goto(server.url)
        sign_in(page, READER, READER_PW)
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar.get_by_text("Security Reader")).to_be_visible(timeout=240_000)
        # No click from here on: the screen must clear when the minute is up.
        expect(page.get_by_text("Your session ended after 1 minute without activity")).to_be_visible(timeout=90_000)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.get_by_text("Security Reader")).to_have_count(0)
    finally:
        page.context.close()
        server.stop()

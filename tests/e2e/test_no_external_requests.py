"""Nothing leaves the machine: every request the browser makes over a whole session goes to the app itself.

One real-browser session signs in, analyses a bundled sample, opens every heatmap, verifies a report,
transcribes a recording, asks the chat, and opens History and System; `page.on("request")` records every
request (documents, scripts, fonts, icons, the favicon, images, websockets) and the test fails on any whose
origin is not the app's own. Blocked requests are answered locally so a missing asset cannot stall the page.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

from e2e_support import ROOT, assert_clean, new_page, open_page, pick_sample, sign_in, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "e2e-offline", "offline-test-password-5"
SAMPLE = "consolidation_right_pa.png"
AUDIO = ROOT / "tests" / "data" / "audio" / "radiology_1.wav"
LOCAL_SCHEMES = ("data", "blob", "about")
MAP_TITLES = ["Paper attention", "Anomaly map (deviation from normal)", "Spatial anomaly map (Grad-CAM)",
              "Pathology Grad-CAM"]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


@pytest.fixture(scope="module")
def small_setup_build(tmp_path_factory):
    """A small setup build (reference notes, 40 Indiana reports) so the chat and the case base are ready."""
    from medsight import reference

    target = tmp_path_factory.mktemp("reference")
    reference.build(target, indiana=40, phantoms=0, medline_files=[])
    return target


def test_every_request_stays_on_the_app_origin(browser, start_server, small_setup_build):
    from playwright.sync_api import expect

    server = start_server(accounts=[(USER, PASSWORD, "Offline Reader")], name="offline",
                          env={"MEDSIGHT_REFERENCE": "auto", "MEDSIGHT_REFERENCE_DIR": str(small_setup_build)})
    app_origin = _origin(server.url)
    page = new_page(browser, height=1400)
    requests: list[tuple[str, str, str]] = []  # (step, resource type, url)
    step = {"name": "start"}
    page.on("request", lambda r: requests.append((step["name"], r.resource_type, r.url)))
    page.on("websocket", lambda ws: requests.append((step["name"], "websocket", ws.url)))

    def foreign(url: str) -> bool:
        return urlsplit(url).scheme not in LOCAL_SCHEMES and _origin(url) != app_origin

    # Answer other origins locally (after recording them): an offline machine fails them anyway.
    page.context.route(lambda url: foreign(url), lambda route: route.abort())
    try:
        step["name"] = "sign in"
        page.goto(server.url)
        sign_in(page, USER, PASSWORD)
        expect(page.locator(".medsight-footer")).to_be_visible(timeout=240_000)
        wait_idle(page)

        step["name"] = "analyze a sample"
        open_page(page, "Analyze")
        pick_sample(page, SAMPLE)
        page.get_by_role("button", name="Analyze", exact=True).click()
        wait_idle(page)
        expect(page.get_by_text(re.compile(r"^(COMPLETE|PARTIAL) —")).first).to_be_visible()

        step["name"] = "heatmap"
        open_page(page, "Heatmap")
        radio = page.locator('[data-testid="stRadio"]').filter(has_text=MAP_TITLES[0])
        for title in MAP_TITLES:
            radio.get_by_text(title, exact=True).click()
            wait_idle(page)

        step["name"] = "verification"
        open_page(page, "Report Verification")
        report = next(s["report"] for s in json.loads((ROOT / "models" / "samples" / "manifest.json").read_text())
                      ["studies"] if s["file"] == SAMPLE)
        box = page.get_by_role("textbox", name="Report (FINDINGS and IMPRESSION)")
        box.fill(report)
        box.press("Control+Enter")
        wait_idle(page)
        page.get_by_role("button", name="Verify", exact=True).click()
        wait_idle(page)
        page.get_by_role("tab", name="Suggested edits").click()
        wait_idle(page)

        step["name"] = "chat"
        open_page(page, "Chat")
        chat = page.locator('[data-testid="stChatInput"] textarea')
        chat.fill("What does the anomaly score mean?")
        chat.press("Enter")
        wait_idle(page)
        expect(page.locator('[data-testid="stChatMessage"]').last).to_contain_text("Answered by")

        step["name"] = "voice"
        open_page(page, "Voice Entry")
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(AUDIO))
        wait_idle(page)
        page.get_by_role("button", name="Transcribe").click()
        wait_idle(page)

        for label in ("History", "System"):
            step["name"] = label.lower()
            open_page(page, label)
        assert_clean(page, "session")
    finally:
        page.context.close()

    assert requests, "no request was recorded"
    assert any(kind == "font" for _, kind, _ in requests), "fonts were loaded (from the app)"
    outside = sorted({f"{name}: {kind} {url}" for name, kind, url in requests if foreign(url)})
    assert not outside, "requests left the app's origin:\n" + "\n".join(outside)

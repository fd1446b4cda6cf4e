"""A radiologist's whole session in a real browser, step by step against one running app.

Sign in → analyse a sample PNG → open each heatmap → analyse a sample DICOM → verify a report with an
injected error and accept a suggested edit → transcribe an uploaded recording → ask the chat two
questions → download the PDF → sign out. The steps share one server and one browser page and run in
file order; each step is its own test so a broken page does not hide the state of the others.
Screenshots: test-artifacts/workflow-*.png.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from e2e_support import (ARTIFACTS, ROOT, AppServer, add_account, assert_clean, new_page, open_page, pick_sample,
                         screenshot, sign_in, wait_idle)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD, DISPLAY = "e2e-reader", "workflow-test-password-3", "Workflow Reader"
SAMPLES = json.loads((ROOT / "models" / "samples" / "manifest.json").read_text())["studies"]
PNG_SAMPLE = "consolidation_right_pa.png"
DICOM_SAMPLE = "effusion_left_pa.dcm"
AUDIO = ROOT / "tests" / "data" / "audio" / "radiology_1.wav"
MAP_TITLES = ["Paper attention", "Anomaly map (deviation from normal)", "Spatial anomaly map (Grad-CAM)",
              "Pathology Grad-CAM"]
QUESTIONS = ["What does the anomaly score mean?", "What is the differential for a pleural effusion?"]

# Seeds the knowledge corpus with the shipped reference notes only, so the first chat question does
# not build the full MEDLINE corpus (minutes of embedding) inside the test.
SEED_NOTES = ("from medsight.chat import KnowledgeBase, ingest_notes\n"
              "kb = KnowledgeBase()\ningest_notes(kb)\nprint(kb.count())\n")


def _manifest_report(name: str) -> str:
    return next(s["report"] for s in SAMPLES if s["file"] == name)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    base = tmp_path_factory.mktemp("workflow")
    home = base / "home"
    home.mkdir()
    add_account(home, USER, PASSWORD, DISPLAY)
    seed = subprocess.Popen([sys.executable, "-c", SEED_NOTES], cwd=ROOT, env=dict(os.environ, MEDSIGHT_HOME=str(home)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = AppServer(home, base / "streamlit.log")
    try:
        server.start()
        out, err = seed.communicate(timeout=300)
        assert seed.returncode == 0 and int(out.strip().splitlines()[-1]) > 0, err[-2000:]
        yield server
    finally:
        if seed.poll() is None:
            seed.kill()
        server.stop()


@pytest.fixture(scope="module")
def page(browser, app):
    page = new_page(browser, height=1600)  # tall, so screenshots show results below the fold
    yield page
    page.context.close()


def _analyse(page, name: str) -> None:
    from playwright.sync_api import expect

    open_page(page, "Analyze")
    pick_sample(page, name)
    page.get_by_role("button", name="Analyze", exact=True).click()
    wait_idle(page)
    expect(page.get_by_text(re.compile(r"^(COMPLETE|PARTIAL) —")).first).to_be_visible()
    expect(page.get_by_role("heading", name="Anomaly detector")).to_be_visible()
    expect(page.get_by_role("heading", name="Pathology classifier")).to_be_visible()
    expect(page.get_by_role("button", name="Download PDF report")).to_be_visible()
    assert_clean(page, f"Analyze {name}")


def test_01_sign_in(app, page):
    from playwright.sync_api import expect

    page.goto(app.url)
    sign_in(page, USER, PASSWORD)
    expect(page.locator('[data-testid="stSidebar"]').get_by_text(DISPLAY)).to_be_visible()
    expect(page.locator(".medsight-footer")).to_be_visible(timeout=240_000)
    wait_idle(page)
    screenshot(page, "workflow-01-signed-in")


def test_02_analyse_sample_png(page):
    _analyse(page, PNG_SAMPLE)
    # The sidebar names the study now open.
    assert PNG_SAMPLE in page.locator('[data-testid="stSidebar"]').inner_text()
    screenshot(page, "workflow-02-analysis-png", page.get_by_role("heading", name="Pathology classifier"))


def test_03_open_each_heatmap(page):
    open_page(page, "Heatmap")
    missing = []
    for index, title in enumerate(MAP_TITLES, start=1):
        # (The first radio of the page is the study source, inside the collapsed "Open another study".)
        page.locator('[data-testid="stRadio"]').filter(has_text=MAP_TITLES[0]).get_by_text(title, exact=True).click()
        wait_idle(page)
        assert_clean(page, f"Heatmap {title}")
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0, f"{title}: error shown"
        figure = page.locator('[data-testid="stMain"] [data-testid="stImage"]')
        screenshot(page, f"workflow-03-heatmap-{index}", figure)
        # The three-panel figure (original | heatmap | overlay) and its download are shown.
        if not (figure.count() and page.get_by_role("button", name="Three panels (PNG)").count()):
            notice = page.locator('[data-testid="stMain"] [data-testid="stAlert"]')
            missing.append(f"{title}: {notice.first.inner_text() if notice.count() else 'no figure'}")
    assert not missing, missing


def test_04_analyse_sample_dicom(page):
    from playwright.sync_api import expect

    _analyse(page, DICOM_SAMPLE)
    expect(page.get_by_text("Window / level")).to_be_visible()  # DICOM keeps its modality values
    screenshot(page, "workflow-04-analysis-dicom", page.get_by_role("heading", name="Pathology classifier"))


def test_05_verify_report_with_injected_error_and_accept_an_edit(page):
    from playwright.sync_api import expect

    open_page(page, "Report Verification")
    expect(page.get_by_text(DICOM_SAMPLE).first).to_be_visible()  # the study analysed on Analyze
    # The sample's own report with one injected error: the effusion is denied.
    report = _manifest_report(DICOM_SAMPLE)
    wrong = re.sub(r"(?m)^IMPRESSION:.*$", "IMPRESSION: No pleural effusion. No acute cardiopulmonary abnormality.",
                   report.replace("Moderate left pleural effusion with blunting of the left costophrenic angle.",
                                  "No pleural effusion."))
    assert wrong != report
    box = page.get_by_role("textbox", name="Report (FINDINGS and IMPRESSION)")
    box.fill(wrong)
    box.press("Control+Enter")
    wait_idle(page)
    page.get_by_role("button", name="Verify", exact=True).click()
    wait_idle(page)
    expect(page.get_by_text("Suggested edits").first).to_be_visible()
    metrics = page.locator('[data-testid="stMetric"]')
    discrepancies = int(metrics.filter(has_text="Discrepancies").locator('[data-testid="stMetricValue"]').inner_text())
    assert discrepancies >= 1, "the denied effusion was not flagged"
    page.get_by_role("tab", name="Discrepancies").click()
    screenshot(page, "workflow-05-verification")

    edits_tab = page.get_by_role("tab", name="Suggested edits")
    edits_tab.click()
    accept = page.locator('[data-testid="stCheckbox"]').filter(has_text="Accept").first
    expect(accept).to_be_visible()
    resets = []

    def back_to_edits(after: str) -> None:
        # Each interaction reruns the page; the user should still be looking at the suggested edits.
        if edits_tab.get_attribute("aria-selected") != "true":
            resets.append(after)
            screenshot(page, f"workflow-05b-tabs-reset-after-{after}")
            edits_tab.click()

    accept.click()
    wait_idle(page)
    back_to_edits("ticking-an-edit")
    page.get_by_role("button", name="Apply accepted edits").click()
    wait_idle(page)
    back_to_edits("applying")
    expect(page.get_by_text(re.compile(r"Applied [1-9]\d* edit\(s\) to the report editor"))).to_be_visible()
    edited = page.get_by_role("textbox", name="Report (FINDINGS and IMPRESSION)").input_value()
    # The accepted edit states the effusion instead of denying it.
    assert edited.count("No pleural effusion") < wrong.count("No pleural effusion"), edited
    assert re.search(r"pleural effusion", edited.replace("No pleural effusion", ""), re.I), edited
    assert_clean(page, "Report Verification")
    screenshot(page, "workflow-06-edit-accepted", page.get_by_text(re.compile(r"Applied [1-9]")))
    assert not resets, (f"the result tabs jumped back to Checklist after {' and '.join(resets)}, hiding the "
                        "suggested edits and their Apply button (see workflow-05b-*.png)")


def test_06_transcribe_an_uploaded_recording(page):
    from playwright.sync_api import expect

    open_page(page, "Voice Entry")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(AUDIO))
    wait_idle(page)
    page.get_by_role("button", name="Transcribe").click()
    wait_idle(page)
    transcript = page.get_by_role("textbox", name="Transcript (edit before sending)")
    expect(transcript).to_be_visible()
    text = transcript.input_value().lower()
    # tests/data/audio/transcripts.tsv: "There is a small right pleural effusion."
    assert "effusion" in text and "right" in text, text
    assert_clean(page, "Voice Entry")
    screenshot(page, "workflow-07-voice")


def test_07_ask_the_chat_two_questions(page):
    from playwright.sync_api import expect

    open_page(page, "Chat")
    messages = page.locator('[data-testid="stChatMessage"]')
    before = messages.count()
    for number, question in enumerate(QUESTIONS, start=1):
        box = page.locator('[data-testid="stChatInput"] textarea')
        box.fill(question)
        box.press("Enter")
        wait_idle(page)
        expect(messages).to_have_count(before + 2 * number)
        reply = messages.nth(before + 2 * number - 1).inner_text()
        assert "Answered by" in reply and len(reply) > 80, reply
        assert "Decision support" in reply or "not a diagnosis" in reply.lower(), reply
    assert QUESTIONS[0] in messages.nth(before).inner_text()
    assert_clean(page, "Chat")
    screenshot(page, "workflow-08-chat", messages.last)


def test_08_download_the_pdf_report(page):
    open_page(page, "Analyze")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download PDF report").click()
    download = info.value
    assert re.fullmatch(r"medsight_[0-9a-f]+\.pdf", download.suggested_filename), download.suggested_filename
    target = ARTIFACTS / "workflow-report.pdf"
    download.save_as(str(target))
    data = target.read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:] and len(data) > 20_000
    screenshot(page, "workflow-09-pdf", page.get_by_role("button", name="Download PDF report"))


def test_09_sign_out(app, page):
    from playwright.sync_api import expect

    page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    # The browser keeps nothing that signs it back in.
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "workflow-10-signed-out")
    log = app.log_text()
    assert "Traceback" not in log and "error ref" not in log, log[-3000:]
    assert PASSWORD not in log

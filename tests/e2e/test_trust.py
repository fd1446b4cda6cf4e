"""The trust rule in a real browser: no DEMO finding on a real chest film, a CT slice refused, samples unchanged.

Also: the symptoms typed for one patient's study are gone when another patient's study is opened.

Offline default (DEMO image weights). A real adult CR chest film (pydicom's RG1_UNCI) is analysed: the page says
what was withheld, why, and the one step to real weights, and shows no probability or score as a result. A CT
slice is refused by the input gate with its reason and an "Analyse anyway" button. A bundled sample still gets
its full analysis. Screenshots: test-artifacts/trust-*.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydicom.data
import pytest

from e2e_support import assert_clean, new_page, open_page, pick_sample, screenshot, sign_in, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "trust-reader", "trust-test-password-7"


def _upload(page, path: str) -> None:
    page.get_by_text("Upload a file", exact=True).first.click()
    wait_idle(page)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(path)
    wait_idle(page)
    page.get_by_text(Path(path).name).first.wait_for()


def test_real_film_withheld_ct_refused_sample_complete(browser, start_server):
    from playwright.sync_api import expect

    app = start_server(accounts=[(USER, PASSWORD, "Trust Reader")], name="trust")
    page = new_page(browser, height=1800)
    page.goto(app.url)
    sign_in(page, USER, PASSWORD)
    expect(page.locator(".medsight-footer")).to_be_visible(timeout=240_000)
    open_page(page, "Analyze")

    _upload(page, pydicom.data.get_testdata_file("RG1_UNCI.dcm"))
    expect(page.get_by_text("Input gate: accepted as a frontal chest radiograph")).to_be_visible()
    symptoms = page.get_by_label("Symptoms and clinical context (optional)")
    symptoms.fill("fever, productive cough for 4 days")
    symptoms.press("Control+Enter")
    wait_idle(page)
    page.get_by_role("button", name="Analyze", exact=True).click()
    wait_idle(page)
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text(re.compile(r"^WITHHELD —")).first).to_be_visible()
    expect(main.get_by_text("Withheld: anomaly score and anomaly maps").first).to_be_visible()
    expect(main.get_by_text("Withheld: pathology probabilities and Grad-CAM maps").first).to_be_visible()
    expect(main.get_by_text("python -m medsight.weights fetch").first).to_be_visible()
    expect(main.get_by_role("link", name="Install real weights on the System page")).to_be_visible()
    text = main.inner_text()
    assert not re.search(r"Risk: High|Consolidation 0\.\d|Fused anomaly score|Above operating threshold", text), text
    # The demo output exists only behind a fold, labelled as not meaningful.
    expect(main.get_by_text("Show the withheld output anyway (not meaningful for this image)")).to_be_visible()
    assert "not meaningful for this image: " not in text
    assert_clean(page, "real film")
    screenshot(page, "trust-01-real-film-withheld", main.get_by_text(re.compile(r"^WITHHELD —")))

    _upload(page, pydicom.data.get_testdata_file("CT_small.dcm"))
    expect(main.get_by_text(re.compile(r"Not analysed: .*CT")).first).to_be_visible()
    # Another patient's study: the first patient's symptoms do not carry over.
    assert symptoms.input_value() == ""
    expect(main.get_by_role("button", name="Analyse anyway")).to_be_visible()
    expect(main.get_by_role("button", name="Analyze", exact=True)).to_be_disabled()
    assert_clean(page, "CT slice")
    screenshot(page, "trust-02-ct-refused")

    pick_sample(page, "effusion_left_pa.dcm")
    page.get_by_role("button", name="Analyze", exact=True).click()
    wait_idle(page)
    expect(main.get_by_text(re.compile(r"^COMPLETE —")).first).to_be_visible()
    expect(main.get_by_text("Above operating threshold:").first).to_be_visible()
    assert "Withheld:" not in main.inner_text()
    assert_clean(page, "bundled sample")
    screenshot(page, "trust-03-sample-complete", main.get_by_role("heading", name="Pathology classifier"))
    main.get_by_text("Processing stages, timings and model tiers").click()
    wait_idle(page)
    screenshot(page, "trust-04-stages", main.get_by_text("Processing stages, timings and model tiers"))

    # Signing out leaves the sign-in screen only: no sidebar with the last user or study, no first-start notice.
    page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign out").click()
    wait_idle(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "trust-05-signed-out")
    expect(page.locator('[data-testid="stSidebar"]')).to_be_hidden()
    assert "trust-reader" not in page.locator("body").inner_text()
    assert "First start" not in page.locator("body").inner_text()
    page.context.close()

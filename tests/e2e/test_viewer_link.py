"""Linked viewers (the prior beside the current film) in headless Chromium, driven with a real mouse and keyboard.

Two viewers of one link group are mounted on a test page that loads the committed bundle under the app's own
Content-Security-Policy, the way Streamlit's components v2 mounts it (the module's default export with the packed
payload and a parent element). The films differ in size and pixel spacing: a wheel zoom on one gives the other
the same mm per screen pixel, a pan the same image point (as a fraction of width and height) at the centre, a
window drag the same window; with Link off nothing follows. A calibrated film beside an uncalibrated PNG links
the zoom relative to fit and not the window. In the running app, the prior and the current film of the Analyze
page's comparison block are linked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_support import ROOT, new_page, open_page, screenshot, sign_in, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ORIGIN = "http://viewer.test"
BUNDLE = ROOT / "components" / "viewer" / "build" / "viewer.js"
READY = '[data-testid="medsight-viewer"][data-ready="true"]'
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Linked viewers</title></head>
<body style="margin:0;background:#fff">
<div style="display:flex;gap:24px;padding:8px"><div id="left" style="width:620px"></div>
<div id="right" style="width:620px"></div></div>
<script type="module" src="/harness.js"></script></body></html>"""
HARNESS = """import mount from '/viewer.js';
window.__reported = { left: [], right: [] };
for (const side of ['left', 'right']) {
  const data = new Uint8Array(await (await fetch(`/${side}.bin`)).arrayBuffer());
  mount({ data, parentElement: document.getElementById(side),
          setStateValue: (key, value) => window.__reported[side].push(value) });
}
"""
# The live viewer on each side of the page.
SIDE = "[...window.__medsightViewers.values()].find((v) => v.parent.id === '{side}')"


def _message(study, link_group: str = "priors") -> bytes:
    from medsight.display import pack, viewer_payload

    return pack(viewer_payload(study, link_group=link_group))


def _dicom(tmp_path: Path, name: str, seed: int, size: int, rows: slice, spacing_mm: float):
    from medsight.ingest import load_study
    from medsight.synthetic import generate_phantom
    from medsight.synthetic.dicom import write_dicom

    image = generate_phantom(seed=seed, size=size).image[rows]
    path = write_dicom(image, tmp_path / name, bits_stored=14, pixel_spacing=(spacing_mm, spacing_mm),
                       windows=[(8000.0, 14000.0)])
    return load_study(path)


def _png(tmp_path: Path, name: str, seed: int, size: int):
    from medsight.ingest import load_study
    from medsight.synthetic import generate_phantom, write_png

    return load_study(write_png(generate_phantom(seed=seed, size=size), tmp_path / name))


def _open(browser, left: bytes, right: bytes):
    from medsight.webguard import content_security_policy

    page = new_page(browser, height=1000)
    page.errors = []
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    headers = {"Content-Security-Policy": content_security_policy(index_html="")}
    files = {"/": (PAGE.encode(), "text/html"), "/harness.js": (HARNESS.encode(), "text/javascript"),
             "/viewer.js": (BUNDLE.read_bytes(), "text/javascript"),
             "/left.bin": (left, "application/octet-stream"), "/right.bin": (right, "application/octet-stream")}

    def serve(route):
        path = "/" + route.request.url.removeprefix(ORIGIN).lstrip("/").split("?")[0]
        if path not in files:
            route.fulfill(status=404, body="not found")
            return
        body, mime = files[path]
        route.fulfill(status=200, body=body, content_type=mime, headers=headers)

    page.route(f"{ORIGIN}/**", serve)
    page.goto(ORIGIN + "/")
    page.wait_for_function(f"() => document.querySelectorAll('{READY}').length === 2", timeout=120_000)
    _settle(page)
    return page


def _on(page, side: str, expression: str):
    return page.evaluate(f"() => {{ const v = {SIDE.format(side=side)}; return {expression}; }}")


def _mark_priors_viewers(page) -> None:
    """Name the parents of the app's two linked viewers "left" and "right" (prior first), as on the test page."""
    page.evaluate("""() => { const linked = [...window.__medsightViewers.values()]
        .filter((v) => v.root.isConnected && v.header.link_group === 'priors');
        if (linked.length !== 2) throw new Error(`${linked.length} linked viewers`);
        linked[0].parent.id = 'left'; linked[1].parent.id = 'right'; }""")


def _settle(page) -> None:
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_timeout(200)


def _view(page, side: str) -> dict:
    """What the reader sees, measured on the screen: mm (or fraction of the fit) per screen pixel, the image point
    at the viewport's centre as a fraction of the film, and the window."""
    return _on(page, side, """(() => {
        const h = v.header, el = v.vpElement, s = v.scale();
        const c = v.viewport.canvasToWorld([el.clientWidth / 2, el.clientHeight / 2]);
        return { mmPerScreenPixel: h.calibration.calibrated ? h.calibration.col_mm / s : null,
                 ofFit: s / Math.min(el.clientWidth / h.columns, el.clientHeight / h.rows),
                 centre: [(c[0] + 0.5) / h.columns, (c[1] + 0.5) / h.rows], window: v.currentWindow(),
                 shown: Number(v.root.querySelector('[data-testid=viewer-window]').dataset.center),
                 invert: v.invert }; })()""")


def _screen(page, side: str, fx: float = 0.5, fy: float = 0.5) -> tuple[float, float]:
    """Page coordinates of a point of the viewport given as a fraction of its width and height."""
    box = page.locator(f"#{side} [data-testid=medsight-viewport]").bounding_box()
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def _drag(page, start: tuple[float, float], by: tuple[float, float], button: str = "left") -> None:
    page.mouse.move(*start)
    page.mouse.down(button=button)
    page.mouse.move(start[0] + by[0], start[1] + by[1], steps=10)
    page.mouse.up(button=button)
    _settle(page)


def _wheel(page, at: tuple[float, float], notches: int) -> None:
    """Turn the wheel over a point; Cornerstone zooms one step per wheel event (negative: in)."""
    page.mouse.move(*at)
    for _ in range(abs(notches)):
        page.mouse.wheel(0, -120 if notches < 0 else 120)
        page.wait_for_timeout(30)
    _settle(page)


def _link(page, side: str):
    return page.locator(f"#{side}").get_by_role("button", name="Link", exact=True)


@pytest.fixture
def calibrated_pair(tmp_path):
    """A 512 × 512 film at 0.2 mm and a 480 × 640 film at 0.15 mm of another patient."""
    prior = _dicom(tmp_path, "prior.dcm", seed=21, size=512, rows=slice(None), spacing_mm=0.2)
    current = _dicom(tmp_path, "current.dcm", seed=22, size=640, rows=slice(80, 560), spacing_mm=0.15)
    assert prior.image.shape == (512, 512) and current.image.shape == (480, 640)
    return _message(prior), _message(current)


def test_zoom_pan_and_window_follow_at_the_same_physical_scale(browser, calibrated_pair):
    from playwright.sync_api import expect

    page = _open(browser, *calibrated_pair)
    try:
        for side in ("left", "right"):
            expect(_link(page, side)).to_have_attribute("aria-pressed", "true")
            expect(page.locator(f"#{side} [data-testid=viewer-link]")).to_have_text(
                "Linked: zoom (same mm per screen pixel), pan, window")
        left, right = _view(page, "left"), _view(page, "right")
        assert right["mmPerScreenPixel"] == pytest.approx(left["mmPerScreenPixel"], rel=0.01), "opened linked"

        # Wheel zoom on the left film, off centre.
        _wheel(page, _screen(page, "left", 0.35, 0.4), -6)
        zoomed, follower = _view(page, "left"), _view(page, "right")
        assert zoomed["mmPerScreenPixel"] < left["mmPerScreenPixel"] * 0.9, (left, zoomed)
        assert follower["mmPerScreenPixel"] == pytest.approx(zoomed["mmPerScreenPixel"], rel=0.01)
        assert follower["centre"] == pytest.approx(zoomed["centre"], abs=0.005)

        # Pan the right film with the middle button: the left one shows the same point of its film at the centre.
        _drag(page, _screen(page, "right"), (-90, 60), button="middle")
        panned, follower = _view(page, "right"), _view(page, "left")
        assert panned["centre"] != pytest.approx(zoomed["centre"], abs=0.02)
        assert follower["centre"] == pytest.approx(panned["centre"], abs=0.005)
        assert follower["mmPerScreenPixel"] == pytest.approx(panned["mmPerScreenPixel"], rel=0.01)

        # Window by a left drag on the left film: same modality and photometric interpretation, so the window follows.
        before = _view(page, "right")["window"]
        _drag(page, _screen(page, "left"), (70, 40))
        lead, follower = _view(page, "left"), _view(page, "right")
        assert lead["window"]["width"] != pytest.approx(before["width"])
        assert follower["window"]["center"] == pytest.approx(lead["window"]["center"], rel=1e-6)
        assert follower["window"]["width"] == pytest.approx(lead["window"]["width"], rel=1e-6)
        assert follower["shown"] == pytest.approx(lead["window"]["center"])

        # Invert stays per film.
        page.locator("#left [data-testid=medsight-viewer]").focus()
        page.keyboard.press("i")
        _settle(page)
        assert _view(page, "left")["invert"] is True and _view(page, "right")["invert"] is False

        # No feedback loop: a change applied to the other film is not passed back.
        events = page.evaluate("""() => {
            const count = { left: 0, right: 0 };
            for (const side of ['left', 'right']) {
                const v = [...window.__medsightViewers.values()].find((x) => x.parent.id === side);
                v.vpElement.addEventListener('CORNERSTONE_CAMERA_MODIFIED', () => { count[side] += 1; });
            }
            window.__cameraEvents = count;
            const left = [...window.__medsightViewers.values()].find((x) => x.parent.id === 'left');
            left.viewport.setZoom(left.viewport.getZoom() * 1.25);
            left.viewport.render();
            return count; }""")
        _settle(page)
        assert page.evaluate("() => window.__cameraEvents") == events
        assert events["left"] == 1 and 1 <= events["right"] <= 2, events
        assert _view(page, "right")["mmPerScreenPixel"] == pytest.approx(_view(page, "left")["mmPerScreenPixel"], rel=0.01)
        screenshot(page, "viewer-linked", focus=page.locator("#left"))

        # Link off (on either film): nothing follows.
        _link(page, "right").click()
        for side in ("left", "right"):
            expect(_link(page, side)).to_have_attribute("aria-pressed", "false")
            expect(page.locator(f"#{side} [data-testid=viewer-link]")).to_have_text("Not linked")
        still = _view(page, "right")
        _wheel(page, _screen(page, "left"), 4)
        _drag(page, _screen(page, "left", 0.5, 0.5), (50, -40), button="middle")
        _drag(page, _screen(page, "left"), (-60, 30))
        moved, unmoved = _view(page, "left"), _view(page, "right")
        assert moved["mmPerScreenPixel"] != pytest.approx(still["mmPerScreenPixel"], rel=0.05)
        assert unmoved["mmPerScreenPixel"] == pytest.approx(still["mmPerScreenPixel"], rel=1e-9)
        assert unmoved["centre"] == pytest.approx(still["centre"], abs=1e-9)
        assert unmoved["window"] == pytest.approx(still["window"])

        # Linking again (key K) brings the other film to the view of the one where it was pressed.
        page.locator("#left [data-testid=medsight-viewer]").focus()
        page.keyboard.press("k")
        _settle(page)
        expect(_link(page, "right")).to_have_attribute("aria-pressed", "true")
        lead, follower = _view(page, "left"), _view(page, "right")
        assert follower["mmPerScreenPixel"] == pytest.approx(lead["mmPerScreenPixel"], rel=0.01)
        assert follower["centre"] == pytest.approx(lead["centre"], abs=0.005)
        assert follower["window"]["width"] == pytest.approx(lead["window"]["width"], rel=1e-6)

        # The keyboard help names the link.
        page.keyboard.press("?")
        expect(page.locator("#left .msv-help")).to_contain_text("link zoom, pan and window")
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_uncalibrated_film_links_zoom_relative_to_fit_and_not_the_window(browser, tmp_path):
    from playwright.sync_api import expect

    dicom = _dicom(tmp_path, "prior.dcm", seed=31, size=512, rows=slice(None), spacing_mm=0.2)
    png = _png(tmp_path, "current.png", seed=32, size=384)
    page = _open(browser, _message(dicom), _message(png))
    try:
        expect(page.locator("#right [data-testid=viewer-link]")).to_contain_text(
            "Linked: zoom (relative to fit), pan; window per film (different modality)")
        window_before = _view(page, "right")["window"]
        _wheel(page, _screen(page, "left", 0.6, 0.3), -6)
        lead, follower = _view(page, "left"), _view(page, "right")
        assert lead["ofFit"] > 1.2, lead
        assert follower["mmPerScreenPixel"] is None
        assert follower["ofFit"] == pytest.approx(lead["ofFit"], rel=0.01)
        assert follower["centre"] == pytest.approx(lead["centre"], abs=0.005)

        _drag(page, _screen(page, "left"), (70, 40))
        assert _view(page, "left")["window"] != pytest.approx(window_before)
        assert _view(page, "right")["window"] == pytest.approx(window_before), "DICOM values are not PNG grey levels"
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_a_viewer_without_a_group_has_no_link(browser, tmp_path):
    from medsight.display import pack, viewer_payload

    study = _png(tmp_path, "film.png", seed=41, size=256)
    page = _open(browser, pack(viewer_payload(study)), _message(study, link_group="other"))
    try:
        assert page.locator("#left").get_by_role("button", name="Link").count() == 0
        assert page.locator("#right").get_by_role("button", name="Link").count() == 1
        _wheel(page, _screen(page, "left"), -6)
        assert _view(page, "right")["ofFit"] == pytest.approx(1.0, rel=0.01)
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_the_prior_and_the_current_film_are_linked_on_the_analyze_page(browser, start_server, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    from medsight.config import get_settings
    from medsight.storage import History

    user, password = "link-reader", "link-test-password-7"
    secret = {"MEDSIGHT_DEID_SECRET_FILE": str(tmp_path / "deid-secret.key")}
    for name, value in secret.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "app-home"
    home.mkdir()
    # The prior is in the reader's History already (opened earlier); the current film of the same patient is
    # uploaded and analysed now.
    prior = _dicom(tmp_path, "prior.dcm", seed=51, size=512, rows=slice(None), spacing_mm=0.2)
    monkeypatch.setenv("MEDSIGHT_HOME", str(home))
    History(get_settings().db_path).save_study(user, prior)
    current = _dicom(tmp_path, "current.dcm", seed=51, size=640, rows=slice(80, 560), spacing_mm=0.15)
    app = start_server(accounts=[(user, password, "Link Reader")], env=secret, home=home)
    page = new_page(browser, height=1400)
    page.errors = []
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    try:
        page.goto(app.url)
        sign_in(page, user, password)
        open_page(page, "Analyze")
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files=[
            {"name": "current.dcm", "mimeType": "application/dicom",
             "buffer": (tmp_path / "current.dcm").read_bytes()}])
        wait_idle(page)
        page.get_by_role("button", name="Analyze", exact=True).click()
        wait_idle(page)
        expect(page.get_by_text("Prior: study of", exact=False).first).to_be_visible(timeout=240_000)
        page.wait_for_function(f"() => document.querySelectorAll('{READY}').length === 3", timeout=120_000)
        wait_idle(page)
        _mark_priors_viewers(page)
        assert page.locator(READY).get_by_role("button", name="Link", exact=True).count() == 2
        assert current.image.shape == (480, 640)

        page.locator("#left").scroll_into_view_if_needed()
        _wheel(page, _screen(page, "left", 0.4, 0.4), -6)
        lead, follower = _view(page, "left"), _view(page, "right")
        assert lead["mmPerScreenPixel"] == pytest.approx(0.2 / _on(page, "left", "v.scale()"))
        assert follower["mmPerScreenPixel"] == pytest.approx(lead["mmPerScreenPixel"], rel=0.01)
        assert follower["centre"] == pytest.approx(lead["centre"], abs=0.005)
        # A prior reopened from History keeps only its displayed grey levels (not its modality values): a window
        # of the current film means nothing there, so the window stays per film, and the viewers say so.
        for side in ("left", "right"):
            expect(page.locator(f"#{side} [data-testid=viewer-link]")).to_contain_text(
                "Linked: zoom (same mm per screen pixel), pan; window per film")
        before = _view(page, "left")["window"]
        assert before == pytest.approx({"center": 32767.5, "width": 65536.0}), "the prior opens as it was displayed"
        _drag(page, _screen(page, "right"), (60, 30))
        assert _view(page, "right")["window"] != pytest.approx(before)
        assert _view(page, "left")["window"] == pytest.approx(before)
        screenshot(page, "viewer-linked-priors", focus=page.locator("#left"))
        wait_idle(page)
        assert not page.errors, page.errors
    finally:
        page.context.close()

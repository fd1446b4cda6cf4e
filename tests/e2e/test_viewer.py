"""The reading-room viewer in the running app, driven with a real mouse and keyboard in Chromium.

Window/level by drag, wheel zoom, pan, invert, a calibrated length on a DICOM with a known PixelSpacing, an
uncalibrated length on a PNG, and a map layer that stays on the image's pixels after zooming; no console errors.
The renderer that ran is written to test-artifacts/viewer-renderer.txt (on this machine's software WebGL the
viewer uses Cornerstone's CPU path).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from e2e_support import ARTIFACTS, new_page, open_page, pick_sample, screenshot, sign_in, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "viewer-reader", "viewer-test-password-5"
READY = '[data-testid="medsight-viewer"][data-ready="true"]'
SPACING_MM = 0.2
LIVE = "[...window.__medsightViewers.values()].find((v) => v.root.isConnected)"


@pytest.fixture
def page(browser, start_server):
    from playwright.sync_api import expect

    app = start_server(accounts=[(USER, PASSWORD, "Viewer Reader")], name="viewer")
    page = new_page(browser, height=1400)
    page.errors = []
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(app.url)
    sign_in(page, USER, PASSWORD)
    expect(page.locator(".medsight-footer")).to_be_visible(timeout=240_000)
    yield page
    page.context.close()


def _viewer(page, expression: str):
    return page.evaluate(f"() => {{ const v = {LIVE}; return {expression}; }}")


def _settle(page) -> None:
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_timeout(150)


def _screen(page, col: float, row: float) -> tuple[float, float]:
    """Page coordinates of an image pixel."""
    box = page.locator('[data-testid="medsight-viewport"]').bounding_box()
    x, y = _viewer(page, f"v.viewport.worldToCanvas([{col}, {row}, 0])")
    return box["x"] + x, box["y"] + y


def _upload(page, name: str, data: bytes, mime: str) -> None:
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}])
    wait_idle(page)
    page.wait_for_selector(READY, timeout=120_000)
    wait_idle(page)


def _draw_length(page, a: tuple[float, float], b: tuple[float, float]) -> dict:
    page.locator(READY).get_by_role("button", name="Length", exact=True).click()
    (x0, y0), (x1, y1) = _screen(page, *a), _screen(page, *b)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=12)
    page.mouse.up()
    _settle(page)
    measurements = _viewer(page, "v.measurements()")
    assert len(measurements) == 1, measurements
    return measurements[0]


def _record_renderer(page) -> str:
    renderer = _viewer(page, "v.renderer.renderer + ' | WebGL: ' + (v.renderer.glRenderer || 'none')")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "viewer-renderer.txt").write_text(renderer + "\n")
    return renderer


def _dicom_bytes(tmp_path) -> bytes:
    from medsight.synthetic import generate_phantom
    from medsight.synthetic.dicom import write_dicom

    return write_dicom(generate_phantom(seed=21, size=512), tmp_path / "calibrated.dcm", bits_stored=14,
                       pixel_spacing=(SPACING_MM, SPACING_MM), windows=[(8000.0, 14000.0)]).read_bytes()


def test_window_zoom_pan_invert_and_a_calibrated_length(page, tmp_path):
    from playwright.sync_api import expect

    open_page(page, "Analyze")
    _upload(page, "calibrated.dcm", _dicom_bytes(tmp_path), "application/dicom")
    viewer = page.locator(READY)
    expect(viewer.get_by_test_id("viewer-calibration")).to_contain_text("PixelSpacing")
    renderer = _record_renderer(page)
    assert renderer.split(" | ")[0] in {"cpu", "webgl"}

    # Window/level by a left-button drag: new centre and width, and new screen pixels.
    probe = (256, 300)
    before = _viewer(page, "v.currentWindow()")
    pixel_before = _viewer(page, f"v.sample({probe[0]}, {probe[1]})")
    x, y = _screen(page, 256, 256)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y + 50, steps=10)
    page.mouse.up()
    _settle(page)
    after = _viewer(page, "v.currentWindow()")
    assert after["center"] != pytest.approx(before["center"]) and after["width"] != pytest.approx(before["width"])
    shown = viewer.get_by_test_id("viewer-window")
    assert float(shown.get_attribute("data-center")) == pytest.approx(after["center"])
    assert _viewer(page, f"v.sample({probe[0]}, {probe[1]})") != pixel_before

    # Wheel zoom changes the scale; a middle-button drag moves the image by the drag.
    scale = _viewer(page, "v.scale()")
    page.mouse.move(x, y)
    page.mouse.wheel(0, -400)
    _settle(page)
    zoomed = _viewer(page, "v.scale()")
    assert abs(zoomed / scale - 1) > 0.05, (scale, zoomed)
    start = _screen(page, 256, 256)
    page.mouse.move(*start)
    page.mouse.down(button="middle")
    page.mouse.move(start[0] + 60, start[1] + 35, steps=8)
    page.mouse.up(button="middle")
    _settle(page)
    moved = _screen(page, 256, 256)
    assert moved[0] - start[0] == pytest.approx(60, abs=3) and moved[1] - start[1] == pytest.approx(35, abs=3)

    # Invert flips the displayed grey levels.
    grey = _viewer(page, f"v.sample({probe[0]}, {probe[1]})")[0]
    viewer.get_by_role("button", name="Invert").click()
    _settle(page)
    assert _viewer(page, f"v.sample({probe[0]}, {probe[1]})")[0] == pytest.approx(255 - grey, abs=2)
    viewer.get_by_role("button", name="Invert").click()

    # Keyboard: the help lists the shortcuts; R resets zoom and pan.
    viewer.get_by_role("button", name="?").click()
    expect(viewer.get_by_text("window/level by drag (left button)")).to_be_visible()
    page.keyboard.press("Escape")
    viewer.focus()
    page.keyboard.press("r")
    _settle(page)
    assert _viewer(page, "v.scale()") == pytest.approx(scale, rel=1e-3)

    # A 300-pixel line on a 0.2 mm film is 60 mm.
    length = _draw_length(page, (100, 250), (400, 250))
    assert length["unit"] == "mm" and length["calibrated"] is True and length["spacing_source"] == "PixelSpacing"
    assert length["value"] == pytest.approx(300 * SPACING_MM, rel=0.01)
    expect(viewer.get_by_test_id("viewer-measurements")).to_contain_text("mm at detector")
    # The measurement and the window come back to Python with the component value.
    wait_idle(page)
    expect(page.get_by_text(re.compile(r"Kept with this study for the report: length (59|60)\.\d mm"))).to_be_visible()

    # An angle: drag out the first arm, then click the end of the second.
    viewer.get_by_role("button", name="Angle", exact=True).click()
    a, vertex, c = _screen(page, 150, 100), _screen(page, 150, 300), _screen(page, 350, 300)
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*vertex, steps=8)
    page.mouse.up()
    page.mouse.move(*c, steps=8)
    page.mouse.down()
    page.mouse.up()
    _settle(page)
    angles = [m for m in _viewer(page, "v.measurements()") if m["type"] == "angle"]
    assert len(angles) == 1 and angles[0]["value"] == pytest.approx(90, abs=1) and angles[0]["unit"] == "deg"
    screenshot(page, "viewer-dicom", focus=viewer)
    assert not page.errors, page.errors


def test_png_length_is_labelled_uncalibrated(page, tmp_path):
    from playwright.sync_api import expect

    from medsight.synthetic import generate_phantom, write_png

    open_page(page, "Analyze")
    _upload(page, "film.png", write_png(generate_phantom(seed=4, size=384), tmp_path / "film.png").read_bytes(),
            "image/png")
    viewer = page.locator(READY)
    expect(viewer.get_by_test_id("viewer-calibration")).to_contain_text("Uncalibrated")
    length = _draw_length(page, (50, 200), (250, 200))
    assert length["unit"] == "px" and length["calibrated"] is False
    assert length["value"] == pytest.approx(200, rel=0.01)
    expect(viewer.get_by_test_id("viewer-measurements")).to_contain_text("px (uncalibrated)")
    wait_idle(page)
    expect(page.get_by_text(re.compile(r"Kept with this study for the report: length .* px \(uncalibrated\)"))
           ).to_be_visible()
    assert not page.errors, page.errors


def test_map_layer_toggles_and_stays_on_the_image_after_zoom(page):
    from playwright.sync_api import expect

    open_page(page, "Analyze")
    pick_sample(page, "consolidation_right_pa.png")
    open_page(page, "Heatmap")
    page.wait_for_selector(READY, timeout=240_000)
    wait_idle(page)
    viewer = page.locator(READY)
    layer = viewer.locator("[data-layer]").first
    expect(layer).to_be_visible()
    # The hottest map pixel, in image pixels.
    hot = _viewer(page, """(() => { const l = v.layers[0]; const m = v.blocks['map:' + l.key];
        let best = 0; for (let i = 1; i < m.length; i++) if (m[i] > m[best]) best = i;
        const sx = (l.extent[2] - l.extent[0]) / l.columns, sy = (l.extent[3] - l.extent[1]) / l.rows;
        return [l.extent[0] + ((best % l.columns) + 0.5) * sx - 0.5, l.extent[1] + (Math.floor(best / l.columns) + 0.5) * sy - 0.5]; })()""")
    assert _viewer(page, f"v.sampleOverlay({hot[0]}, {hot[1]})")[3] > 0, "the chosen map opens shown"
    layer.get_by_role("checkbox").uncheck()
    _settle(page)
    assert _viewer(page, f"v.sampleOverlay({hot[0]}, {hot[1]})")[3] == 0
    layer.get_by_role("checkbox").check()
    _settle(page)
    assert _viewer(page, f"v.sampleOverlay({hot[0]}, {hot[1]})")[3] > 0

    def aligned() -> None:
        # The layer's corners land exactly on the image's corners on screen.
        corners = _viewer(page, """(() => { const l = v.layers[0], t = v.overlayTransform;
            const map = (x, y) => [t[0] * x + t[2] * y + t[4], t[1] * x + t[3] * y + t[5]];
            const [x0, y0, x1, y1] = l.extent;
            return {layer: [map(0, 0), map(l.columns, l.rows)],
                    image: [v.viewport.worldToCanvas([x0 - 0.5, y0 - 0.5, 0]), v.viewport.worldToCanvas([x1 - 0.5, y1 - 0.5, 0])]}; })()""")
        np.testing.assert_allclose(np.array(corners["layer"]), np.array(corners["image"]), atol=0.01)
        assert _viewer(page, f"v.sampleOverlay({hot[0]}, {hot[1]})")[3] > 0

    aligned()
    x, y = _screen(page, *hot)
    scale = _viewer(page, "v.scale()")
    page.mouse.move(x, y)
    page.mouse.wheel(0, -600)
    _settle(page)
    assert _viewer(page, "v.scale()") != pytest.approx(scale)
    aligned()
    screenshot(page, "viewer-heatmap-layer", focus=viewer)

    layer.get_by_role("checkbox").uncheck()
    _settle(page)
    assert _viewer(page, f"v.sampleOverlay({hot[0]}, {hot[1]})")[3] == 0
    assert not page.errors, page.errors

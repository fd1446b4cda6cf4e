"""What the radiologist waits for, in headless Chromium: click-to-result times of the real app.

Starts the app (`streamlit run app.py`, loopback, its own data directory and account) and drives it like a new
user with the browser tests' Chromium (`tests/e2e/e2e_support.py`). Each figure runs from the click (or the
navigation) to the end of the script run that shows the result, both taken by the page itself (the click
event, and the app's script state returning to "not running").

- analyze_first: the first analysis after sign-in in a fresh app process (models loaded in the click's run);
- analyze_first_after_sign_in: the first analysis of a second user signing in to the same process, whose
  models are already cached (what a radiologist meets on a workstation that is already running);
- analyze_warm: median of the next analyses, alternating two bundled samples (models cached by the process);
- heatmap_ready: from the Heatmap link to the page with its map;
- map_switch_new_s / map_switch_cached_s: switching to a map kind not computed yet, and back to computed ones;
- verification: Verify pressed on the sample's own report.

Example:
    python -m benchmarks.browser           # writes benchmarks/results/browser.json
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "browser.json"
SAMPLES = ("consolidation_right_pa.png", "effusion_left_pa.dcm")
MAP_TITLES = ("Anomaly map (deviation from normal)", "Spatial anomaly map (Grad-CAM)", "Pathology Grad-CAM")
USER, PASSWORD = "bench", "correct-horse-battery-42"
SECOND_USER = "bench2"


# Installed before each action: the page's own clock at the click (capture phase, so before any handler) and at
# the end of the script run it started (the app root's script state going running -> notRunning).
_WATCH = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const w = window.__medsightRun = {click: null, running: null, done: null};
  document.addEventListener('click', () => { if (w.click === null) w.click = performance.now(); },
                            {capture: true, once: true});
  const observer = new MutationObserver(() => {
    const state = app.getAttribute('data-test-script-state');
    if (w.click === null) return;
    if (state === 'running' && w.running === null) w.running = performance.now();
    else if (state === 'notRunning' && w.running !== null && w.done === null) {
      w.done = performance.now(); observer.disconnect();
    }
  });
  observer.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""


def _timed(page, action) -> float:
    """Seconds from the click `action()` makes to the end of the script run it starts, on the page's clock."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from e2e_support import wait_idle

    page.evaluate(_WATCH)
    action()
    page.wait_for_function("() => window.__medsightRun.done !== null", polling="raf", timeout=300_000)
    seconds = page.evaluate("() => (window.__medsightRun.done - window.__medsightRun.click) / 1000")
    wait_idle(page)
    return round(seconds, 3)


def _summary(runs: list) -> dict:
    return {"median": round(statistics.median(runs), 3), "runs": runs}


def _pick(page, name: str) -> None:
    from e2e_support import wait_idle

    page.locator('[data-testid="stSelectbox"]').filter(has_text="Sample study").first.click()
    page.get_by_role("option", name=name, exact=True).click()
    wait_idle(page)


def _first_analysis(page, url: str, user: str) -> float | None:
    """Sign in as `user`, open the first sample and time its Analyze click."""
    from e2e_support import sign_in, wait_idle

    page.goto(url)
    sign_in(page, user, PASSWORD)
    wait_idle(page)
    page.get_by_text("Sample study", exact=True).first.click()
    wait_idle(page)
    _pick(page, SAMPLES[0])
    return _timed(page, lambda: page.get_by_role("button", name="Analyze", exact=True).click())


def _measure(page, url: str, warm_runs: int) -> dict:
    from e2e_support import open_page, wait_idle

    out: dict = {"analyze_first_s": _first_analysis(page, url, USER)}
    analyze = lambda: page.get_by_role("button", name="Analyze", exact=True).click()  # noqa: E731
    warm = []
    for i in range(warm_runs):
        _pick(page, SAMPLES[(i + 1) % 2])
        warm.append(_timed(page, analyze))
    out["analyze_warm_s"] = _summary(warm)
    out["heatmap_ready_s"] = _timed(page, lambda: page.locator('[data-testid="stSidebar"]').locator(
        '[data-testid="stSidebarNavLink"]', has_text="Heatmap").first.click())
    for label, titles in (("map_switch_new_s", MAP_TITLES[1:]), ("map_switch_cached_s", MAP_TITLES)):
        runs = []
        for title in titles:  # a kind's first visit computes its map; a revisit shows the cached one
            radio = page.locator('[data-testid="stRadio"]').filter(has_text=MAP_TITLES[0]).get_by_text(
                title, exact=True)
            runs.append(_timed(page, radio.click))
        out[label] = _summary(runs)
    open_page(page, "Report Verification")
    report = next(s["report"] for s in json.loads((ROOT / "models" / "samples" / "manifest.json").read_text())[
        "studies"] if s["file"] == SAMPLES[(warm_runs) % 2])
    box = page.get_by_role("textbox", name="Report (FINDINGS and IMPRESSION)")
    box.fill(report)
    box.press("Control+Enter")
    wait_idle(page)
    out["verification_s"] = _timed(page, lambda: page.get_by_role("button", name="Verify", exact=True).click())
    return out


def run(warm_runs: int = 4) -> dict:
    """Measure once in a fresh app and browser; returns the figures (also written to browser.json)."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from e2e_support import CHROMIUM_ARGS, AppServer, add_account, find_chromium
    from playwright.sync_api import sync_playwright

    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="medsight-browser-bench-") as folder:
        home = Path(folder) / "home"
        home.mkdir()
        add_account(home, USER, PASSWORD, "Benchmark")
        add_account(home, SECOND_USER, PASSWORD, "Second reader")
        server = AppServer(home, Path(folder) / "streamlit.log").start()
        errors: list[str] = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                results = _measure(page, server.url, warm_runs)
                second = browser.new_page(viewport={"width": 1500, "height": 1100})  # its own context and session
                second.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                results["analyze_first_after_sign_in_s"] = _first_analysis(second, server.url, SECOND_USER)
                browser.close()
        finally:
            server.stop()
    results.update(samples=list(SAMPLES), console_errors=errors,
                   targets={"analyze_warm_s": 1.5, "analyze_first_after_sign_in_s": 3.0, "heatmap_ready_s": 1.5,
                            "map_switch_s": 0.8},
                   note="analyze_first_s includes loading the models in that run (a fresh app process); "
                        "analyze_first_after_sign_in_s is a second user's first analysis in the same process, models "
                        "cached",
                   machine={"cpus": os.cpu_count(), "load_average_before": load_before,
                            "load_average_after": list(os.getloadavg())})
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

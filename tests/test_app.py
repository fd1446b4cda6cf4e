"""The Streamlit shell through `streamlit.testing.v1.AppTest`: sign-in gate, pages, sign-out, errors."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from medsight import registry
from medsight.config import get_settings
from medsight.storage import History

ROOT = Path(__file__).resolve().parent.parent

PAGES = {
    "views/analyze.py": "Analyze",
    "views/heatmap.py": "Heatmap",
    "views/verify.py": "Report Verification",
    "views/voice.py": "Voice Entry",
    "views/chat.py": "Chat",
    "views/history.py": "History",
    "views/system.py": "System",
}


def _texts(at) -> str:
    parts = []
    for kind in ("title", "markdown", "caption", "error", "warning", "info", "success", "text", "exception"):
        parts += [str(getattr(e, "value", "")) for e in getattr(at, kind)]
    return "\n".join(parts)


def test_sign_in_screen_comes_first(app_test, account):
    at = app_test().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]
    assert "auth_session" not in at.session_state
    assert not at.sidebar.button  # no navigation, no sign-out before sign-in


def test_first_start_notice_goes_to_the_terminal_and_once_to_the_first_admin(app_test, sign_in, capfd):
    at = app_test().run()
    visitor = app_test().run()  # a second session of the same process creates nothing new
    for screen in (at, visitor):  # nobody sees the notice before signing in
        assert not any("First start" in i.value for i in screen.info)
    err = capfd.readouterr().err
    passwords = re.findall(r"Password \(shown only this once\): (\S+)", err)
    assert len(passwords) == 1
    assert passwords[0] not in get_settings().users_path.read_text()
    sign_in(at, "radiologist", passwords[0])
    assert not at.exception and at.session_state["username"] == "radiologist"
    notices = [i.value for i in at.info if "First start" in i.value]
    assert len(notices) == 1 and passwords[0] not in notices[0] and "medsight.users reset" in notices[0]
    at.run()
    assert not any("First start" in i.value for i in at.info)  # once only
    again = app_test().run()
    sign_in(again, "radiologist", passwords[0])
    assert not any("First start" in i.value for i in again.info)


def test_wrong_password_shows_an_error(app_test, account, sign_in):
    at = app_test().run()
    sign_in(at, account[0], "not-the-password")
    assert not at.exception
    assert any("Incorrect user name or password" in e.value for e in at.error)
    assert "auth_session" not in at.session_state


@pytest.mark.parametrize("page, title", PAGES.items())
def test_every_page_opens_after_sign_in(logged_in_app, page, title):
    at = logged_in_app()
    at.switch_page(page).run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    assert title in [t.value for t in at.title]
    assert not at.error, [e.value for e in at.error]
    sidebar = "\n".join(c.value for c in at.sidebar.caption)
    assert "Decision support, not a diagnosis" in sidebar and "Session ends at" in sidebar


def test_sign_out_returns_to_the_sign_in_screen(logged_in_app, account):
    at = logged_in_app()
    at.button(key="logout").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]
    assert "auth_session" not in at.session_state and "study" not in at.session_state
    assert any("signed out" in i.value for i in at.info)
    events = [e["event"] for e in History(get_settings().db_path).audit_log(limit=5)]
    assert events[:2] == ["logout", "login"]


def test_lockout_in_the_sign_in_screen(app_test, account, monkeypatch, sign_in):
    monkeypatch.setenv("MEDSIGHT_LOCKOUT_ATTEMPTS", "2")
    at = app_test().run()
    sign_in(at, account[0], "wrong-password-a")
    sign_in(at, account[0], "wrong-password-b")
    sign_in(at, *account)
    assert not at.exception and "auth_session" not in at.session_state
    assert any("Too many failed sign-in attempts" in e.value for e in at.error)


def test_idle_session_expires(logged_in_app):
    at = logged_in_app()
    session = at.session_state["auth_session"]
    session.last_active -= dt.timedelta(minutes=session.idle_minutes + 1)
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]
    assert any("without activity" in i.value for i in at.info)


@pytest.mark.parametrize("page", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "views").glob("*.py")
                                        if not p.name.startswith("_") and p.name != "login.py"))
def test_pages_refuse_to_render_without_sign_in(page):
    """Run each page file on its own, as Streamlit does for a page URL before st.navigation is known."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / page), default_timeout=60).run()
    assert not at.exception
    assert not at.title and not at.button and not at.dataframe
    assert any("Please sign in" in w.value for w in at.warning)


def test_unexpected_error_shows_a_reference_not_a_traceback(logged_in_app, monkeypatch, capfd):
    phi = "Patient " + "JANE" + " DOE 1970-01-01"  # kept out of the raising line, which the log may quote

    def broken(*args, **kwargs):
        raise RuntimeError(phi)

    monkeypatch.setattr(History, "list_records", broken)
    at = logged_in_app()
    at.switch_page("views/history.py").run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    ref = re.search(r"Reference \*\*([0-9A-F]{8})\*\*", message)
    assert ref, message
    assert "JANE" not in _texts(at) and "Traceback" not in _texts(at)
    log = capfd.readouterr().err
    assert f"error ref {ref.group(1)}" in log and "RuntimeError" in log and "JANE" not in log


def test_history_lists_only_own_records_and_reopens_one(logged_in_app, account):
    history = History(get_settings().db_path)
    payload = {"study_id": None, "fused_score": 0.81, "summary": "possible effusion"}
    mine = history.save_record(account[0], "analysis", None, "My effusion analysis", payload)
    history.save_record("someone-else", "analysis", None, "Other user's analysis", {"x": 1})
    at = logged_in_app()
    at.switch_page("views/history.py").run()
    text = _texts(at)
    assert "My effusion analysis" in text and "Other user's analysis" not in text
    at.text_input(key="history_text").input("nothing-matches-this").run()
    assert "My effusion analysis" not in _texts(at)
    at.text_input(key="history_text").input("effusion").run()
    at.button(key=f"history_open_{mine}").click().run()
    assert not at.exception
    assert at.session_state["analysis"] == payload
    assert "Analyze" in [t.value for t in at.title]


def test_sample_study_opens_and_is_saved(logged_in_app, account, tmp_path, monkeypatch):
    from medsight.synthetic import generate_phantom, write_png
    from medsight import samples as bundled

    samples = tmp_path / "samples"
    write_png(generate_phantom(seed=3, size=256, findings=("effusion",)), samples / "effusion.png")
    (samples / "manifest.json").write_text(json.dumps(
        {"samples": [{"file": "effusion.png", "title": "Synthetic effusion", "description": "Demo phantom"},
                     {"file": "../outside.png", "title": "Escapes the folder"}]}))
    monkeypatch.setattr(bundled, "SAMPLES_DIR", samples)
    assert [s.title for s in bundled.sample_studies()] == ["Synthetic effusion"]

    at = logged_in_app()
    at.radio(key="analyze_source").set_value("Sample study").run()
    at.selectbox(key="analyze_sample").set_value("Synthetic effusion").run()
    assert not at.exception and not at.error
    study = at.session_state["study"]
    assert study.filename == "effusion.png"
    assert study.study_id in "\n".join(c.value for c in at.sidebar.caption)
    stored = History(get_settings().db_path).list_studies(account[0])
    assert [s["study_id"] for s in stored] == [study.study_id]


def test_missing_or_broken_sample_manifest_is_harmless(tmp_path):
    from medsight.samples import sample_studies

    assert sample_studies(tmp_path / "absent") == []
    (tmp_path / "manifest.json").write_text("{not json")
    assert sample_studies(tmp_path) == []


def test_system_page_loads_models_and_shows_their_tier(logged_in_app, monkeypatch):
    # Only two stand-in slots, so the test does not load the product's real models.
    monkeypatch.setattr(registry, "SLOT_MODULES", ("medsight.not_a_module",))
    monkeypatch.setattr(registry, "_SLOTS", {})
    monkeypatch.setattr(registry, "_CACHE", {})
    registry.register(registry.ModelSlot(
        name="test.rules", title="Keyword rules", task="test task",
        sources=[registry.Source(registry.SourceKind.BUILTIN, "built-in rules", registry.Tier.RULES,
                                 lambda ctx: registry.Found(model=object(), version="1"))],
        how_to_get_real="nothing to download"))
    registry.register(registry.ModelSlot(
        name="test.absent", title="Absent model", task="test task",
        sources=[registry.Source(registry.SourceKind.FILE, "weights file", registry.Tier.REAL, lambda ctx: None)],
        how_to_get_real="put weights.pt in the models folder"))
    at = logged_in_app()
    at.switch_page("views/system.py").run(timeout=120)
    assert "not installed in this build" in _texts(at)
    at.button(key="system_load_all").click().run(timeout=120)
    assert not at.exception
    text = _texts(at)
    assert "no source could provide a model" in text and "put weights.pt in the models folder" in text
    assert "RULES — deterministic engine, no learned model" in text  # st.badge renders as markdown
    assert "built-in rules: loaded" in text  # the tried chain
    assert "GEMINI_API_KEY" in str([d.value for d in at.dataframe])


def test_system_page_says_quietly_what_is_not_installed_and_lists_the_loaded_models_outputs(logged_in_app,
                                                                                            monkeypatch):
    class Demo:
        labels = ("Consolidation", "Effusion")

    monkeypatch.setattr(registry, "SLOT_MODULES", ("medsight.not_a_module",))
    monkeypatch.setattr(registry, "_SLOTS", {})
    monkeypatch.setattr(registry, "_CACHE", {})
    registry.register(registry.ModelSlot(
        name="test.classifier", title="Classifier", task="test task", labels=tuple(f"Label {i}" for i in range(18)),
        sources=[registry.Source(registry.SourceKind.BUILTIN, "demo weights", registry.Tier.DEMO,
                                 lambda ctx: registry.Found(model=Demo(), version="1"), registry.Domain.PHANTOM)]))
    registry.register(registry.ModelSlot(
        name="test.optional", title="Optional speech model", task="test task",
        sources=[registry.Source(registry.SourceKind.FILE, "weights file", registry.Tier.REAL, lambda ctx: None)]))
    at = logged_in_app()
    at.switch_page("views/system.py").run(timeout=120)
    at.button(key="system_load_all").click().run(timeout=120)
    assert not at.exception
    assert not at.error, [e.value for e in at.error]  # not installed is a state, not an error box
    text = _texts(at)
    assert "Not installed" in text
    assert "Outputs: Consolidation, Effusion" in text and "Label 17" not in text
    assert "synthetic chest phantoms generated by this application" in text  # the domain of the weights

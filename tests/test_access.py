"""Who may see what in the app shell (AppTest): roles, the System page per role, sign-in pauses, notices.

Browser checks of the same rules (and of media, headers and framing) are in tests/e2e/test_security_browser.py.
"""

from __future__ import annotations

import datetime as dt
import io
import sys

import pytest

from medsight import auth as auth_module
from medsight import registry
from medsight import users as users_cli
from medsight.auth import ADMIN, RADIOLOGIST, Authenticator, UserStore
from medsight.config import get_settings
from medsight.storage import History

CHIEF, CHIEF_PW = "chief", "chief-admin-password-1"
READER, READER_PW = "reader", "reader-password-2"


@pytest.fixture
def accounts(medsight_home):
    store = UserStore(get_settings().ensure_dirs().users_path)
    store.add(CHIEF, CHIEF_PW, name="Chief Admin")  # the first account: administrator
    store.add(READER, READER_PW, name="Reader Radiologist")
    return store


@pytest.fixture
def light_registry(monkeypatch):
    """One rules slot instead of the product's models, so the System page opens quickly."""
    monkeypatch.setattr(registry, "SLOT_MODULES", ())
    monkeypatch.setattr(registry, "_SLOTS", {})
    monkeypatch.setattr(registry, "_CACHE", {})
    registry.register(registry.ModelSlot(
        name="test.rules", title="Keyword rules", task="test task",
        sources=[registry.Source(registry.SourceKind.BUILTIN, "built-in rules", registry.Tier.RULES,
                                 lambda ctx: registry.Found(model=object(), version="1"))]))


def _signed_in(app_test, sign_in, username, password):
    at = app_test(120).run()
    sign_in(at, username, password)
    assert not at.exception and at.session_state["username"] == username
    return at


def _subheaders(at) -> list[str]:
    return [s.value for s in at.subheader]


def _frames_text(at) -> str:
    return "\n".join(str(d.value) for d in at.dataframe)


def test_first_account_is_admin_later_ones_are_radiologists(accounts):
    assert accounts.roles(CHIEF) == (ADMIN, RADIOLOGIST)
    assert accounts.roles(READER) == (RADIOLOGIST,)
    with pytest.raises(ValueError, match="only administrator"):
        accounts.set_roles(CHIEF, [RADIOLOGIST])
    with pytest.raises(ValueError, match="Unknown role"):
        accounts.set_roles(READER, ["superuser"])
    accounts.set_roles(READER, [ADMIN, RADIOLOGIST])
    accounts.set_roles(CHIEF, [RADIOLOGIST])  # allowed now: another administrator exists
    assert accounts.admins() == [READER]


def test_users_cli_shows_and_changes_roles(accounts, monkeypatch, capsys):
    assert users_cli.main(["roles", READER]) == 0
    assert capsys.readouterr().out.strip() == f"{READER}: {RADIOLOGIST}"
    assert users_cli.main(["roles", READER, "--grant", ADMIN]) == 0
    assert accounts.roles(READER) == (ADMIN, RADIOLOGIST)
    assert users_cli.main(["roles", CHIEF, "--revoke", ADMIN]) == 0
    assert users_cli.main(["roles", READER, "--revoke", ADMIN]) == 1  # the last administrator
    assert "only administrator" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("third-account-pass-3\n"))
    assert users_cli.main(["add", "third", "--admin", "--password-stdin"]) == 0
    assert accounts.roles("third") == (ADMIN, RADIOLOGIST)
    events = [e["event"] for e in History(get_settings().db_path).audit_log(limit=20)]
    assert "roles_changed" in events


def test_radiologist_system_page_has_no_admin_parts_and_only_their_own_audit(accounts, app_test, sign_in,
                                                                                light_registry):
    History(get_settings().db_path).audit(CHIEF, "study_opened", {"study_id": "chiefs-study-0001"})
    at = _signed_in(app_test, sign_in, READER, READER_PW)
    at.switch_page("views/system.py").run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    headers = _subheaders(at)
    assert "Models" in headers and "Your audit trail" in headers
    for admin_part in ("User management", "Audit log", "Settings", "Data directory", "Reference data"):
        assert admin_part not in headers
    assert not [b for b in at.button if b.key in ("system_load_all", "system_unlock", "system_integrity")]
    trail = _frames_text(at)
    assert READER in trail and "login" in trail
    assert CHIEF not in trail and "chiefs-study-0001" not in trail


def test_admin_sees_everything_and_lifts_a_pause_from_the_system_page(accounts, app_test, sign_in,
                                                                       light_registry):
    settings = get_settings()
    gate = Authenticator(settings, History(settings.db_path))
    for _ in range(settings.lockout_attempts):
        gate.login(READER, "not-the-password")
    assert gate.locked_until(READER) is not None

    at = _signed_in(app_test, sign_in, CHIEF, CHIEF_PW)
    at.switch_page("views/system.py").run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    headers = _subheaders(at)
    for admin_part in ("User management", "Audit log", "Settings", "Data directory"):
        assert admin_part in headers
    log = _frames_text(at)
    assert READER in log and "lockout" in log  # the lock events are in the audit log
    at.selectbox(key="system_unlock_user").set_value(READER).run(timeout=120)
    at.button(key="system_unlock").click().run(timeout=120)
    assert not at.exception
    assert gate.locked_until(READER) is None and gate.login(READER, READER_PW).ok
    unlock = next(e for e in History(settings.db_path).audit_log(limit=20) if e["event"] == "unlock")
    assert unlock["user"] == READER and CHIEF in unlock["detail"]


def test_a_role_change_applies_to_a_signed_in_user_on_the_next_click(accounts, app_test, sign_in, light_registry):
    at = _signed_in(app_test, sign_in, READER, READER_PW)
    at.switch_page("views/system.py").run(timeout=120)
    assert "User management" not in _subheaders(at)
    accounts.set_roles(READER, [ADMIN, RADIOLOGIST])
    at.run(timeout=120)
    assert "User management" in _subheaders(at)


def test_one_browser_is_slowed_down_without_locking_out_another(accounts, app_test, sign_in, monkeypatch):
    # A long per-browser pause, so the test does not race the real one-second first step.
    monkeypatch.setattr(auth_module, "client_delay",
                        lambda failures: dt.timedelta(minutes=5) if failures >= 3 else dt.timedelta(0))
    attacker = app_test().run()
    for name in ("alice", "bob", "carol"):  # three different names from one browser
        sign_in(attacker, name, "guessed-password")
    sign_in(attacker, READER, READER_PW)
    assert "auth_session" not in attacker.session_state
    assert any("from this browser" in e.value for e in attacker.error)
    # The account itself was never paused: its owner signs in from their own browser. (AppTest gives every
    # session the same id, so the owner's browser is another client id here.)
    settings = get_settings()
    gate = Authenticator(settings, History(settings.db_path))
    assert gate.locked_until(READER) is None
    assert gate.login(READER, READER_PW, client="owner-browser-cookie-" + "x" * 24).ok
    events = [e["event"] for e in History(get_settings().db_path).audit_log(limit=20)]
    assert "login_throttled" in events


def test_expiry_message_uses_the_right_plural(accounts, app_test, sign_in, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_SESSION_MINUTES", "1")
    at = _signed_in(app_test, sign_in, READER, READER_PW)
    at.session_state["auth_session"].last_active -= dt.timedelta(minutes=2)
    at.run()
    notices = [i.value for i in at.info]
    assert any("ended after 1 minute without activity" in n for n in notices), notices
    assert "study" not in at.session_state and [t.value for t in at.title] == ["Sign in"]


def test_pdf_report_is_not_built_while_results_are_shown(accounts, app_test, sign_in, monkeypatch):
    from medsight import report
    from medsight.ingest import load_study
    from medsight.synthetic import generate_phantom, write_png

    calls = []
    monkeypatch.setattr(report, "build_pdf", lambda *a, **k: calls.append(1) or b"%PDF-")
    path = get_settings().home / "phantom.png"
    write_png(generate_phantom(seed=5, size=256, findings=("effusion",)), path)
    study = load_study(path)
    at = _signed_in(app_test, sign_in, READER, READER_PW)
    at.session_state["study"] = study
    at.session_state["analysis"] = {"study_id": study.study_id, "status": "COMPLETE",
                                    "summary": {"headline": ["No finding above threshold"]}, "stages": []}
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("download_button")) == 1  # offered …
    assert calls == []  # … but only built when clicked

"""Accounts, password hashing, persisted lockout, session expiry, the account CLI and first start."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import stat
import subprocess
import sys

import pytest
import yaml

from medsight import users as users_cli
from medsight.auth import Authenticator, UserStore, ensure_first_account, hash_password, verify_password
from medsight.config import get_settings
from medsight.storage import History

PASSWORD = "correct-horse-battery-42"
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self, now: dt.datetime = T0):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += dt.timedelta(**kwargs)


@pytest.fixture
def limits(monkeypatch):
    monkeypatch.setenv("MEDSIGHT_LOCKOUT_ATTEMPTS", "3")
    monkeypatch.setenv("MEDSIGHT_LOCKOUT_MINUTES", "10")
    monkeypatch.setenv("MEDSIGHT_SESSION_MINUTES", "30")
    return get_settings().ensure_dirs()


@pytest.fixture
def auth(limits):
    UserStore(limits.users_path).add("Dr.Who", PASSWORD, name="Dr Who")
    history = History(limits.db_path)
    yield Authenticator(limits, history, clock=Clock())
    history.close()


def _all_stored_bytes(settings) -> bytes:
    data = b""
    for path in settings.home.rglob("*"):
        if path.is_file():
            data += path.read_bytes()
    return data


def test_hash_and_verify_are_compatible_with_streamlit_authenticator():
    from streamlit_authenticator.utilities.hasher import Hasher

    hashed = hash_password(PASSWORD)
    assert hashed.startswith("$2b$") and Hasher.is_hash(hashed)
    assert verify_password(PASSWORD, hashed) and Hasher.check_pw(PASSWORD, hashed)
    assert verify_password(PASSWORD, Hasher.hash(PASSWORD))
    assert not verify_password("wrong-password-123", hashed)
    assert not verify_password(PASSWORD, "not-a-hash")
    with pytest.raises(ValueError):
        hash_password("x" * 73)


def test_user_file_holds_only_hashes_and_is_private(auth, limits):
    text = limits.users_path.read_text()
    assert PASSWORD not in text
    config = yaml.safe_load(text)
    entry = config["credentials"]["usernames"]["dr.who"]  # names are stored lower-case
    assert verify_password(PASSWORD, entry["password"])
    assert entry["first_name"] == "Dr" and config["cookie"]["expiry_days"] == 0
    assert stat.S_IMODE(os.stat(limits.users_path).st_mode) == 0o600


def test_successful_login_is_case_insensitive_and_audited(auth):
    result = auth.login("  DR.WHO ", PASSWORD)
    assert result.ok and result.username == "dr.who" and result.display_name == "Dr Who"
    assert auth.history.audit_log(limit=1)[0]["event"] == "login"


def test_wrong_password_is_counted_and_never_stored(auth, limits):
    result = auth.login("dr.who", "wrong-password-1")
    assert not result.ok and "Incorrect user name or password" in result.message and "2 attempts left" in result.message
    assert auth.failed_attempts("dr.who") == 1
    event = auth.history.audit_log(limit=1)[0]
    assert event["event"] == "login_failed" and event["user"] == "dr.who"
    assert b"wrong-password-1" not in _all_stored_bytes(limits)
    assert auth.login("dr.who", PASSWORD).ok
    assert auth.failed_attempts("dr.who") == 0  # success resets the counter


def test_account_pause_grows_progressively_and_blocks_even_the_right_password(auth):
    for _ in range(2):
        assert not auth.login("dr.who", "nope-nope-nope").ok
    third = auth.login("dr.who", "nope-nope-nope")
    assert third.locked_until == T0 + dt.timedelta(minutes=1) and "Try again in 1 minute." in third.message
    blocked = auth.login("dr.who", PASSWORD)
    assert not blocked.ok and "Too many failed sign-in attempts" in blocked.message
    assert [e["event"] for e in auth.history.audit_log(limit=2)] == ["login_blocked", "lockout"]
    # Each further failure after a pause doubles it (2, 4, 8 minutes), up to MEDSIGHT_LOCKOUT_MINUTES (10).
    pauses = []
    for _ in range(4):
        auth.clock.now = auth.locked_until("dr.who") + dt.timedelta(seconds=1)
        result = auth.login("dr.who", "nope-nope-nope")
        pauses.append(result.locked_until - auth.clock.now)
    assert pauses == [dt.timedelta(minutes=m) for m in (2, 4, 8, 10)]
    auth.clock.now = auth.locked_until("dr.who") + dt.timedelta(seconds=1)
    assert auth.login("dr.who", PASSWORD).ok  # the owner gets in as soon as the pause is over
    assert auth.failed_attempts("dr.who") == 0


def test_account_pause_bounds_guessing_below_asvs_limit(auth):
    """ASVS 2.2.1: at most 100 failed attempts per hour on one account, however fast the attacker tries."""
    checked = 0
    end = T0 + dt.timedelta(hours=1)
    while auth.clock.now < end:
        if auth.locked_until("dr.who") is None:
            checked += 1  # only these attempts reach the password check
        auth.login("dr.who", f"guess-{checked:04d}-xx")
        auth.clock.advance(seconds=5)
    # 3 free tries, then one try after each pause: 1, 2, 4, 8 minutes, then every 10 minutes (the cap).
    assert 10 <= checked <= 12, checked


def test_pause_survives_a_restart(auth, limits):
    for _ in range(3):
        auth.login("dr.who", "nope-nope-nope")
    auth.history.close()
    fresh = Authenticator(limits, History(limits.db_path), clock=Clock(T0 + dt.timedelta(seconds=15)))
    assert fresh.locked_until("dr.who") == T0 + dt.timedelta(minutes=1)
    result = fresh.login("dr.who", PASSWORD)
    assert not result.ok and "Try again in 45 seconds" in result.message
    fresh.history.close()


def test_old_failures_expire(auth):
    auth.login("dr.who", "nope-nope-nope")
    auth.login("dr.who", "nope-nope-nope")
    auth.clock.advance(minutes=11)
    assert "2 attempts left" in auth.login("dr.who", "nope-nope-nope").message


def test_one_browser_trying_many_names_is_slowed_down(auth):
    browser, other = "b" * 43, "c" * 43
    messages = [auth.login(f"guess-{i}", "nope-nope-nope", client=browser).message for i in range(3)]
    assert all("Incorrect user name or password" in m for m in messages)
    throttled = auth.login("dr.who", PASSWORD, client=browser)  # even a right password waits its turn
    assert not throttled.ok and "from this browser" in throttled.message and "1 second" in throttled.message
    # Another browser is not affected: the pause is per browser, so it cannot lock anyone else out.
    assert auth.login("dr.who", PASSWORD, client=other).ok
    pauses = []
    for i in range(8):
        auth.clock.now = throttled.locked_until + dt.timedelta(milliseconds=1)
        throttled = auth.login(f"other-{i}", "nope-nope-nope", client=browser)
        assert "Incorrect user name or password" in throttled.message or "Too many" in throttled.message
        state = auth.history.login_state(auth._client_key(browser))
        throttled.locked_until = dt.datetime.fromisoformat(state["locked_until"])
        pauses.append((throttled.locked_until - auth.clock.now).total_seconds())
    assert [round(p) for p in pauses] == [2, 4, 8, 16, 32, 60, 60, 60]  # doubling, capped at one a minute
    assert "b" * 43 not in str(auth.history._read("SELECT * FROM login_state"))  # only a hash is stored
    assert "login_throttled" in [e["event"] for e in auth.history.audit_log(limit=30)]


def test_admin_or_cli_lifts_a_pause_and_it_is_audited(auth):
    for _ in range(3):
        auth.login("dr.who", "nope-nope-nope")
    assert auth.locked_until("dr.who") is not None
    auth.unlock("dr.who", by="admin-user")
    assert auth.locked_until("dr.who") is None and auth.login("dr.who", PASSWORD).ok
    unlock = next(e for e in auth.history.audit_log(limit=10) if e["event"] == "unlock")
    assert unlock["user"] == "dr.who" and "admin-user" in unlock["detail"]


def test_unknown_names_get_the_same_answer_and_are_not_stored(auth, limits):
    known = auth.login("dr.who", "nope-nope-nope").message
    unknown = auth.login("typo-or-password", "nope-nope-nope").message
    assert known == unknown
    for _ in range(2):
        auth.login("typo-or-password", "nope-nope-nope")
    assert auth.locked_until("typo-or-password") is not None
    assert b"typo-or-password" not in _all_stored_bytes(limits)


def test_session_expires_after_idle_minutes(auth):
    session = auth.start_session(auth.login("dr.who", PASSWORD))
    assert session.expires == T0 + dt.timedelta(minutes=30)
    auth.clock.advance(minutes=20)
    assert auth.check_session(session) is session and session.expires == T0 + dt.timedelta(minutes=50)
    auth.clock.advance(minutes=50)
    assert auth.check_session(session) is None
    assert auth.history.audit_log(limit=1)[0]["event"] == "session_expired"
    auth.logout(session)
    assert auth.history.audit_log(limit=1)[0]["event"] == "logout"


def test_first_start_creates_one_account_and_shows_the_password_once(limits):
    out = io.StringIO()
    password = ensure_first_account(limits, stream=out)
    assert password and out.getvalue().count(password) == 1 and "shown only this once" in out.getvalue()
    again = io.StringIO()
    assert ensure_first_account(limits, stream=again) is None and again.getvalue() == ""
    accounts = UserStore(limits.users_path).users()
    assert list(accounts) == ["radiologist"]
    assert password not in limits.users_path.read_text()
    history = History(limits.db_path)
    try:
        assert Authenticator(limits, history).login("radiologist", password).ok
    finally:
        history.close()


def test_cli_add_list_reset_unlock(limits, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert users_cli.main(["add", "alice", "--display-name", "Alice Example", "--password-stdin"]) == 0
    assert PASSWORD not in capsys.readouterr().out
    assert users_cli.main(["add", "alice", "--generate"]) == 1
    assert "already exists" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert users_cli.main(["add", "bob", "--password-stdin"]) == 1
    assert "at least" in capsys.readouterr().err

    history = History(limits.db_path)
    auth = Authenticator(limits, history)
    for _ in range(3):
        auth.login("alice", "nope-nope-nope")
    assert users_cli.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "Alice Example" in listing and "paused until" in listing
    assert users_cli.main(["unlock", "alice"]) == 0
    assert auth.locked_until("alice") is None and auth.login("alice", PASSWORD).ok

    assert users_cli.main(["reset", "alice", "--generate"]) == 0
    new_password = re.search(r"shown only this once\): (\S+)", capsys.readouterr().out).group(1)
    assert auth.login("alice", new_password).ok and not auth.login("alice", PASSWORD).ok
    assert users_cli.main(["reset", "nobody", "--generate"]) == 1
    events = [e["event"] for e in history.audit_log(limit=50)]
    assert {"account_added", "unlock", "password_reset"} <= set(events)
    history.close()


def test_cli_runs_as_a_module(limits):
    proc = subprocess.run([sys.executable, "-m", "medsight.users", "add", "carol", "--password-stdin"],
                          input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Created account carol" in proc.stdout
    assert UserStore(limits.users_path).get("carol") is not None

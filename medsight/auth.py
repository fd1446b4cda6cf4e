"""Accounts, password checks, lockout, sessions and the audit trail of sign-ins.

Accounts live in `settings.users_path` (YAML in the data directory, never in the repository) in
streamlit-authenticator's config format (`credentials.usernames.<name>.password` holds a bcrypt hash), so
the file stays usable with `streamlit_authenticator.Authenticate` and its `Hasher`. The checks themselves
are done here with bcrypt because the workstation needs what that widget does not offer: a lockout that
expires after `lockout_minutes` and survives a restart (kept in the History database), an inactivity
expiry of the session, and no long-lived re-login cookie in the browser.

Nothing here imports Streamlit; the app layer keeps the `Session` in `st.session_state`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import re
import secrets
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, TextIO

import bcrypt
import yaml

from medsight.config import Settings, get_settings
from medsight.storage import History, utc_now

DEFAULT_ACCOUNT = "radiologist"
ADMIN = "admin"
RADIOLOGIST = "radiologist"
ROLES = (ADMIN, RADIOLOGIST)
BCRYPT_MAX_BYTES = 72  # bcrypt ignores (bcrypt>=5: rejects) anything longer
MIN_PASSWORD_LENGTH = 10
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")


# --- hashing ------------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    """bcrypt hash of a password, in the `$2b$12$...` form streamlit-authenticator's `Hasher` writes."""
    data = password.encode("utf-8")
    if len(data) > BCRYPT_MAX_BYTES:
        raise ValueError(f"Password is too long (at most {BCRYPT_MAX_BYTES} bytes).")
    return bcrypt.hashpw(data, bcrypt.gensalt()).decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    """True when `password` matches the bcrypt `hashed`; False for any malformed input."""
    try:
        return bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
    except (ValueError, TypeError, UnicodeError):
        return False


_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    # Checking unknown names against a real hash keeps their timing equal to a wrong password.
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


def generate_password() -> str:
    """A random 16-character password (96 bits)."""
    return secrets.token_urlsafe(12)


def normalise_username(username: str) -> str:
    return (username or "").strip().lower()


def validate_username(username: str) -> str:
    """Return the normalised user name.

    Raises:
        ValueError: when it is not 2–32 characters of a–z, 0–9, dot, dash or underscore.
    """
    name = normalise_username(username)
    if not _USERNAME_RE.match(name):
        raise ValueError("User names are 2–32 characters: letters, digits, dot, dash or underscore.")
    return name


def validate_roles(roles) -> tuple[str, ...]:
    """Normalised, de-duplicated roles in canonical order.

    Raises:
        ValueError: on an unknown role or an empty list.
    """
    wanted = {str(r).strip().lower() for r in (roles or []) if str(r).strip()}
    unknown = sorted(wanted - set(ROLES))
    if unknown:
        raise ValueError(f"Unknown role {', '.join(unknown)}; roles are {', '.join(ROLES)}.")
    if not wanted:
        raise ValueError(f"An account needs at least one role ({', '.join(ROLES)}).")
    return tuple(r for r in ROLES if r in wanted)


def validate_password(password: str) -> None:
    """Raises ValueError when the password is too short or too long for bcrypt."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ValueError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
        raise ValueError(f"Passwords can be at most {BCRYPT_MAX_BYTES} bytes long.")


# --- account file -------------------------------------------------------------------------------
@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on a sidecar file, so two processes never write the account file at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    handle = open(lock_path, "a+")
    try:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: single-process use only
            pass
        yield
    finally:
        handle.close()



def _stored_key(accounts: dict, username: str) -> str:
    """The accounts file's key for `username` (names compare case-insensitively).

    Raises:
        KeyError: when the account does not exist.
    """
    key = next((k for k in accounts if str(k).lower() == username), None)
    if key is None:
        raise KeyError(f"No account named {username!r}.")
    return key

class UserStore:
    """Accounts in a streamlit-authenticator style YAML file.

    Args:
        path: the YAML file (created on first write with mode 0600).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict:
        if not self.path.exists():
            return {}
        with open(self.path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{self.path} is not a valid account file")
        return config

    def _write(self, config: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".users-", suffix=".yaml", dir=self.path.parent)
        try:
            os.chmod(tmp, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                yaml.safe_dump(config, handle, default_flow_style=False, allow_unicode=True, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _skeleton(config: dict) -> dict:
        config.setdefault("credentials", {})
        if not isinstance(config["credentials"].get("usernames"), dict):
            config["credentials"]["usernames"] = {}
        # streamlit-authenticator reads a cookie section; expiry 0 means it never keeps a re-login cookie.
        config.setdefault("cookie", {"name": "medsight_session", "key": secrets.token_hex(32), "expiry_days": 0})
        return config

    def users(self) -> dict[str, dict]:
        """All accounts: user name → entry (with the password hash)."""
        usernames = (self._read().get("credentials") or {}).get("usernames") or {}
        return {str(name).lower(): dict(entry or {}) for name, entry in usernames.items()}

    def get(self, username: str) -> dict | None:
        return self.users().get(normalise_username(username))

    def is_empty(self) -> bool:
        return not self.users()

    def add(self, username: str, password: str, *, name: str = "", email: str = "",
            roles: tuple[str, ...] = (RADIOLOGIST,)) -> str:
        """Create an account. The first account of a workstation is always an administrator too.

        Returns:
            The normalised user name.

        Raises:
            ValueError: when the name is invalid or taken, the password too weak or a role unknown.
        """
        username = validate_username(username)
        validate_password(password)
        roles = validate_roles(roles)
        with _file_lock(self.path):
            config = self._skeleton(self._read())
            accounts = config["credentials"]["usernames"]
            if username in {str(k).lower() for k in accounts}:
                raise ValueError(f"An account named {username!r} already exists.")
            if not accounts and ADMIN not in roles:
                roles = (*roles, ADMIN)  # someone must be able to manage the workstation
            first, _, last = (name or username).partition(" ")
            accounts[username] = {
                "email": email,
                "first_name": first,
                "last_name": last,
                "password": hash_password(password),
                "roles": list(roles),
            }
            self._write(config)
        return username

    def set_password(self, username: str, password: str) -> None:
        """Replace an account's password.

        Raises:
            KeyError: when the account does not exist.
            ValueError: when the password is too weak.
        """
        username = normalise_username(username)
        validate_password(password)
        with _file_lock(self.path):
            config = self._skeleton(self._read())
            accounts = config["credentials"]["usernames"]
            key = _stored_key(accounts, username)
            accounts[key]["password"] = hash_password(password)
            self._write(config)

    @staticmethod
    def roles_of(entry: dict) -> tuple[str, ...]:
        """The known roles of an account entry (unknown strings in the file are ignored)."""
        return tuple(r for r in ROLES if r in {str(x).lower() for x in (entry.get("roles") or [])})

    def roles(self, username: str) -> tuple[str, ...]:
        entry = self.get(username)
        return self.roles_of(entry) if entry else ()

    def admins(self) -> list[str]:
        return sorted(name for name, entry in self.users().items() if ADMIN in self.roles_of(entry))

    def set_roles(self, username: str, roles: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """Replace an account's roles.

        Raises:
            KeyError: when the account does not exist.
            ValueError: on an unknown role, no role at all, or when it would leave no administrator.
        """
        username = normalise_username(username)
        roles = validate_roles(roles)
        with _file_lock(self.path):
            config = self._skeleton(self._read())
            accounts = config["credentials"]["usernames"]
            key = _stored_key(accounts, username)
            others = [k for k, e in accounts.items() if k != key and ADMIN in self.roles_of(e or {})]
            if ADMIN not in roles and not others:
                raise ValueError(f"{username!r} is the only administrator; make another account admin first.")
            accounts[key]["roles"] = list(roles)
            self._write(config)
        return roles

    @staticmethod
    def display_name(entry: dict, username: str) -> str:
        full = " ".join(p for p in (entry.get("first_name"), entry.get("last_name")) if p).strip()
        return full or str(entry.get("name") or username)


_CREATED_THIS_PROCESS: set[str] = set()


def first_account_created_here(settings: Settings | None = None) -> bool:
    """True when this process created the first account of the data directory (its password went to stderr)."""
    settings = settings or get_settings()
    return str(Path(settings.users_path).resolve()) in _CREATED_THIS_PROCESS


def ensure_first_account(settings: Settings | None = None, stream: TextIO | None = None) -> str | None:
    """On a fresh data directory create the "radiologist" account with a random password.

    The password is written once to `stream` (the terminal's stderr) and only its hash is stored.

    Returns:
        The generated password, or None when accounts already existed.
    """
    settings = settings or get_settings()
    store = UserStore(settings.users_path)
    if not store.is_empty():
        return None
    with _file_lock(store.path):
        if not store.is_empty():  # another process won the race
            return None
        password = generate_password()
        config = UserStore._skeleton(store._read())
        config["credentials"]["usernames"][DEFAULT_ACCOUNT] = {
            "email": "",
            "first_name": "Radiologist",
            "last_name": "",
            "password": hash_password(password),
            "roles": [ADMIN, RADIOLOGIST],
        }
        store._write(config)
    _CREATED_THIS_PROCESS.add(str(store.path.resolve()))
    out = stream if stream is not None else sys.stderr
    bar = "=" * 72
    out.write(
        f"\n{bar}\nMedSight Workstation: first start, account {DEFAULT_ACCOUNT!r} created.\n"
        f"  Password (shown only this once): {password}\n"
        f"  Change it with: python -m medsight.users reset {DEFAULT_ACCOUNT}\n{bar}\n\n"
    )
    out.flush()
    return password


# --- sign-in, lockout, sessions -----------------------------------------------------------------
@dataclass
class LoginResult:
    ok: bool
    message: str
    username: str = ""
    display_name: str = ""
    locked_until: _dt.datetime | None = None
    roles: tuple[str, ...] = ()


@dataclass
class Session:
    """A signed-in session; it expires after `idle_minutes` without activity."""

    username: str
    display_name: str
    started: _dt.datetime
    last_active: _dt.datetime
    idle_minutes: int
    roles: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def expires(self) -> _dt.datetime:
        return self.last_active + _dt.timedelta(minutes=self.idle_minutes)

    def is_expired(self, now: _dt.datetime | None = None) -> bool:
        return (now or utc_now()) >= self.expires

    def touch(self, now: _dt.datetime | None = None) -> "Session":
        self.last_active = now or utc_now()
        return self

    def to_dict(self) -> dict:
        data = asdict(self)
        data["expires"] = self.expires
        return data


def _parse(moment: str | None) -> _dt.datetime | None:
    return _dt.datetime.fromisoformat(moment) if moment else None


def minutes_text(minutes: int) -> str:
    """"1 minute", "15 minutes"."""
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _minutes_text(delta: _dt.timedelta) -> str:
    return minutes_text(max(1, int(-(-delta.total_seconds() // 60))))


def _wait_text(delta: _dt.timedelta) -> str:
    seconds = max(1, int(-(-delta.total_seconds() // 1)))
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return _minutes_text(delta)


# Progressive delays (see SECURITY.md, "Sign-in"): an account pauses after `lockout_attempts` failures in a
# row, for 1, 2, 4, 8 … minutes up to `lockout_minutes`; one browser pauses after CLIENT_FREE_ATTEMPTS
# failures (whatever names it tried) for 1, 2, 4 … seconds up to CLIENT_MAX_DELAY_SECONDS.
CLIENT_FREE_ATTEMPTS = 3
CLIENT_MAX_DELAY_SECONDS = 60


def account_delay(failures: int, free_attempts: int, max_minutes: int) -> _dt.timedelta:
    """Pause of an account after `failures` failed sign-ins in a row (zero below `free_attempts`)."""
    if failures < max(1, free_attempts):
        return _dt.timedelta(0)
    minutes = min(2 ** min(failures - max(1, free_attempts), 16), max(1, max_minutes))
    return _dt.timedelta(minutes=minutes)


def client_delay(failures: int) -> _dt.timedelta:
    """Pause of one browser after `failures` failed sign-ins from it (any user names)."""
    if failures < CLIENT_FREE_ATTEMPTS:
        return _dt.timedelta(0)
    return _dt.timedelta(seconds=min(2 ** min(failures - CLIENT_FREE_ATTEMPTS, 16), CLIENT_MAX_DELAY_SECONDS))


class Authenticator:
    """Password checks with persisted progressive delays, plus session bookkeeping and audit events.

    Args:
        settings: lockout/session limits and file locations (defaults to `get_settings()`).
        history: the History database holding lockout state and the audit log.
        clock: returns the current UTC time (tests pass a fake one).
    """

    def __init__(self, settings: Settings | None = None, history: History | None = None,
                 clock: Callable[[], _dt.datetime] = utc_now):
        self.settings = settings or get_settings()
        self.history = history or History(self.settings.db_path)
        self.users = UserStore(self.settings.users_path)
        self.clock = clock

    def _account_key(self, username: str, known: bool) -> str:
        # Unknown names are counted too (so the answer never reveals which names exist) but only as a
        # hash: people sometimes type their password into the user-name field.
        if known:
            return f"user:{username}"
        return "unknown:" + hashlib.sha256(username.encode("utf-8")).hexdigest()[:24]

    @staticmethod
    def _client_key(client: str) -> str:
        # The browser's identifier is a secret cookie: only its hash is stored.
        return "client:" + hashlib.sha256(client.encode("utf-8")).hexdigest()[:24]

    def locked_until(self, username: str, now: _dt.datetime | None = None) -> _dt.datetime | None:
        """When the sign-in pause of an account ends, or None if it is not paused."""
        now = now or self.clock()
        name = normalise_username(username)
        key = self._account_key(name, self.users.get(name) is not None)
        until = _parse(self.history.lockout.state(key)["locked_until"])
        return until if until and until > now else None

    def failed_attempts(self, username: str) -> int:
        name = normalise_username(username)
        key = self._account_key(name, self.users.get(name) is not None)
        return int(self.history.lockout.state(key)["failed_count"])

    def _recent_failures(self, state: dict, now: _dt.datetime) -> int:
        window = _dt.timedelta(minutes=max(1, self.settings.lockout_minutes))
        last_failed = _parse(state["last_failed"])
        if last_failed is None:
            return 0
        # Failures are forgotten once a whole window passed after the last failure and any pause.
        locked = _parse(state["locked_until"])
        quiet_since = max(last_failed, locked) if locked else last_failed
        return int(state["failed_count"]) if now - quiet_since < window else 0

    def login(self, username: str, password: str, now: _dt.datetime | None = None,
              client: str | None = None) -> LoginResult:
        """Check a sign-in attempt, slowing down an account and a browser that keep failing.

        Args:
            username, password: what was typed.
            now: the time of the attempt (default: the clock).
            client: an identifier of the browser (its cookie or session id); None skips the per-browser delay.

        Returns:
            A `LoginResult`; its message is safe to show on the sign-in screen.
        """
        now = now or self.clock()
        name = normalise_username(username)
        if not name or not password:
            return LoginResult(False, "Enter your user name and password.")
        entry = self.users.get(name)
        key = self._account_key(name, entry is not None)
        audit_user = name if entry is not None else None

        client_key = self._client_key(client) if client else None
        client_state = self.history.lockout.state(client_key) if client_key else None
        if client_state is not None:
            paused = _parse(client_state["locked_until"])
            if paused and paused > now:
                self.history.audit(None, "login_throttled", {"scope": "browser"})
                return LoginResult(False, "Too many failed sign-in attempts from this browser. "
                                          f"Try again in {_wait_text(paused - now)}.", locked_until=paused)

        state = self.history.lockout.state(key)
        locked = _parse(state["locked_until"])
        if locked and locked > now:
            self.history.audit(audit_user, "login_blocked", {"reason": "account paused"})
            return LoginResult(False, f"Too many failed sign-in attempts. Try again in {_wait_text(locked - now)}.",
                               locked_until=locked)

        hashed = str(entry.get("password", "")) if entry else _dummy_hash()
        if verify_password(password, hashed) and entry is not None:
            self.history.lockout.clear(key)
            if client_key:
                self.history.lockout.clear(client_key)
            display = UserStore.display_name(entry, name)
            self.history.audit(name, "login", {})
            return LoginResult(True, f"Signed in as {display}.", username=name, display_name=display,
                               roles=UserStore.roles_of(entry))

        if client_key and client_state is not None:
            client_failures = self._recent_failures(client_state, now) + 1
            pause = client_delay(client_failures)
            self.history.lockout.set(client_key, client_failures, now.isoformat(),
                                     (now + pause).isoformat() if pause else None)
            if pause:
                self.history.audit(None, "login_throttled", {"scope": "browser", "failed_attempts": client_failures,
                                                             "seconds": int(pause.total_seconds())})

        count = self._recent_failures(state, now) + 1
        limit = max(1, int(self.settings.lockout_attempts))
        pause = account_delay(count, limit, self.settings.lockout_minutes)
        if pause:
            until = now + pause
            self.history.lockout.set(key, count, now.isoformat(), until.isoformat())
            self.history.audit(audit_user, "lockout", {"failed_attempts": count, "minutes": int(pause.total_seconds() // 60)})
            return LoginResult(False, f"Too many failed sign-in attempts. Try again in {_wait_text(pause)}.",
                               locked_until=until)
        self.history.lockout.set(key, count, now.isoformat(), None)
        self.history.audit(audit_user, "login_failed", {"failed_attempts": count, "known_account": entry is not None})
        left = limit - count
        return LoginResult(False, f"Incorrect user name or password. {left} attempt{'s' if left != 1 else ''} left "
                                  "before sign-in to this account is paused.")

    def unlock(self, username: str, by: str | None = None) -> None:
        """Lift the sign-in pause of an account and clear its failure counter.

        Args:
            username: the account.
            by: the administrator who lifted it (None: the command line).
        """
        name = normalise_username(username)
        self.history.lockout.clear(self._account_key(name, self.users.get(name) is not None))
        self.history.audit(name, "unlock", {"by": by or "command line"})

    def start_session(self, result: LoginResult, now: _dt.datetime | None = None) -> Session:
        now = now or self.clock()
        return Session(result.username, result.display_name, started=now, last_active=now,
                       idle_minutes=int(self.settings.session_minutes), roles=tuple(result.roles))

    def check_session(self, session: Session | None, now: _dt.datetime | None = None) -> Session | None:
        """Refresh a live session; return None (and audit the expiry) when it has run out."""
        if session is None:
            return None
        now = now or self.clock()
        if session.is_expired(now):
            self.history.audit(session.username, "session_expired", {"idle_minutes": session.idle_minutes})
            return None
        entry = self.users.get(session.username)
        if entry is None:  # the account was removed while signed in
            self.history.audit(session.username, "session_ended", {"reason": "account removed"})
            return None
        session.roles = UserStore.roles_of(entry)  # a role change applies from the next click on
        return session.touch(now)

    def logout(self, session: Session | None) -> None:
        if session is not None:
            self.history.audit(session.username, "logout", {})

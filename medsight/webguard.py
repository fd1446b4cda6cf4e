"""HTTP-level protection of the workstation: response headers, a browser cookie, and guarded media.

Streamlit (1.67) serves the app with Starlette on uvicorn. `app.py` defines `app = st.App(...)` with
`WorkstationGuard` as the outermost ASGI middleware, so `streamlit run app.py` serves every response through
it. The guard does three things:

- Adds the security headers (`SECURITY_HEADERS` plus a Content-Security-Policy allowing only the app's own
  origin) to every HTTP response, including Streamlit's own pages, static files, media and errors.
- Gives each browser a random HttpOnly, SameSite=Strict cookie (`CLIENT_COOKIE`). The page script reads it from
  the WebSocket handshake (`st.context.cookies`) and binds it to the signed-in session in `MEDIA_ACCESS`.
- Answers a `/media/...` request (images, PDFs and other downloads Streamlit keeps in memory) only for a browser
  whose cookie belongs to a live signed-in session that displayed that file or generated that download;
  anything else gets 404, the same answer as a file that does not exist.

Nothing here imports Streamlit at module level: the Streamlit-specific look-ups (which sessions show a file,
a file's bytes) are small functions with late imports, so the rules can be tested on their own.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

CLIENT_COOKIE = "medsight_client"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
MEDIA_PREFIX = "/media/"

SECURITY_HEADERS: dict[str, str] = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), geolocation=(), payment=(), usb=(), microphone=(self)",
}


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def inline_script_hashes(index_html: str) -> list[str]:
    """CSP source expressions ('sha256-…') of the inline <script> blocks of a page."""
    import base64

    hashes = []
    for body in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", index_html, flags=re.S | re.I):
        digest = hashlib.sha256(body.encode("utf-8")).digest()
        hashes.append(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")
    return hashes


def _streamlit_index_html() -> str:
    try:
        import streamlit

        return (Path(streamlit.__file__).parent / "static" / "index.html").read_text(encoding="utf-8")
    except (ImportError, OSError):
        return ""


def content_security_policy(index_html: str | None = None) -> str:
    """The app's CSP: its own origin only, no framing, no plugins.

    Streamlit's page has one small inline script, allowed by its hash; its UI sets inline styles, shows images
    from `data:`/`blob:` URLs and plays recordings from `blob:` URLs. Everything else must come from 'self',
    which also keeps a rendered page from contacting any other host.
    """
    scripts = " ".join(["'self'", *inline_script_hashes(_streamlit_index_html() if index_html is None else index_html)])
    directives = [
        "default-src 'self'",
        f"script-src {scripts}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "media-src 'self' data: blob:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


# --- who may fetch which media -----------------------------------------------------------------
@dataclass
class _Grant:
    client: str
    username: str
    expires: _dt.datetime
    shown: set[str] = field(default_factory=set)       # media ids the session's pages displayed
    downloads: set[str] = field(default_factory=set)   # SHA-256 of files generated on request


class MediaAccess:
    """Which browser (cookie) may fetch which media file, tied to live signed-in sessions.

    Args:
        owners: file id → ids of the Streamlit sessions currently showing it.
        reader: file id → the file's bytes (None when Streamlit no longer has it).
        clock: current UTC time.
    """

    def __init__(self, owners: Callable[[str], set[str]] | None = None,
                 reader: Callable[[str], bytes | None] | None = None,
                 clock: Callable[[], _dt.datetime] = _utc_now):
        self._owners = owners or streamlit_media_owners
        self._reader = reader or streamlit_media_bytes
        self._clock = clock
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()

    def grant(self, session_id: str, client: str | None, username: str, expires: _dt.datetime) -> bool:
        """Bind a signed-in Streamlit session to its browser cookie until `expires` (refreshed on activity).

        Returns:
            False when the browser sent no valid cookie (then none of its media can be fetched).
        """
        if not session_id or not is_client_token(client):
            return False
        with self._lock:
            now = self._clock()
            for sid in [s for s, g in self._grants.items() if g.expires <= now]:
                del self._grants[sid]
            current = self._grants.get(session_id)
            if current is None or current.client != client or current.username != username:
                self._grants[session_id] = _Grant(client, username, expires)
            else:
                current.expires = expires
        return True

    def remember_shown(self, session_id: str, file_ids: Iterable[str]) -> None:
        """Record the media a finished page run displayed (kept while the next run rebuilds the page)."""
        with self._lock:
            grant = self._grants.get(session_id)
            if grant is not None:
                grant.shown = set(file_ids)

    def remember_download(self, session_id: str, content: bytes) -> None:
        """Record a file generated on request for this session, so its one download is allowed."""
        with self._lock:
            grant = self._grants.get(session_id)
            if grant is not None:
                grant.downloads.add(hashlib.sha256(content).hexdigest())

    def revoke(self, session_id: str) -> None:
        """Forget a session (sign-out, expiry): none of its media is served any more."""
        with self._lock:
            self._grants.pop(session_id, None)

    def sessions(self) -> dict[str, str]:
        """Live grants: session id → user name (for tests and diagnostics)."""
        now = self._clock()
        with self._lock:
            return {sid: g.username for sid, g in self._grants.items() if g.expires > now}

    def allows(self, client: str | None, file_id: str) -> bool:
        """True when the browser with cookie `client` may fetch media `file_id`."""
        if not is_client_token(client) or not file_id:
            return False
        now = self._clock()
        with self._lock:
            live = {sid: g for sid, g in self._grants.items() if g.client == client and g.expires > now}
        if not live:
            return False
        if any(file_id in g.shown for g in live.values()):
            return True
        if set(live) & self._owners(file_id):
            return True
        wanted = [g for g in live.values() if g.downloads]
        if wanted:
            content = self._reader(file_id)
            if content is not None:
                digest = hashlib.sha256(content).hexdigest()
                return any(digest in g.downloads for g in wanted)
        return False


def is_client_token(value: Any) -> bool:
    return isinstance(value, str) and bool(_TOKEN_RE.match(value))


def _media_manager() -> Any | None:
    try:
        from streamlit import runtime

        return runtime.get_instance().media_file_mgr if runtime.exists() else None
    except Exception:  # no Streamlit runtime in this process
        return None


def streamlit_media_owners(file_id: str) -> set[str]:
    """Ids of the Streamlit sessions whose current page references media `file_id`."""
    manager = _media_manager()
    by_session = getattr(manager, "_files_by_session_and_coord", None) or {}
    # Copy first: script threads add to these dicts while the server thread reads them.
    return {sid for sid, files in list(by_session.items()) if file_id in list(files.values())}


def session_media_ids(session_id: str) -> set[str]:
    """Media ids the given Streamlit session currently references."""
    manager = _media_manager()
    by_session = getattr(manager, "_files_by_session_and_coord", None) or {}
    return set(list((by_session.get(session_id) or {}).values()))


def streamlit_media_bytes(file_id: str) -> bytes | None:
    manager = _media_manager()
    if manager is None or not getattr(manager, "can_read_files", False):
        return None
    stored = manager.read_file(file_id)
    return None if stored is None else bytes(stored.content)


MEDIA_ACCESS = MediaAccess()


# --- the ASGI middleware -----------------------------------------------------------------------
def _cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
    return None


class WorkstationGuard:
    """ASGI middleware: security headers on every response, the browser cookie, and the media rule.

    Args:
        app: the wrapped ASGI application (Streamlit's Starlette app).
        access: the media access registry (default: the process-wide `MEDIA_ACCESS`).
        csp: Content-Security-Policy value (default: `content_security_policy()`).
    """

    def __init__(self, app: Any, access: MediaAccess | None = None, csp: str | None = None):
        self.app = app
        self.access = access or MEDIA_ACCESS
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]
        self.headers.append((b"content-security-policy", (csp or content_security_policy()).encode("latin-1")))
        self._names = {k for k, _ in self.headers}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        client = _cookie(scope.get("headers") or [], CLIENT_COOKIE)
        new_client = None if is_client_token(client) else secrets.token_urlsafe(32)
        extra = list(self.headers)
        if new_client:
            extra.append((b"set-cookie", f"{CLIENT_COOKIE}={new_client}; Path=/; HttpOnly; SameSite=Strict".encode()))

        async def send_with_headers(message: dict) -> None:
            if message.get("type") == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self._names]
                message = {**message, "headers": kept + extra}
            await send(message)

        path = scope.get("path") or ""
        root = (scope.get("root_path") or "").rstrip("/")
        if root and path.startswith(root):
            path = path[len(root):]
        if path.startswith(MEDIA_PREFIX):
            # Streamlit addresses a file as "<id>.<extension>" and looks it up by the id alone.
            file_id = os.path.splitext(path[len(MEDIA_PREFIX):])[0]
            if not self.access.allows(client if new_client is None else None, file_id):
                await _not_found(send_with_headers)
                return
            await self.app(scope, receive, _no_store(send_with_headers))
            return
        await self.app(scope, receive, send_with_headers)


def _no_store(send: Callable) -> Callable:
    async def wrapped(message: dict) -> None:
        if message.get("type") == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
            message = {**message, "headers": headers + [(b"cache-control", b"no-store")]}
        await send(message)

    return wrapped


async def _not_found(send: Callable) -> None:
    body = b"Not found"
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

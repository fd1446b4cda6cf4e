"""Request limits of the API: loopback host names, the upload size limit, a per-token rate limit.

`RequestGuard` is the API's outermost middleware. It refuses a request whose Host header is not a name of
this machine (a web page cannot reach the API through DNS rebinding), refuses a body larger than the upload
limit with 413 (from Content-Length before reading, or while reading a body sent without one), turns any
error that escaped the handlers into the JSON error shape, and writes one audit row per authenticated call.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from typing import Any, Callable

import anyio
from starlette.exceptions import HTTPException as StarletteHTTPException

from medsight.api.errors import error_body

log = logging.getLogger("medsight.api")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Multipart framing and form fields on top of the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024


class TokenBucket:
    """Per-key token buckets: `burst` calls at once, refilled at `per_minute` calls a minute.

    Args:
        per_minute: sustained calls a minute per key.
        burst: calls allowed back to back.
        clock: monotonic seconds (replaceable in tests).
    """

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0 or burst < 1:
            raise ValueError("the rate limit needs per_minute > 0 and burst >= 1")
        self.rate, self.burst, self.clock = per_minute / 60.0, int(burst), clock
        self._buckets: dict[Any, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: Any) -> float:
        """Spend one call for `key`. Returns 0 when allowed, else the seconds to wait before the next call."""
        with self._lock:
            now = self.clock()
            level, since = self._buckets.get(key, (float(self.burst), now))
            level = min(float(self.burst), level + (now - since) * self.rate)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                return 0.0
            self._buckets[key] = (level, now)
            return (1.0 - level) / self.rate


def host_name(headers: list[tuple[bytes, bytes]]) -> str:
    """The Host header without its port ("[::1]:8502" → "::1")."""
    raw = next((v.decode("latin-1") for k, v in headers if k.lower() == b"host"), "").strip().lower()
    if raw.startswith("["):
        return raw[1:].split("]", 1)[0]
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


class _TooLarge(StarletteHTTPException):
    """Raised while reading an oversized body; an HTTP error, so FastAPI's body parsing passes it on as 413."""

    def __init__(self, limit_text: str):
        super().__init__(413, f"The request is larger than the {limit_text} limit.")


async def _send_error(send: Callable, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware in front of the API (see the module docstring).

    Args:
        app: the wrapped FastAPI app.
        max_body_bytes: largest accepted request body.
        allowed_hosts: Host names accepted (default: the loopback names).
        audit: called as audit(user, event, detail) for every call that carried a valid token.
    """

    def __init__(self, app: Any, max_body_bytes: int, allowed_hosts: frozenset[str] | None = None,
                 audit: Callable[[str | None, str, dict], None] | None = None):
        self.app, self.max_body_bytes = app, int(max_body_bytes)
        self.allowed_hosts = frozenset(h.lower() for h in (allowed_hosts or LOOPBACK_HOSTS))
        self.audit = audit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        if host_name(headers) not in self.allowed_hosts:
            await _send_error(send, 421, "host_not_allowed",
                              "The API answers only requests addressed to this machine (127.0.0.1 or localhost).")
            return
        declared = next((v for k, v in headers if k.lower() == b"content-length"), None)
        limit_text = f"{self.max_body_bytes / 2**20:.0f} MB"
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_error(send, 413, "request_too_large", f"The request is larger than the {limit_text} limit.")
            return

        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(limit_text)
            return message

        started, status = False, 500

        async def tracked_send(message: dict) -> None:
            nonlocal started, status
            if message.get("type") == "http.response.start":
                started, status = True, int(message.get("status", 500))
            await send(message)

        scope.setdefault("state", {})
        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge as exc:
            status = 413
            if not started:
                await _send_error(send, 413, "request_too_large", exc.detail)
        except Exception as exc:  # the handlers missed it: answer JSON, log the type only (see errors.py)
            status = 500
            ref = secrets.token_hex(4).upper()
            log.error("API error ref %s: %s.%s", ref, type(exc).__module__, type(exc).__qualname__)
            if not started:
                await _send_error(send, 500, "internal_error", f"The server could not complete the request. "
                                                               f"Reference {ref} — details are in the server log.")
        caller = scope["state"].get("api_caller")
        if caller is not None and self.audit is not None:
            detail = {"method": scope.get("method"), "endpoint": scope["state"].get("api_endpoint") or scope.get("path"),
                      "status": status, "token_id": caller.id}
            await anyio.to_thread.run_sync(self.audit, caller.user, "api_call", detail)


def retry_after(seconds: float) -> str:
    """Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))

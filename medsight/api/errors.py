"""Every API error is JSON `{"error": {"code": "stable_code", "message": "human text"}}`, never a stack trace."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("medsight.api")

# Codes for Starlette's own errors (unknown path, wrong method, ...).
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
               422: "invalid_request", 429: "rate_limited"}


class ApiError(Exception):
    """An error answered as JSON with a stable code.

    Args:
        status: HTTP status.
        code: stable machine-readable code (e.g. "invalid_token").
        message: one human sentence; never patient data or file contents.
        headers: extra response headers (e.g. Retry-After).
        extra: further fields inside "error" (e.g. the gate's decision).
    """

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra or {}


def error_body(code: str, message: str, **extra: Any) -> dict:
    """The JSON body of an error response."""
    return {"error": {"code": code, "message": message, **extra}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # Name the fields and what is wrong, not the values sent (they may be report text).
    problems = [f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body')}: {err.get('msg', 'invalid')}"
                for err in exc.errors()[:5]]
    return error_response(422, "invalid_request", "The request is not valid: " + "; ".join(problems) + ".")


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    ref = secrets.token_hex(4).upper()
    # The exception message can quote file contents or names: the log keeps only its type.
    log.error("API error ref %s: %s.%s", ref, type(exc).__module__, type(exc).__qualname__, exc_info=False)
    return error_response(500, "internal_error",
                          f"The server could not complete the request. Reference {ref} — details are in the server log.")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

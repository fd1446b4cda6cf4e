"""Bearer-token sign-in of API calls and the per-token rate limit (a FastAPI dependency)."""

from __future__ import annotations

from fastapi import Request

from medsight.api.errors import ApiError
from medsight.api.limits import retry_after
from medsight.storage import ApiToken

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="medsight"'}


def _unauthorised(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers=_CHALLENGE)


def bearer_secret(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def api_caller(request: Request) -> ApiToken:
    """The token behind this call, checked and charged to its rate limit.

    Raises:
        ApiError: 401 for a missing, unknown or revoked token or a removed account; 429 over the rate limit.
    """
    service = request.app.state.service
    endpoint = request.scope.get("route").path if request.scope.get("route") is not None else request.url.path
    request.state.api_endpoint = endpoint
    secret = bearer_secret(request)
    if secret is None:
        service.audit(None, "api_auth_failed", {"reason": "missing_token", "endpoint": endpoint})
        raise _unauthorised("missing_token", "This call needs an API token: send the header "
                                             "'Authorization: Bearer <token>' (create a token on the System page).")
    token = service.tokens.authenticate(secret)
    if token is None:
        revoked = service.tokens.is_revoked(secret)
        code = "revoked_token" if revoked else "invalid_token"
        service.audit(None, "api_auth_failed", {"reason": code, "endpoint": endpoint})
        raise _unauthorised(code, "This API token was revoked; create a new one on the System page." if revoked
                            else "This API token is not valid. Check it, or create a new one on the System page.")
    if not service.account_exists(token.user):
        service.audit(token.user, "api_auth_failed", {"reason": "account_removed", "endpoint": endpoint})
        raise _unauthorised("account_removed", "The account this token belongs to no longer exists.")
    wait = service.limiter.take(token.id)
    if wait > 0:
        raise ApiError(429, "rate_limited", f"Too many calls with this token; try again in {retry_after(wait)} s.",
                       headers={"Retry-After": retry_after(wait)})
    request.state.api_caller = token  # the request guard writes the audit row once the answer is known
    return token

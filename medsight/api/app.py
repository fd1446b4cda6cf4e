"""The API's FastAPI application: `create_app()` (served standalone by `python -m medsight.api`, or mounted
at `/api` inside the Streamlit app by app.py, where it shares the app's process and loaded models)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from medsight.api import errors
from medsight.api.limits import FORM_OVERHEAD_BYTES, LOOPBACK_HOSTS, RequestGuard, TokenBucket
from medsight.api.routes import router
from medsight.api.service import API_VERSION, ApiService
from medsight.config import Settings, get_settings

# Per-token rate limit: a script may send a burst of calls, then about one a second on average.
DEFAULT_RATE_PER_MINUTE = 60.0
DEFAULT_BURST = 20


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def create_app(settings: Settings | None = None, *, rate_per_minute: float | None = None, burst: int | None = None,
               allowed_hosts: frozenset[str] | None = None) -> Any:
    """Build the API.

    Args:
        settings: workstation settings (default: from the environment, as the app reads them).
        rate_per_minute / burst: per-token rate limit (default `MEDSIGHT_API_RATE` / `MEDSIGHT_API_BURST`,
            else 60 a minute with bursts of 20).
        allowed_hosts: Host header names answered (default: 127.0.0.1, localhost, ::1).

    Returns:
        An ASGI app: the FastAPI app behind `RequestGuard` (its `.app` is the FastAPI app, its
        `.service` the `ApiService`).

    The OpenAPI description is served at `/v1/openapi.json`; no HTML documentation pages are served, because
    FastAPI's pages load their scripts from a CDN and the workstation loads nothing from other hosts.
    """
    settings = settings or get_settings()
    limiter = TokenBucket(rate_per_minute or _env_float("MEDSIGHT_API_RATE", DEFAULT_RATE_PER_MINUTE),
                          int(burst or _env_float("MEDSIGHT_API_BURST", DEFAULT_BURST)))
    service = ApiService(settings, limiter)
    api = FastAPI(title="MedSight Workstation local API", version=API_VERSION,
                  description="Chest X-ray analysis on this machine for scripts and hospital systems. "
                              "Decision support, not a diagnosis.",
                  openapi_url=f"/{API_VERSION}/openapi.json", docs_url=None, redoc_url=None)
    api.state.service = service
    errors.install(api)
    api.include_router(router)
    guard = RequestGuard(api, settings.max_upload_mb * 2**20 + FORM_OVERHEAD_BYTES,
                         allowed_hosts or LOOPBACK_HOSTS, audit=service.audit)
    guard.service = service
    return guard

"""Local HTTP API: the workstation's analysis for scripts and hospital systems on this machine.

    python -m medsight.api [--port 8502]       # standalone, bound to 127.0.0.1
    streamlit run app.py                       # the app also serves it at http://127.0.0.1:8501/api/v1/...

Endpoints (JSON; errors are `{"error": {"code", "message"}}`): `GET /v1/health` (no token),
`GET /v1/models`, `POST /v1/analyze`, `POST /v1/verify`, `GET /v1/analyses/{id}/report.pdf`,
`GET /v1/openapi.json`. Calls carry `Authorization: Bearer <token>`; tokens are made per user on the
System page (`medsight.storage.ApiTokenStore`), and every call is written to that user's audit log.
"""

from medsight.api.app import create_app

__all__ = ["create_app"]

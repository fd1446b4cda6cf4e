"""The `/v1/` endpoints. Every call but `/v1/health` needs a bearer token (see `medsight.api.auth`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

import medsight
from medsight.api.auth import api_caller
from medsight.api.service import API_VERSION, ApiService
from medsight.storage import ApiToken

router = APIRouter(prefix=f"/{API_VERSION}")
Caller = Annotated[ApiToken, Depends(api_caller)]


def _service(request: Request) -> ApiService:
    return request.app.state.service


class VerifyRequest(BaseModel):
    """A report to check against one stored analysis."""

    analysis_id: str = Field(description="History record id or analysis id of one of your analyses")
    report_text: str = Field(description="the report to verify")


@router.get("/health", summary="Is the server up; which models, tiers and device (no token needed)")
def health(request: Request) -> dict:
    service = _service(request)
    return {"status": "ok", "api": API_VERSION, "version": medsight.__version__, "device": service.device(),
            "models": service.models(details=False)}


@router.get("/models", summary="The model registry: every slot, its tier, source, device and provenance")
def models(request: Request, caller: Caller) -> dict:
    return {"models": _service(request).models(details=True)}


@router.post("/analyze", summary="Analyse one study (PNG, JPEG or DICOM) and store it in your History")
def analyze(
    request: Request,
    caller: Caller,
    file: Annotated[UploadFile, File(description="the study: PNG, JPEG or DICOM")],
    symptoms: Annotated[str, Form(description="clinical context (optional)", max_length=20_000)] = "",
    maps: Annotated[Literal["key", "all", "none"], Form(description="which maps to compute")] = "key",
    override_gate: Annotated[bool, Form(description="analyse a study the input gate refused (recorded)")] = False,
) -> dict:
    content = file.file.read()
    return _service(request).analyse(caller.user, content, file.filename, symptoms, maps, override_gate)


@router.post("/verify", summary="Verify a report against one of your stored analyses and store the result")
def verify(request: Request, caller: Caller, body: VerifyRequest) -> dict:
    return _service(request).verify(caller.user, body.analysis_id, body.report_text)


@router.get("/analyses/{analysis_id}/report.pdf", summary="The PDF report of one of your stored analyses",
            response_class=Response, responses={200: {"content": {"application/pdf": {}}}})
def report_pdf(request: Request, caller: Caller, analysis_id: str) -> Response:
    pdf, record = _service(request).report_pdf(caller.user, analysis_id)
    name = f"medsight_{record['study_id'] or record['id']}.pdf"
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})

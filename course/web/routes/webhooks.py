"""`POST /webhooks/mailgun` and `POST /webhooks/sendgrid`: bounces and complaints from the mail
provider, each call checked against the provider's signature, each report taken down the one
suppression path. A provider whose key is not set has no webhook (404)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from course.db import session_scope
from course.errors import InvalidInput
from course.suppression import Report, report
from course.web.deps import ClockDep, EngineDep, RawBodyDep, SettingsDep
from course.web.errors import PageNotFound
from course.web.openapi import answers, json_body
from course.web.webhooks import mailgun, sendgrid

router = APIRouter(prefix="/webhooks")
# What a call changed: the reports it carried, and how many addresses are now suppressed.
_TAKEN = {
    "type": "object",
    "properties": {"reports": {"type": "integer"}, "suppressed": {"type": "integer"}},
    "required": ["reports", "suppressed"],
}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise InvalidInput("The request body is not valid JSON.") from None


def _take(
    found: list[tuple[str, Report, str]],
    *,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> JSONResponse:
    suppressed = 0
    with session_scope(engine) as session:
        for email, kind, why in found:
            suppressed += report(
                session,
                email=email,
                kind=kind,
                reason=why,
                now=clock.now(),
                soft_limit=settings.soft_bounce_limit,
            )
    return JSONResponse({"reports": len(found), "suppressed": suppressed})


@router.post(
    "/mailgun",
    responses={
        200: {"description": "Taken", "content": {"application/json": {"schema": _TAKEN}}},
        **answers(401, 404, 413, 422),
    },
    openapi_extra=json_body({"type": "object", "description": "Mailgun's signed event"}),
)
def from_mailgun(
    raw: RawBodyDep, *, settings: SettingsDep, clock: ClockDep, engine: EngineDep
) -> JSONResponse:
    if not settings.mailgun_signing_key:
        raise PageNotFound("Mailgun webhooks are not set up here.")
    body = _json(raw)
    if not isinstance(body, dict):
        raise InvalidInput("Send Mailgun's JSON event.")
    mailgun.verify(body, signing_key=settings.mailgun_signing_key, now=clock.now())
    return _take(mailgun.reports(body), settings=settings, clock=clock, engine=engine)


@router.post(
    "/sendgrid",
    responses={
        200: {"description": "Taken", "content": {"application/json": {"schema": _TAKEN}}},
        **answers(401, 404, 413, 422),
    },
    openapi_extra={
        **json_body({"type": "array", "description": "SendGrid's events", "items": {}}),
        "parameters": [
            {
                "name": sendgrid.SIGNATURE,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            },
            {
                "name": sendgrid.TIMESTAMP,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            },
        ],
    },
)
def from_sendgrid(
    request: Request,
    raw: RawBodyDep,
    *,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> JSONResponse:
    if not settings.sendgrid_public_key:
        raise PageNotFound("SendGrid webhooks are not set up here.")
    sendgrid.verify(
        raw,
        signature=request.headers.get(sendgrid.SIGNATURE, ""),
        timestamp=request.headers.get(sendgrid.TIMESTAMP, ""),
        public_key=settings.sendgrid_public_key,
        now=clock.now(),
    )
    return _take(sendgrid.reports(_json(raw)), settings=settings, clock=clock, engine=engine)

"""Unsubscribe: a page that asks, and the RFC 8058 one-click POST that every email names."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from course.db import session_scope
from course.suppression import unsubscribe
from course.web.deps import ClockDep, EngineDep, UnsubscribeLink
from course.web.openapi import LINK, answers
from course.web.pages import page

# Every route here is opened by a reader's signed link.
router = APIRouter(responses=answers(*LINK))


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(request: Request, token: str, reader: UnsubscribeLink) -> HTMLResponse:
    return page(request, "unsubscribe.html", locale=reader.locale, token=token, done=False)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_route(
    request: Request, *, token: str, reader: UnsubscribeLink, clock: ClockDep, engine: EngineDep
) -> HTMLResponse:
    # RFC 8058: the one-click POST carries no cookies and must not redirect, so the signed
    # token alone authorizes it; there is no CSRF check to pass.
    with session_scope(engine) as session:
        unsubscribe(session, clock, reader.id)
    return page(request, "unsubscribe.html", locale=reader.locale, token=token, done=True)

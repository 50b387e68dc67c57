"""A reader's own data: ask for a private link, see it, download it, erase it.

The unsubscribe page (linked from every email) only asks for a link; the link itself is emailed
to the address on file and works for a day, so a forwarded lesson or a mail scanner holding the
unsubscribe link cannot open the reader's answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import Engine

from course.db import session_scope
from course.readers.personal_data import email_of, erase_for_good, export, request_data_link
from course.web.deps import (
    ClockDep,
    DataLink,
    EngineDep,
    EnqueueDep,
    LimiterDep,
    SettingsDep,
    UnsubscribeLink,
    client_address,
)
from course.web.errors import too_many
from course.web.openapi import LINK, answers
from course.web.pages import page

# Every route here is opened by a reader's signed link.
router = APIRouter(responses=answers(*LINK))
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _private(answer: Response) -> Response:
    answer.headers.update(PRIVATE)
    return answer


def _export(engine: Engine, enrollment_id: int) -> dict[str, Any] | None:
    with session_scope(engine) as session:
        return export(session, email_of(session, enrollment_id))


@router.post("/my-data/{token}/link", response_class=HTMLResponse, responses=answers(429))
def ask_for_a_link(
    request: Request,
    *,
    reader: UnsubscribeLink,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    enqueue: EnqueueDep,
    limiter: LimiterDep,
) -> HTMLResponse:
    if not (
        limiter.allow("data_link", client_address(request))
        and limiter.allow("data_link", f"reader:{reader.id}")
    ):
        raise too_many()
    with session_scope(engine) as session:
        ids = request_data_link(session, settings, clock, enrollment_id=reader.id)
    enqueue([ids])  # after commit: the worker must find the row
    return page(request, "my_data.html", locale=reader.locale, state="link_sent")


@router.get("/my-data/{token}", response_class=HTMLResponse)
def show(request: Request, *, token: str, reader: DataLink, engine: EngineDep) -> Response:
    data = _export(engine, reader.id)
    return _private(
        page(request, "my_data.html", locale=reader.locale, state="show", token=token, data=data)
    )


@router.get("/my-data/{token}/download")
def download(reader: DataLink, engine: EngineDep) -> Response:
    return _private(
        JSONResponse(
            _export(engine, reader.id),
            headers={"Content-Disposition": 'attachment; filename="homeward-my-data.json"'},
        )
    )


@router.get("/my-data/{token}/erase", response_class=HTMLResponse)
def ask_to_erase(request: Request, token: str, reader: DataLink) -> Response:
    """Erasing cannot be undone: it is asked once more, on a page of its own."""
    return _private(
        page(request, "my_data.html", locale=reader.locale, state="ask_erase", token=token)
    )


@router.post("/my-data/{token}/erase", response_class=HTMLResponse)
def erase_route(request: Request, reader: DataLink, engine: EngineDep) -> Response:
    with session_scope(engine) as session:
        email = email_of(session, reader.id)
    erase_for_good(engine, email)
    return _private(page(request, "my_data.html", locale=reader.locale, state="erased"))

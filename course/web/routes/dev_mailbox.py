"""Development only: a page listing the mail the local SMTP catcher received."""

from __future__ import annotations

import email
import mailbox
from email.message import EmailMessage
from email.policy import default

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from course.web.errors import PageNotFound
from course.web.pages import page

router = APIRouter(prefix="/dev/mailbox", include_in_schema=False)


def _box(request: Request) -> mailbox.Maildir:
    path = request.app.state.settings.dev_mailbox
    path.parent.mkdir(parents=True, exist_ok=True)  # Maildir makes tmp/new/cur itself
    return mailbox.Maildir(str(path), factory=None, create=True)


def _parse(raw: mailbox.MaildirMessage) -> EmailMessage:
    return email.message_from_bytes(bytes(raw), policy=default)


@router.get("", response_class=HTMLResponse)
def inbox(request: Request) -> Response:
    box = _box(request)
    rows = []
    for key, raw in box.iteritems():
        msg = _parse(raw)
        rows.append(
            {
                "key": key,
                "to": msg["To"],
                "subject": msg["Subject"],
                "date": msg["Date"],
                "ts": raw.get_date(),
            }
        )
    rows.sort(key=lambda r: r["ts"], reverse=True)
    return page(request, "dev_mailbox.html", messages=rows)


@router.get("/{key}", response_class=HTMLResponse)
def show(request: Request, key: str) -> Response:
    box = _box(request)
    try:
        msg = _parse(box[key])
    except KeyError:
        raise PageNotFound("No such message in the dev mailbox.") from None
    part = msg.get_body(preferencelist=("html", "plain"))
    body = part.get_content() if part else ""
    if part is not None and part.get_content_type() == "text/plain":
        return Response(body, media_type="text/plain; charset=utf-8")
    return HTMLResponse(body)


@router.get("/{key}/source")
def source(request: Request, key: str) -> Response:
    box = _box(request)
    try:
        return Response(bytes(box[key]), media_type="text/plain; charset=utf-8")
    except KeyError:
        raise PageNotFound("No such message in the dev mailbox.") from None

""" "Was this helpful?": one click from a lesson, a kind thank-you, one count for the lesson."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from course.db import session_scope
from course.errors import LinkEnded, TokenInvalid
from course.readers.feedback import count, lesson_named
from course.tokens import Purpose, read_token
from course.web.deps import ClockDep, EngineDep, SettingsDep
from course.web.openapi import LINK, answers
from course.web.pages import page

# Every route here is opened by a reader's signed link.
router = APIRouter(responses=answers(*LINK))


@router.get("/helpful/{token}/{answer}", response_class=HTMLResponse)
def helpful(
    request: Request,
    *,
    token: str,
    answer: str,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> HTMLResponse:
    if answer not in ("yes", "no"):
        raise TokenInvalid("This link is not valid.")
    link = read_token(settings.secret_key, Purpose.HELPFUL, token, clock=clock)
    version_id, position = lesson_named(link.key or "")
    with session_scope(engine) as session:
        if not count(session, version_id=version_id, position=position, helpful=answer == "yes"):
            raise LinkEnded()
    return page(request, "helpful.html", answer=answer)

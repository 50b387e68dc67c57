"""The confirmation link: the double opt-in that starts the lessons."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from course.db import session_scope
from course.models import EnrollmentStatus
from course.readers.confirm import confirm
from course.tokens import Purpose, make_token
from course.web.deps import ClockDep, ConfirmLink, EngineDep, KickDep, SettingsDep
from course.web.openapi import LINK, answers
from course.web.pages import page

# Every route here is opened by a reader's signed link.
router = APIRouter(responses=answers(*LINK))


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_route(
    request: Request,
    *,
    reader: ConfirmLink,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    kick: KickDep,
) -> HTMLResponse:
    with session_scope(engine) as session:
        enrollment = confirm(session, settings, clock, enrollment_id=reader.id)
        status = enrollment.status
        if status == EnrollmentStatus.ACTIVE and enrollment.next_position > 1:
            status = "under_way"  # the link opened again, after lessons began
    kick()  # after commit: the tick must find lesson 1 due
    unsubscribe_token = make_token(
        settings.secret_key, Purpose.UNSUBSCRIBE, reader.key, clock=clock
    )
    return page(
        request,
        "confirmed.html",
        locale=reader.locale,
        state=status,
        unsubscribe_token=unsubscribe_token,
    )

""" "My loved one has started treatment": a page that asks, and the switch to aftercare."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from course.db import session_scope
from course.errors import LinkEnded
from course.models import Enrollment, EnrollmentStatus
from course.readers.preferences import start_aftercare
from course.web.deps import ClockDep, EngineDep, SettingsDep, StageLink
from course.web.openapi import LINK, answers
from course.web.pages import page

# Every route here is opened by a reader's signed link.
router = APIRouter(responses=answers(*LINK))


def _state(enrollment: Enrollment | None, asked: bool) -> str:
    if enrollment is None:
        raise LinkEnded()
    if enrollment.status != EnrollmentStatus.ACTIVE:
        return "inactive"
    if enrollment.started_treatment_at is not None:
        return "done" if asked else "already"
    return "ask"


@router.get("/stage/{token}", response_class=HTMLResponse)
def ask(request: Request, *, token: str, reader: StageLink, engine: EngineDep) -> HTMLResponse:
    """Asks first: a link preview or a mail scanner following the link changes nothing."""
    with session_scope(engine) as session:
        state = _state(session.get(Enrollment, reader.id), asked=False)
    return page(request, "stage.html", locale=reader.locale, token=token, state=state)


@router.post("/stage/{token}", response_class=HTMLResponse)
def switch(
    request: Request,
    *,
    token: str,
    reader: StageLink,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> HTMLResponse:
    with session_scope(engine) as session:
        before = session.get(Enrollment, reader.id)
        already = before is not None and before.started_treatment_at is not None
        enrollment = start_aftercare(session, settings, clock, enrollment_id=reader.id)
        state = "already" if already else _state(enrollment, asked=True)
    return page(request, "stage.html", locale=reader.locale, token=token, state=state)

"""The reader's own page for their emails, behind the preferences link in every email: pause and
resume, pace, send hour and time zone, a date that matters, discretion, language, stopping.

No account and no password: the signed link is the reader's key, of its own purpose (it cannot
confirm, unsubscribe or open their data). Every form works without JavaScript; a change answers
with a redirect to the page, which says it was saved.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from course.clock import as_utc
from course.db import session_scope
from course.errors import InvalidInput
from course.models import PAUSED_UNTIL_RESUMED, Enrollment, EnrollmentStatus, Subscriber
from course.readers import preferences as prefs
from course.readers.signup import send_hour, yes_or_no
from course.render import long_date
from course.schedule import zone
from course.suppression import leave, unsubscribe
from course.tokens import Purpose, make_token
from course.web.deps import (
    ClockDep,
    EngineDep,
    EnqueueDep,
    FieldsDep,
    PreferencesLink,
    Reader,
    SettingsDep,
)
from course.web.openapi import BODY, LINK, PREFERENCES_BODY, answers
from course.web.pages import page, say

# Every route here is opened by a reader's signed link.
router = APIRouter(responses=answers(*LINK))
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _date(raw: Any, field: str) -> date | None:
    text = str(raw or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            "Please give the date as year, month and day, like 2026-03-15.", "date", field
        ) from None


def _int(raw: Any, field: str, code: str) -> int | None:
    text = str(raw or "").strip()
    if not text:
        return None
    try:
        return int(text.split(":")[0])
    except ValueError:
        raise InvalidInput("Please pick one of the answers in the list.", code, field) from None


def _context(
    session: Session, reader: Reader, *, settings: SettingsDep, now_clock: ClockDep
) -> dict[str, Any]:
    enrollment = session.get(Enrollment, reader.id)
    subscriber = session.get(Subscriber, enrollment.subscriber_id) if enrollment else None
    if enrollment is None or subscriber is None:
        return {"state": "ended"}
    if enrollment.status == EnrollmentStatus.PENDING:
        return {"state": "pending"}
    if enrollment.status != EnrollmentStatus.ACTIVE:
        return {"state": "ended"}
    locale = reader.locale or "en"
    tz = zone(subscriber.time_zone)

    def day(value: Any) -> str:
        return long_date(as_utc(value).astimezone(tz).date(), locale)

    paused_until = enrollment.paused_until
    paused_open = paused_until is not None and as_utc(paused_until) >= PAUSED_UNTIL_RESUMED
    pausing = paused_until is not None and as_utc(paused_until) > now_clock.now()
    offers_stage = enrollment.started_treatment_at is None
    return {
        "state": "show",
        "paused_open": paused_open,
        "paused_until": day(paused_until) if pausing and not paused_open else None,
        "next_day": day(enrollment.next_due_at) if enrollment.next_due_at and not pausing else None,
        "pace": enrollment.pace_days,
        "send_hour": subscriber.send_hour,
        "time_zone": subscriber.time_zone,
        "conversation_on": enrollment.conversation_on,
        "treatment_on": enrollment.treatment_on,
        "discreet": subscriber.discreet,
        "course_locale": locale,
        "languages": sorted(settings.sequences),
        "stage_url": "/stage/"
        + make_token(settings.secret_key, Purpose.STAGE, reader.key, clock=now_clock)
        if offers_stage
        else None,
    }


def _show(
    request: Request,
    *,
    token: str,
    reader: Reader,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    status: int = 200,
    extra: dict[str, Any] | None = None,
) -> Response:
    with session_scope(engine) as session:
        context = _context(session, reader, settings=settings, now_clock=clock)
    answer = page(
        request,
        "preferences.html",
        status,
        locale=reader.locale,
        token=token,
        saved=request.query_params.get("saved") == "1",
        **{**context, **(extra or {})},
    )
    answer.headers.update(PRIVATE)
    return answer


@router.get("/preferences/{token}", response_class=HTMLResponse)
def show(
    request: Request,
    *,
    token: str,
    reader: PreferencesLink,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    return _show(request, token=token, reader=reader, settings=settings, clock=clock, engine=engine)


@router.get("/preferences/{token}/resume", response_class=HTMLResponse)
def ask_to_resume(request: Request, *, token: str, reader: PreferencesLink) -> Response:
    """The resume button in the email that confirms a pause: it asks first, so a link scanner
    opening it changes nothing."""
    answer = page(request, "preferences.html", locale=reader.locale, token=token, state="resume")
    answer.headers.update(PRIVATE)
    return answer


@router.post(
    "/preferences/{token}",
    response_class=HTMLResponse,
    responses={303: {"description": "Saved: back to the page"}, **answers(*BODY)},
    openapi_extra=PREFERENCES_BODY,
)
def change(
    request: Request,
    *,
    token: str,
    reader: PreferencesLink,
    data: FieldsDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    enqueue: EnqueueDep,
) -> Response:
    action = str(data.get("action") or "")
    queued: list[int] = []
    try:
        with session_scope(engine) as session:
            args = (session, settings, clock)
            if action == "pause":
                how_long = str(data.get("how_long") or "")
                queued = prefs.pause(*args, enrollment_id=reader.id, how_long=how_long)
            elif action == "resume":
                prefs.resume(*args, enrollment_id=reader.id)
            elif action == "pace":
                days = _int(data.get("pace"), "pace", "choice")
                prefs.set_pace(*args, enrollment_id=reader.id, days=days)
            elif action == "time":
                prefs.set_delivery_time(
                    *args,
                    enrollment_id=reader.id,
                    send_hour=send_hour(data.get("send_hour")),
                    time_zone=str(data.get("time_zone") or "UTC"),
                )
            elif action == "dates":
                prefs.set_dates(
                    *args,
                    enrollment_id=reader.id,
                    conversation_on=_date(data.get("conversation_on"), "conversation_on"),
                    treatment_on=_date(data.get("treatment_on"), "treatment_on"),
                )
            elif action == "discreet":
                prefs.set_discreet(
                    *args,
                    enrollment_id=reader.id,
                    discreet=yes_or_no(data.get("discreet"), "discreet"),
                )
            elif action == "language":
                locale = str(data.get("locale") or "")
                prefs.set_language(*args, enrollment_id=reader.id, locale=locale)
            elif action == "leave":
                leave(session, clock, reader.id)
            elif action == "leave_all":
                unsubscribe(session, clock, reader.id)
            else:
                raise InvalidInput("That change is not one we know.", "not_understood")
    except InvalidInput as exc:
        return _show(
            request,
            token=token,
            reader=reader,
            settings=settings,
            clock=clock,
            engine=engine,
            status=422,
            extra={"error": say(request, exc, reader.locale), "error_field": exc.field},
        )
    enqueue([queued])  # after commit: the email that confirms a pause
    if action in ("leave", "leave_all"):
        return page(
            request,
            "preferences.html",
            locale=reader.locale,
            token=token,
            state="left" if action == "leave" else "left_all",
        )
    lang = request.query_params.get("lang")
    suffix = f"&lang={lang}" if lang in ("en", "es") else ""
    return RedirectResponse(f"/preferences/{token}?saved=1{suffix}", status_code=303)

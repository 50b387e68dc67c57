"""Staff pages for helping readers and seeing how a course is doing: find a reader by their
exact address and act for them, enroll someone by hand, a course's dashboard, and its CSV
exports. The address is only ever posted, never put in an address bar (it would land in logs
and browser history): a found reader has their own page by number."""

from __future__ import annotations

import json
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import Engine

from course import catalog, stats
from course.clock import Clock
from course.db import scrub, session_scope
from course.errors import InvalidInput
from course.models import row_id
from course.staff import audit, export, helpdesk
from course.staff.accounts import Actor, NotPermitted
from course.web import charts
from course.web.deps import ClockDep, EngineDep, EnqueueDep, RowId, SettingsDep
from course.web.staff.auth import StaffDep, StaffFormDep
from course.web.staff.pages import staff_page

router = APIRouter(prefix="/staff", include_in_schema=False)

ACTIONS = ("pause", "resume", "stop", "aftercare", "resend")
NOTICES = {
    "pause": "Paused. The reader gets one email saying so, with a link to resume.",
    "resume": "Resumed: the next lesson comes at the reader's next send hour.",
    "stop": "Stopped: this course sends nothing more. Their other courses go on.",
    "aftercare": "Switched to recovery lessons (the overdose and safety lessons still come).",
    "resend": "The lesson is on its way again.",
}


def attachment(filename: str) -> dict[str, str]:
    """Headers of a download of personal data: saved as a file, kept in no cache."""
    return {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    }


def _reader_page(
    request: Request,
    actor: Actor,
    found: helpdesk.Reader,
    *,
    status: int = 200,
    **context: object,
) -> HTMLResponse:
    clock = request.app.state.clock
    engine = request.app.state.engine
    with session_scope(engine) as session:
        offers = catalog.published(session)
    return staff_page(
        request,
        "reader.html",
        status,
        actor=actor,
        section="readers",
        reader=found,
        now=clock.now(),
        courses=[o.version for o in offers],
        notice=NOTICES.get(request.query_params.get("notice", ""), "") or _enrolled(request),
        **context,
    )


@router.get("/readers", response_class=HTMLResponse)
def find_page(request: Request, actor: StaffDep) -> HTMLResponse:
    return staff_page(request, "find_reader.html", actor=actor, section="readers")


@router.post("/readers/find")
def find(request: Request, form: StaffFormDep, *, engine: EngineDep) -> Response:
    actor, data = form
    try:
        with session_scope(engine) as session:
            found = helpdesk.find(session, str(data.get("email") or ""))
            subscriber_id = row_id(found.subscriber)
    except (InvalidInput, helpdesk.ReaderNotFound) as exc:
        return staff_page(
            request,
            "find_reader.html",
            404 if isinstance(exc, helpdesk.ReaderNotFound) else 422,
            actor=actor,
            section="readers",
            error=exc.message,
            error_field="email",
        )
    return RedirectResponse(f"/staff/readers/{subscriber_id}", status_code=303)


@router.get("/readers/{subscriber_id}", response_class=HTMLResponse)
def reader_page(
    request: Request, actor: StaffDep, *, subscriber_id: RowId, engine: EngineDep
) -> HTMLResponse:
    with session_scope(engine) as session:
        found = helpdesk.reader(session, subscriber_id)
    return _reader_page(request, actor, found)


@router.post("/readers/{subscriber_id}/courses/{enrollment_id}")
def act(
    request: Request,
    form: StaffFormDep,
    *,
    subscriber_id: RowId,
    enrollment_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    enqueue: EnqueueDep,
) -> Response:
    actor, data = form
    action = str(data.get("action") or "")
    try:
        with session_scope(engine) as session:
            queued = helpdesk.act(
                session,
                settings,
                clock,
                actor=actor,
                subscriber_id=subscriber_id,
                enrollment_id=enrollment_id,
                action=action,
                value=str(data.get("value") or ""),
            )
    except InvalidInput as exc:
        with session_scope(engine) as session:
            found = helpdesk.reader(session, subscriber_id)
        return _reader_page(request, actor, found, status=422, error=exc.message)
    enqueue([queued])  # after commit
    return RedirectResponse(
        f"/staff/readers/{subscriber_id}?notice={quote(action)}", status_code=303
    )


@router.post("/readers/{subscriber_id}/enroll")
def enroll_in_another(
    request: Request,
    form: StaffFormDep,
    *,
    subscriber_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    enqueue: EnqueueDep,
) -> Response:
    actor, data = form
    try:
        with session_scope(engine) as session:
            found = helpdesk.reader(session, subscriber_id)
            s = found.subscriber
            done = helpdesk.enroll_by_hand(
                session,
                settings,
                clock,
                actor=actor,
                fields={
                    "email": s.email,
                    "sequence": data.get("sequence"),
                    "consent_note": data.get("consent_note"),
                },
            )
    except InvalidInput as exc:
        with session_scope(engine) as session:
            found = helpdesk.reader(session, subscriber_id)
        return _reader_page(
            request, actor, found, status=422, error=exc.message, error_field=exc.field
        )
    enqueue([done.queued])
    return RedirectResponse(
        f"/staff/readers/{subscriber_id}?enrolled={done.outcome}", status_code=303
    )


@router.get("/readers/{subscriber_id}/export")
def export_reader(
    actor: StaffDep, *, subscriber_id: RowId, clock: ClockDep, engine: EngineDep
) -> Response:
    with session_scope(engine) as session:
        data = helpdesk.export(session, clock, actor, subscriber_id=subscriber_id)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers=attachment(f"reader-{subscriber_id}.json"),
    )


@router.post("/readers/{subscriber_id}/erase")
def erase_reader(
    request: Request,
    form: StaffFormDep,
    *,
    subscriber_id: RowId,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, data = form
    if str(data.get("confirm") or "").strip().lower() != "erase":
        with session_scope(engine) as session:
            found = helpdesk.reader(session, subscriber_id)
        return _reader_page(
            request,
            actor,
            found,
            status=422,
            error='Type the word "erase" to confirm: this cannot be undone.',
            error_field="confirm",
        )
    with session_scope(engine) as session:
        helpdesk.erase(session, clock, actor, subscriber_id=subscriber_id)
    scrub(engine)  # the bytes, not only the rows (course.db)
    return staff_page(
        request, "find_reader.html", actor=actor, section="readers", notice="Erased for good."
    )


@router.get("/enroll", response_class=HTMLResponse)
def enroll_page(request: Request, actor: StaffDep, *, engine: EngineDep) -> HTMLResponse:
    with session_scope(engine) as session:
        offers = catalog.published(session)
    return staff_page(
        request,
        "enroll.html",
        actor=actor,
        section="readers",
        courses=[o.version for o in offers],
        notice=_enrolled(request),
    )


def _enrolled(request: Request) -> str:
    outcome = request.query_params.get("enrolled", "")
    return helpdesk.Enrolled([], outcome).words if outcome in helpdesk.OUTCOMES else ""


@router.post("/enroll")
def enroll_by_hand(
    request: Request,
    form: StaffFormDep,
    *,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    enqueue: EnqueueDep,
) -> Response:
    actor, data = form
    try:
        with session_scope(engine) as session:
            done = helpdesk.enroll_by_hand(session, settings, clock, actor=actor, fields=data)
    except InvalidInput as exc:
        with session_scope(engine) as session:
            offers = catalog.published(session)
        return staff_page(
            request,
            "enroll.html",
            422,
            actor=actor,
            section="readers",
            courses=[o.version for o in offers],
            error=exc.message,
            error_field=exc.field,
            form=data,
        )
    enqueue([done.queued])
    # Back to the empty form (a reload sends nothing twice), saying what happened.
    return RedirectResponse(f"/staff/enroll?enrolled={done.outcome}", status_code=303)


@router.get("/courses/{slug}/dashboard", response_class=HTMLResponse)
def dashboard(
    request: Request, actor: StaffDep, *, slug: str, clock: ClockDep, engine: EngineDep
) -> HTMLResponse:
    figures = stats.dashboard(engine, slug, now=clock.now())
    if figures is None:
        raise helpdesk.CourseNotFound(slug)
    return staff_page(
        request,
        "dashboard.html",
        actor=actor,
        section="courses",
        d=figures,
        signups_chart=charts.columns(
            [(day.strftime("%b %d"), n) for day, n in figures.signups],
            title=f"Sign-ups per day, the last {len(figures.signups)} days",
        ),
        funnel_chart=charts.rows(
            [(f"{line.position}. {line.key}", line.reached) for line in figures.lessons],
            title="Readers who reached each lesson",
        ),
    )


def csv_answer(actor: Actor, *, slug: str, kind: str, clock: Clock, engine: Engine) -> Response:
    """A course's readers or emails as CSV, streamed (admins only; audited)."""
    if not actor.may_administer():
        raise NotPermitted("Only an admin can export a course's readers.")
    if kind not in export.KINDS:
        raise helpdesk.CourseNotFound(f"{slug}/{kind}")
    with session_scope(engine) as session:
        if catalog.newest_version(session, slug) is None:
            raise helpdesk.CourseNotFound(slug)
        audit.record(session, clock, actor, action=f"course.export.{kind}", target=slug)
    return StreamingResponse(
        export.csv_chunks(export.rows(engine, kind, slug)),
        media_type="text/csv; charset=utf-8",
        headers=attachment(f"{slug}-{kind}.csv"),
    )


@router.get("/courses/{slug}/export/{kind}.csv")
def export_course(
    actor: StaffDep, *, slug: str, kind: str, clock: ClockDep, engine: EngineDep
) -> Response:
    return csv_answer(actor, slug=slug, kind=kind, clock=clock, engine=engine)

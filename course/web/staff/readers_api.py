"""The staff API for readers and course figures: what the reader and dashboard pages do, as JSON
(course.web.staff.readers), with an API token."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from course import stats
from course.clock import as_utc
from course.db import scrub, session_scope
from course.errors import InvalidInput
from course.staff import drafts, helpdesk
from course.web.deps import ClockDep, EngineDep, EnqueueDep, RowId, SettingsDep
from course.web.openapi import answers
from course.web.staff.api import TokenDep
from course.web.staff.readers import csv_answer

router = APIRouter(
    prefix="/api/staff", tags=["staff: readers"], responses=answers(400, 401, 403, 404, 422)
)


class FindReader(BaseModel):
    email: str = Field(max_length=254)


class Action(BaseModel):
    action: Literal["pause", "resume", "stop", "aftercare", "resend"]
    value: str = Field(
        default="",
        max_length=16,
        description="pause: week, month or resumed; resend: the lesson's number",
    )


class ByHand(BaseModel):
    email: str = Field(max_length=254)
    sequence: str = Field(max_length=64)
    consent_note: str = Field(max_length=500, description="How they agreed, in a sentence")
    first_name: str = Field(default="", max_length=40)
    relationship: str = "other"
    substance: str = "unsure"


def _iso(value: Any) -> Any:
    return as_utc(value).isoformat() if hasattr(value, "tzinfo") and value is not None else value


def _reader(found: helpdesk.Reader) -> dict[str, Any]:
    s = found.subscriber
    return {
        "id": s.id,
        "email": s.email,
        "first_name": s.first_name,
        "relationship": s.relationship,
        "substance": s.substance,
        "suppressed_at": _iso(s.suppressed_at),
        "suppressed_because": s.suppressed_reason,
        "soft_bounces": s.soft_bounces,
        "courses": [
            {
                "enrollment": c.enrollment.id,
                "course": c.enrollment.sequence_slug,
                "title": c.title,
                "version": c.version,
                "status": c.enrollment.status,
                "next_lesson": c.enrollment.next_position,
                "next_subject": c.next_subject,
                "next_due_at": _iso(c.enrollment.next_due_at),
                "paused_until": _iso(c.enrollment.paused_until),
                "started_treatment_at": _iso(c.enrollment.started_treatment_at),
                "consent": {
                    "at": _iso(c.enrollment.consent_at),
                    "from": c.enrollment.consent_source,
                    "note": c.enrollment.consent_note,
                    "confirmed_at": _iso(c.enrollment.confirmed_at),
                },
                "emails": [{**asdict(m), "at": _iso(m.at)} for m in c.emails],
            }
            for c in found.courses
        ],
    }


@router.post("/find-reader")
def find_reader(*, body: FindReader, actor: TokenDep, engine: EngineDep) -> Any:
    """The reader with exactly this address (posted, so it never lands in an access log)."""
    with session_scope(engine) as session:
        return _reader(helpdesk.find(session, body.email))


@router.get("/readers/{subscriber_id}")
def read_reader(*, subscriber_id: RowId, actor: TokenDep, engine: EngineDep) -> Any:
    with session_scope(engine) as session:
        return _reader(helpdesk.reader(session, subscriber_id))


@router.post("/readers/{subscriber_id}/courses/{enrollment_id}")
def act(
    *,
    subscriber_id: RowId,
    enrollment_id: RowId,
    body: Action,
    actor: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    enqueue: EnqueueDep,
) -> Any:
    with session_scope(engine) as session:
        queued = helpdesk.act(
            session,
            settings,
            clock,
            actor=actor,
            subscriber_id=subscriber_id,
            enrollment_id=enrollment_id,
            action=body.action,
            value=body.value,
        )
    enqueue([queued])
    with session_scope(engine) as session:
        return _reader(helpdesk.reader(session, subscriber_id))


@router.post("/enroll", status_code=202)
def enroll_by_hand(
    *,
    body: ByHand,
    actor: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    enqueue: EnqueueDep,
) -> Any:
    with session_scope(engine) as session:
        done = helpdesk.enroll_by_hand(
            session, settings, clock, actor=actor, fields=body.model_dump()
        )
    enqueue([done.queued])
    return {"outcome": done.outcome, "said": done.words}


@router.get("/readers/{subscriber_id}/export")
def export_reader(
    *, subscriber_id: RowId, actor: TokenDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        return helpdesk.export(session, clock, actor, subscriber_id=subscriber_id)


@router.delete("/readers/{subscriber_id}", status_code=204)
def erase_reader(
    *, subscriber_id: RowId, actor: TokenDep, clock: ClockDep, engine: EngineDep
) -> Response:
    with session_scope(engine) as session:
        helpdesk.erase(session, clock, actor, subscriber_id=subscriber_id)
    scrub(engine)
    return Response(status_code=204)


@router.get("/courses/{slug}/dashboard")
def course_dashboard(*, slug: str, actor: TokenDep, clock: ClockDep, engine: EngineDep) -> Any:
    figures = stats.dashboard(engine, slug, now=clock.now())
    if figures is None:
        with session_scope(engine) as session:
            if drafts.open_draft(session, slug) is not None:
                raise InvalidInput(f"{slug} is not published yet: it has no readers to count.")
        raise helpdesk.CourseNotFound(slug)
    data = asdict(figures)
    data["signups"] = [[d.isoformat(), n] for d, n in figures.signups]
    return json.loads(json.dumps(data, default=str))


@router.get(
    "/courses/{slug}/export/{kind}.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV, streamed"}},
)
def export_course(
    *,
    slug: str,
    kind: Literal["enrollments", "deliveries"],
    actor: TokenDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    return csv_answer(actor, slug=slug, kind=kind, clock=clock, engine=engine)

"""The staff API: everything the staff pages do, as JSON under /api/staff, for scripts and
other systems. It takes an API token only (`Authorization: Bearer hw_...`, made with
`course staff token create` or on the People page): a browser's cookie never reaches it, so no
other site can make a signed-in browser call it."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt
from sqlmodel import Session

from course.db import session_scope
from course.errors import InvalidInput
from course.models import LessonDraft, SequenceDraft, SequenceVersion, StaffMember, row_id
from course.render import Layout
from course.settings import Settings
from course.staff import audit, drafts, offering
from course.staff import mail as staff_mail
from course.staff.accounts import Actor
from course.web.deps import ClockDep, EngineDep, RowId, SettingsDep
from course.web.errors import NotSignedIn
from course.web.openapi import answers
from course.web.staff.auth import current
from course.web.staff.pages import _persona

_bearer = HTTPBearer(auto_error=False, description="An API token: course staff token create NAME")


def _token(request: Request, _: Annotated[Any, Depends(_bearer)]) -> Actor:
    actor = current(request)
    if actor is None or actor.via == "session":
        raise NotSignedIn("This needs an API token: Authorization: Bearer <token>.")
    return actor


TokenDep = Annotated[Actor, Depends(_token)]

router = APIRouter(
    prefix="/api/staff",
    tags=["staff"],
    responses=answers(400, 401, 403, 404, 422),
)


def _layout(settings: Settings) -> Layout:
    return Layout.load(settings.lessons_dir / "_layout")


# What no schema can say is checked by the domain and answered 422 with a sentence: a title or
# sender name that gives the topic away, a short name already taken.
Slug = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="Lower-case letters, digits, dashes"),
]
TEXT = r"\S"  # not only spaces


class NewCourse(BaseModel):
    slug: Slug
    title: str = Field(max_length=200, pattern=TEXT)
    sender_name: str = Field(max_length=80, pattern=r'^[^<>"]*\S[^<>"]*$')
    locale: str = Field(default="en", pattern="^(en|es)$")
    description: str = Field(default="", max_length=2000)


class Settings_(BaseModel):
    title: str = Field(max_length=200, pattern=TEXT)
    sender_name: str = Field(max_length=80, pattern=r'^[^<>"]*\S[^<>"]*$')
    locale: str = Field(default="en", pattern="^(en|es)$")
    description: str = Field(default="", max_length=2000)
    reading_limit: StrictFloat | None = None
    allow_revealing_subjects: StrictBool = False


class Source(BaseModel):
    title: str = Field(max_length=300)
    url: str = Field(default="", max_length=500)


class LessonFields(BaseModel):
    key: str = Field(max_length=64)
    subject: str = Field(default="", max_length=200)
    preheader: str = Field(default="", max_length=300)
    heading: str = Field(default="", max_length=120)
    delay_days: StrictInt = Field(default=0, ge=0, le=365)
    module: str = Field(default="recognize", pattern="^(recognize|act|aftercare)$")
    never_skip: StrictBool = False
    anchor: str = Field(default="", pattern="^(|before:conversation|after:conversation)$")
    body: str = Field(default="", max_length=100_000)
    sources: list[Source] = Field(default_factory=list)


class Move(BaseModel):
    by: StrictInt = Field(ge=-1, le=1, description="-1: earlier, 1: later")


class SignOff(BaseModel):
    review_by: date


class SendBack(BaseModel):
    comment: str = Field(min_length=1, max_length=4000)


class Rollback(BaseModel):
    version: StrictInt = Field(ge=1, le=2**31 - 1)


class Offer(BaseModel):
    slugs: list[Slug] = Field(min_length=1)


class TestSend(BaseModel):
    lesson_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="One lesson; none: every lesson"
    )
    relationship: str = "parent"
    substance: str = "opioids"
    first_name: str = ""


def _version(version: SequenceVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {
        "version": version.version,
        "title": version.title,
        "locale": version.locale,
        "published_at": version.published_at.isoformat(),
        "reviewed_by": version.reviewed_by,
        "review_by": version.review_by.isoformat() if version.review_by else None,
    }


def _lesson(item: LessonDraft) -> dict[str, Any]:
    return {
        "id": item.id,
        "position": item.position,
        "key": item.key,
        "subject": item.subject,
        "preheader": item.preheader,
        "heading": item.heading,
        "delay_days": item.delay_days,
        "module": item.module,
        "never_skip": item.never_skip,
        "anchor": item.anchor,
        "body": item.body,
        "sources": item.sources,
    }


def _draft(session: Session, draft: SequenceDraft, settings: Settings) -> dict[str, Any]:
    check = drafts.check_draft(session, draft, layout=_layout(settings))
    return {
        "id": draft.id,
        "slug": draft.slug,
        "state": draft.state,
        "title": draft.title,
        "description": draft.description,
        "locale": draft.locale,
        "sender_name": draft.sender_name,
        "options": draft.options,
        "review_comment": draft.review_comment,
        "review_by": draft.review_by.isoformat() if draft.review_by else None,
        "lessons": [_lesson(o) for o in drafts.lessons_of(session, row_id(draft))],
        "check": {
            "ok": check.ok,
            "findings": [
                {"lesson": f.key, "line": f.line, "severity": f.severity, "message": f.message}
                for f in check.findings
            ],
        },
    }


def _answer(
    session: Session, draft_id: int, settings: Settings, *, status: int = 200
) -> JSONResponse:
    return JSONResponse(
        _draft(session, drafts.get(session, draft_id), settings), status_code=status
    )


@router.get("/courses")
def list_courses(*, actor: TokenDep, clock: ClockDep, engine: EngineDep) -> Any:
    with session_scope(engine) as session:
        rows = drafts.courses(session)
        return [
            {
                "slug": r.slug,
                "title": r.title,
                "locale": r.locale,
                "published": _version(r.published),
                "review_overdue": r.review_overdue(clock.now().date()),
                "draft": {"id": r.draft.id, "state": r.draft.state} if r.draft else None,
                "readers": r.readers,
            }
            for r in rows
        ]


@router.post("/courses", status_code=201)
def create_course(
    *, body: NewCourse, actor: TokenDep, settings: SettingsDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        draft = drafts.create(session, clock, actor, slug=body.slug, fields=body.model_dump())
        return _answer(session, row_id(draft), settings, status=201)


@router.post("/courses/{slug}/draft")
def edit_course(
    *, slug: str, actor: TokenDep, settings: SettingsDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        draft = drafts.edit_published(session, clock, actor, slug=slug)
        return _answer(session, row_id(draft), settings)


@router.get("/courses/{slug}/versions")
def list_versions(*, slug: str, actor: TokenDep, engine: EngineDep) -> Any:
    with session_scope(engine) as session:
        found = drafts.versions(session, slug)
        if not found and drafts.open_draft(session, slug) is None:
            raise drafts.DraftNotFound(slug)
        return [_version(v) for v in found]


@router.post("/courses/{slug}/rollback")
def roll_back(
    *,
    slug: str,
    body: Rollback,
    actor: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Any:
    with session_scope(engine) as session:
        found = drafts.versions(session, slug)
        if not found and drafts.open_draft(session, slug) is None:
            raise drafts.DraftNotFound(slug)
        if not found:
            raise InvalidInput(
                f"{slug} is not published yet: there is no version to go back to.",
                "not_published",
                "version",
            )
        earlier = next((v for v in found if v.version == body.version), None)
        if earlier is None:
            raise InvalidInput(
                f"{slug} has no version {body.version}: it has 1 to {found[0].version}.",
                "no_such_version",
                "version",
            )
        version = drafts.rollback(
            session, clock, actor, slug=slug, version_id=row_id(earlier), layout=_layout(settings)
        )
        return _version(version)


@router.get("/drafts/{draft_id}")
def read_draft(
    *, draft_id: RowId, actor: TokenDep, settings: SettingsDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        return _answer(session, draft_id, settings)


@router.put("/drafts/{draft_id}")
def save_settings(
    *,
    draft_id: RowId,
    body: Settings_,
    actor: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Any:
    fields = body.model_dump()
    fields["reading_limit"] = "" if body.reading_limit is None else str(body.reading_limit)
    fields["allow_revealing_subjects"] = "1" if body.allow_revealing_subjects else ""
    with session_scope(engine) as session:
        drafts.update_settings(session, clock, actor, draft_id=draft_id, fields=fields)
        return _answer(session, draft_id, settings)


@router.post("/drafts/{draft_id}/lessons", status_code=201)
def add_lesson(*, draft_id: RowId, actor: TokenDep, clock: ClockDep, engine: EngineDep) -> Any:
    with session_scope(engine) as session:
        return JSONResponse(
            _lesson(drafts.add_lesson(session, clock, actor, draft_id=draft_id)), 201
        )


@router.put("/drafts/{draft_id}/lessons/{lesson_id}")
def save_lesson(
    *,
    draft_id: RowId,
    lesson_id: RowId,
    body: LessonFields,
    actor: TokenDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Any:
    fields: dict[str, Any] = body.model_dump()
    fields["never_skip"] = "1" if body.never_skip else ""
    fields["sources"] = [s.model_dump() for s in body.sources]
    with session_scope(engine) as session:
        saved = drafts.update_lesson(
            session, clock, actor, draft_id=draft_id, lesson_id=lesson_id, fields=fields
        )
        return _lesson(saved)


@router.delete("/drafts/{draft_id}/lessons/{lesson_id}", status_code=204)
def remove_lesson(
    *, draft_id: RowId, lesson_id: RowId, actor: TokenDep, clock: ClockDep, engine: EngineDep
) -> None:
    with session_scope(engine) as session:
        drafts.remove_lesson(session, clock, actor, draft_id=draft_id, lesson_id=lesson_id)


@router.post("/drafts/{draft_id}/lessons/{lesson_id}/move")
def move_lesson(
    *,
    draft_id: RowId,
    lesson_id: RowId,
    body: Move,
    actor: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Any:
    with session_scope(engine) as session:
        drafts.move_lesson(
            session, clock, actor, draft_id=draft_id, lesson_id=lesson_id, by=body.by
        )
        return _answer(session, draft_id, settings)


@router.get("/drafts/{draft_id}/lessons/{lesson_id}/preview")
def preview(
    *,
    request: Request,
    draft_id: RowId,
    lesson_id: RowId,
    actor: TokenDep,
    settings: SettingsDep,
    engine: EngineDep,
) -> Any:
    """The email for a reader described by ?relationship=&substance=&first_name=."""
    with session_scope(engine) as session:
        draft = drafts.get(session, draft_id)
        found = drafts.lesson(session, draft_id, lesson_id)
        try:
            rendered = drafts.preview(
                draft, found, _persona(request.query_params), layout=_layout(settings)
            )
        except Exception as exc:  # a template can fail in any way
            return JSONResponse({"error": drafts.render_problem(exc), "code": "render"}, 422)
    return {
        "subject": rendered.subject,
        "preheader": rendered.preheader,
        "html": rendered.html,
        "text": rendered.text,
    }


@router.post("/drafts/{draft_id}/test-send")
def test_send(
    *,
    draft_id: RowId,
    body: TestSend,
    actor: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Any:
    persona = _persona(body.model_dump())
    with session_scope(engine) as session:
        draft = drafts.get(session, draft_id)
        lessons = drafts.lessons_of(session, draft_id)
        chosen = [o for o in lessons if body.lesson_id is None or o.id == body.lesson_id]
        if not chosen:
            raise drafts.DraftNotFound(body.lesson_id)
        messages = [
            staff_mail.test_message(
                settings,
                to=actor.email,
                rendered=drafts.preview(draft, o, persona, layout=_layout(settings)),
                sender_name=draft.sender_name,
                label=f"lesson {o.position} of {len(lessons)}",
            )
            for o in chosen
        ]
        audit.record(
            session,
            clock,
            actor,
            action="draft.test_send",
            target=draft.slug,
            lessons=len(messages),
        )
    staff_mail.send(settings, messages)
    return {"sent": len(messages), "to": actor.email}


@router.post("/drafts/{draft_id}/submit")
def submit(
    *, draft_id: RowId, actor: TokenDep, settings: SettingsDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        draft = drafts.get(session, draft_id)
        passed = drafts.check_draft(session, draft, layout=_layout(settings)).ok
        drafts.submit(session, clock, actor, draft_id=draft_id, passed=passed)
        return _answer(session, draft_id, settings)


@router.post("/drafts/{draft_id}/withdraw")
def withdraw(
    *, draft_id: RowId, actor: TokenDep, settings: SettingsDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        drafts.withdraw(session, clock, actor, draft_id=draft_id)
        return _answer(session, draft_id, settings)


@router.post("/drafts/{draft_id}/sign-off")
def sign_off(
    *,
    draft_id: RowId,
    body: SignOff,
    actor: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Any:
    with session_scope(engine) as session:
        drafts.sign_off(session, clock, actor, draft_id=draft_id, review_by=body.review_by)
        return _answer(session, draft_id, settings)


@router.post("/drafts/{draft_id}/send-back")
def send_back(
    *,
    draft_id: RowId,
    body: SendBack,
    actor: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Any:
    with session_scope(engine) as session:
        drafts.send_back(session, clock, actor, draft_id=draft_id, comment=body.comment)
        return _answer(session, draft_id, settings)


@router.post("/drafts/{draft_id}/publish")
def publish(
    *, draft_id: RowId, actor: TokenDep, settings: SettingsDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:

        def email(staff_id: int) -> str:
            member = session.get(StaffMember, staff_id)
            return member.email if member else ""

        version = drafts.publish_draft(
            session, clock, actor, draft_id=draft_id, layout=_layout(settings), reviewer_email=email
        )
        return _version(version)


@router.get("/drafts/{draft_id}/diff")
def diff(*, draft_id: RowId, actor: TokenDep, engine: EngineDep) -> Any:
    with session_scope(engine) as session:
        changes = drafts.diff(session, drafts.get(session, draft_id))
    return [{"lesson": c.key, "change": c.change, "lines": c.lines} for c in changes]


@router.get("/offer")
def read_offer(*, actor: TokenDep, settings: SettingsDep, engine: EngineDep) -> Any:
    with session_scope(engine) as session:
        return [
            {"slug": c.offer.version.slug, "locale": c.offer.version.locale, "offered": c.shown}
            for c in offering.current(session, settings)
        ]


@router.put("/offer")
def save_offer(
    *, body: Offer, actor: TokenDep, settings: SettingsDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        offering.choose(session, clock, actor, slugs=body.slugs)
    return read_offer(actor=actor, settings=settings, engine=engine)


@router.get("/audit")
def read_audit(*, actor: TokenDep, engine: EngineDep) -> Any:
    actor.require_admin()
    with session_scope(engine) as session:
        return [
            {
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "detail": e.detail,
            }
            for e in audit.recent(session, limit=500)
        ]

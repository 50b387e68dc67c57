"""The staff pages: sign in, courses, the draft editor with its preview and checker, review,
publishing and rollback, the sign-up page's offer, people and tokens, the audit log.

Every page works without JavaScript: each change is a form that posts and comes back. With
JavaScript, the lesson preview follows the typing (htmx, served from /static).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlmodel import Session
from starlette.datastructures import UploadFile

from course.authoring import folder
from course.db import session_scope
from course.errors import CourseError, InvalidInput, LessonInvalid
from course.models import LessonDraft, SequenceDraft, StaffMember, row_id
from course.render import PERSONA_VALUES, Layout, Persona
from course.settings import Settings
from course.staff import accounts, audit, drafts, offering, sign_in
from course.staff import mail as staff_mail
from course.staff.accounts import Actor
from course.web.deps import (
    ClockDep,
    EngineDep,
    FieldsDep,
    LimiterDep,
    RowId,
    SettingsDep,
    client_address,
)
from course.web.errors import too_many
from course.web.pages import TEMPLATES
from course.web.staff.auth import (
    COOKIE,
    StaffDep,
    StaffFormDep,
    csrf_for,
    current,
    set_session_cookie,
)

router = APIRouter(prefix="/staff", include_in_schema=False)

# Staff pages frame only the app's own preview, run only the app's own scripts, post only to it.
# Inline styles are allowed: the live preview's frame shows an email, whose styles are inline.
STAFF_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# A preview is a staff-written email: no script at all, nothing loaded but its own styles.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'none'"
)
PRIVATE = {"Cache-Control": "no-store", "Content-Security-Policy": STAFF_CSP}


def _layout(settings: Settings) -> Layout:
    return Layout.load(settings.lessons_dir / "_layout")


def staff_page(
    request: Request, name: str, status: int = 200, *, actor: Actor | None = None, **context: Any
) -> HTMLResponse:
    answer = TEMPLATES.TemplateResponse(
        request,
        f"staff/{name}",
        {"actor": actor, "csrf": csrf_for(request), **context},
        status_code=status,
    )
    answer.headers.update(PRIVATE)
    return answer


def _back(url: str, notice: str = "") -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}notice={notice}" if notice else url, status_code=303)


def _notice(request: Request) -> str:
    return {
        "saved": "Saved.",
        "published": "Published: new readers get this version, and readers in the middle of "
        "the course move on with it.",
        "submitted": "Submitted for review.",
        "signed_off": "Signed off. A reviewer or an admin can publish it now.",
        "sent_back": "Sent back to the author with your comment.",
        "withdrawn": "Withdrawn: the draft can be edited again.",
        "test_sent": "Sent to your own address, marked as a test.",
        "rolled_back": "Published again as the newest version.",
        "added": "Added.",
        "token": "",
    }.get(request.query_params.get("notice", ""), "")


# --- signing in -------------------------------------------------------------------------------


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request) -> HTMLResponse:
    return staff_page(
        request, "sign_in.html", state="ask", next=request.query_params.get("next", "")
    )


@router.post("/sign-in", response_class=HTMLResponse)
def ask_for_link(
    request: Request,
    background: BackgroundTasks,
    *,
    data: FieldsDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    limiter: LimiterDep,
) -> HTMLResponse:
    raw = str(data.get("email") or "")
    if not limiter.allow("staff_sign_in", client_address(request)):
        raise too_many()
    try:
        email = accounts.normal_email(raw)
    except InvalidInput as exc:
        return staff_page(
            request, "sign_in.html", 422, state="ask", error=exc.message, error_field="email"
        )
    if not limiter.allow("staff_sign_in_address", hashlib.sha256(email.encode()).hexdigest()):
        raise too_many()
    with session_scope(engine) as session:
        issued = sign_in.request_link(session, clock, email=email)
    if issued is not None:
        member, secret = issued
        link = f"{settings.base_url.rstrip('/')}/staff/sign-in/{secret}"
        nxt = str(data.get("next") or "")
        if nxt.startswith("/staff"):
            link += f"?next={nxt}"
        # After the answer: the page comes back as fast for an address we do not know.
        background.add_task(
            staff_mail.send,
            settings,
            [staff_mail.sign_in_message(settings, to=member.email, link=link)],
        )
    return staff_page(request, "sign_in.html", state="sent")


@router.get("/sign-in/{secret}", response_class=HTMLResponse)
def confirm_sign_in(
    request: Request, *, secret: str, clock: ClockDep, engine: EngineDep
) -> HTMLResponse:
    """The link from the email asks for one press: a scanner opening links does not spend it."""
    with session_scope(engine) as session:
        usable = sign_in.link_is_usable(session, clock, secret)
    return staff_page(
        request,
        "sign_in.html",
        200 if usable else 410,
        state="confirm" if usable else "expired",
        secret=secret,
        next=request.query_params.get("next", ""),
    )


@router.post("/sign-in/{secret}")
def sign_in_now(request: Request, *, secret: str, clock: ClockDep, engine: EngineDep) -> Response:
    with session_scope(engine) as session:
        opened = sign_in.redeem(session, clock, secret)
        if opened is not None:
            audit.record(session, clock, opened[0], action="staff.sign_in")
    if opened is None:
        return staff_page(request, "sign_in.html", 410, state="expired")
    nxt = request.query_params.get("next", "")
    answer = RedirectResponse(nxt if nxt.startswith("/staff") else "/staff", status_code=303)
    set_session_cookie(answer, request, opened[1])
    return answer


@router.post("/sign-out")
def sign_out(
    request: Request, form: StaffFormDep, *, clock: ClockDep, engine: EngineDep
) -> Response:
    actor, _ = form
    with session_scope(engine) as session:
        sign_in.sign_out(session, clock, request.cookies.get(COOKIE, ""))
        audit.record(session, clock, actor, action="staff.sign_out")
    answer = staff_page(request, "sign_in.html", state="signed_out")
    answer.delete_cookie(COOKIE, path="/")
    return answer


# --- courses ----------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def home(request: Request, actor: StaffDep, *, clock: ClockDep, engine: EngineDep) -> HTMLResponse:
    with session_scope(engine) as session:
        rows = drafts.courses(session)
    return staff_page(
        request,
        "home.html",
        actor=actor,
        section="courses",
        rows=rows,
        today=clock.now().date(),
        notice=_notice(request),
    )


@router.get("/courses/new", response_class=HTMLResponse)
def new_course_page(request: Request, actor: StaffDep) -> HTMLResponse:
    return staff_page(request, "new_course.html", actor=actor, section="courses", values={})


def _invalid(
    request: Request, name: str, exc: CourseError, *, actor: Actor, **context: Any
) -> HTMLResponse:
    field = getattr(exc, "field", "")
    status = 403 if isinstance(exc, accounts.NotPermitted) else 422
    return staff_page(
        request, name, status, actor=actor, error=exc.message, error_field=field, **context
    )


@router.post("/courses/new")
def create_course(
    request: Request, form: StaffFormDep, *, clock: ClockDep, engine: EngineDep
) -> Response:
    actor, data = form
    try:
        with session_scope(engine) as session:
            draft = drafts.create(
                session, clock, actor, slug=str(data.get("slug") or ""), fields=data
            )
            draft_id = row_id(draft)
    except InvalidInput as exc:
        return _invalid(
            request, "new_course.html", exc, actor=actor, section="courses", values=data
        )
    return _back(f"/staff/drafts/{draft_id}", "saved")


@router.get("/courses/{slug}", response_class=HTMLResponse)
def course_page(
    request: Request, actor: StaffDep, *, slug: str, clock: ClockDep, engine: EngineDep
) -> HTMLResponse:
    with session_scope(engine) as session:
        versions = drafts.versions(session, slug)
        draft = drafts.open_draft(session, slug)
    if not versions and draft is None:
        raise drafts.DraftNotFound(slug)
    return staff_page(
        request,
        "course.html",
        actor=actor,
        section="courses",
        slug=slug,
        versions=versions,
        draft=draft,
        today=clock.now().date(),
        notice=_notice(request),
    )


@router.post("/courses/{slug}/edit")
def edit_course(form: StaffFormDep, *, slug: str, clock: ClockDep, engine: EngineDep) -> Response:
    actor, _ = form
    with session_scope(engine) as session:
        draft = drafts.edit_published(session, clock, actor, slug=slug)
        draft_id = row_id(draft)
    return _back(f"/staff/drafts/{draft_id}")


@router.post("/courses/{slug}/rollback")
def roll_back(
    request: Request,
    form: StaffFormDep,
    *,
    slug: str,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, data = form
    try:
        version_id = int(str(data.get("version_id") or "0"))
        with session_scope(engine) as session:
            drafts.rollback(
                session, clock, actor, slug=slug, version_id=version_id, layout=_layout(settings)
            )
    except (accounts.NotPermitted, LessonInvalid, ValueError) as exc:
        message = exc.message if isinstance(exc, CourseError) else "Pick a version to go back to."
        return _back(f"/staff/courses/{slug}?error={quote(message)}")
    return _back(f"/staff/courses/{slug}", "rolled_back")


def _zip(files: folder.SequenceFiles) -> Response:
    buffer = io.BytesIO()
    with (
        drafts.written(files) as path,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for file in sorted(path.iterdir()):
            archive.write(file, f"{files.slug}/{file.name}")
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{files.slug}.zip"', **PRIVATE},
    )


@router.get("/courses/{slug}/versions/{number}/export")
def export_version(actor: StaffDep, *, slug: str, number: RowId, engine: EngineDep) -> Response:
    with session_scope(engine) as session:
        version = next((v for v in drafts.versions(session, slug) if v.version == number), None)
        if version is None:
            raise drafts.DraftNotFound(f"{slug} version {number}")
        return _zip(drafts.version_files(session, version))


@router.get("/import", response_class=HTMLResponse)
def import_page(request: Request, actor: StaffDep) -> HTMLResponse:
    return staff_page(request, "import.html", actor=actor, section="courses")


@dataclass(frozen=True)
class _Upload:
    csrf: str
    archive: bytes | None  # None: no file chosen


async def _read_upload(request: Request) -> _Upload:
    """The import form, read on the event loop so that the route can run on a thread."""
    form = await request.form(max_files=1, max_fields=5, max_part_size=2_000_000)
    upload = form.get("archive")
    chosen = isinstance(upload, UploadFile) and bool(upload.filename)
    return _Upload(
        csrf=str(form.get("csrf") or ""),
        archive=await upload.read() if chosen and isinstance(upload, UploadFile) else None,
    )


@router.post("/import")
def import_upload(
    request: Request,
    actor: StaffDep,  # first: a signed-out post is refused before its body is read
    upload: Annotated[_Upload, Depends(_read_upload)],
    *,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    """A zip of a sequence folder becomes a draft (of a new course or a published one)."""
    from course.staff.sign_in import csrf_ok

    if actor.via == "session" and not csrf_ok(
        settings.secret_key, request.cookies.get(COOKIE, ""), upload.csrf
    ):
        raise InvalidInput("This form is out of date: reload the page and try again.")
    try:
        if upload.archive is None:
            raise InvalidInput("Choose a .zip file of a course folder.", "archive", "archive")
        data = upload.archive
        with tempfile.TemporaryDirectory(prefix="homeward-import-") as tmp:
            path = _unzip(data, Path(tmp))
            with session_scope(engine) as session:
                draft = drafts.import_folder(session, clock, actor, path=path)
                draft_id = row_id(draft)
    except LessonInvalid as exc:
        return staff_page(
            request, "import.html", 422, actor=actor, section="courses", problems=exc.problems
        )
    except InvalidInput as exc:
        return _invalid(request, "import.html", exc, actor=actor, section="courses")
    return _back(f"/staff/drafts/{draft_id}", "saved")


def _unzip(data: bytes, into: Path) -> Path:
    """The one course folder in a zip, unpacked safely (no paths outside it, nothing huge)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInput("That file is not a .zip file.", "archive", "archive") from None
    names = [n for n in archive.namelist() if not n.endswith("/")]
    if not names or len(names) > 500 or sum(i.file_size for i in archive.infolist()) > 20_000_000:
        raise InvalidInput(
            "The zip must hold one course folder (at most 500 files).", "archive", "archive"
        )
    tops = {Path(n).parts[0] for n in names}
    if len(tops) != 1 or any(".." in Path(n).parts or n.startswith("/") for n in names):
        raise InvalidInput(
            "The zip must hold one folder, named for the course, with sequence.toml and the lessons in it.",
            "archive",
            "archive",
        )
    for name in names:
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(name))
    return into / tops.pop()


# --- drafts -----------------------------------------------------------------------------------


def _persona(source: Any) -> Persona:
    """The reader a preview is for, from a query or form (unknown values fall back)."""
    relationship = str(source.get("relationship") or "parent")
    substance = str(source.get("substance") or "opioids")
    return Persona(
        first_name=str(source.get("first_name") or "")[:40],
        relationship=relationship if relationship in PERSONA_VALUES["relationship"] else "other",
        substance=substance if substance in PERSONA_VALUES["substance"] else "unsure",
    )


def _reviewer_email(session: Session) -> Callable[[int], str]:
    def email(staff_id: int) -> str:
        member = session.get(StaffMember, staff_id)
        return member.email if member else ""

    return email


def _draft_context(session: Session, draft: SequenceDraft, settings: Settings) -> dict[str, Any]:
    lessons = drafts.lessons_of(session, row_id(draft))
    found = drafts.check_draft(session, draft, layout=_layout(settings))
    author = session.get(StaffMember, draft.author_id)
    reviewer = session.get(StaffMember, draft.reviewer_id) if draft.reviewer_id else None
    return {
        "draft": draft,
        "lessons": lessons,
        "check": found,
        "author": author.email if author else "",
        "reviewer": reviewer.email if reviewer else "",
        "editable": draft.state in drafts.EDITABLE,
    }


@router.get("/drafts/{draft_id}", response_class=HTMLResponse)
def draft_page(
    request: Request,
    actor: StaffDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> HTMLResponse:
    with session_scope(engine) as session:
        context = _draft_context(session, drafts.get(session, draft_id), settings)
    return staff_page(
        request,
        "draft.html",
        actor=actor,
        section="courses",
        notice=_notice(request),
        error=request.query_params.get("error", ""),
        default_review_by=clock.now().date() + timedelta(days=365),
        **context,
    )


def _draft_action(
    request: Request,
    *,
    draft_id: RowId,
    engine: Any,
    settings: Settings,
    run: Callable[[Session], str],
) -> Response:
    """Run one change to a draft; its errors come back on the draft's page, named."""
    try:
        with session_scope(engine) as session:
            notice = run(session)
    except (InvalidInput, accounts.NotPermitted, LessonInvalid) as exc:
        actor = current(request)
        assert actor is not None
        with session_scope(engine) as session:
            context = _draft_context(session, drafts.get(session, draft_id), settings)
        message = exc.message if not isinstance(exc, LessonInvalid) else "; ".join(exc.problems[:3])
        return staff_page(
            request,
            "draft.html",
            403 if isinstance(exc, accounts.NotPermitted) else 422,
            actor=actor,
            section="courses",
            error=message,
            error_field=getattr(exc, "field", ""),
            default_review_by=request.app.state.clock.now().date() + timedelta(days=365),
            **context,
        )
    return _back(f"/staff/drafts/{draft_id}", notice)


@router.post("/drafts/{draft_id}/settings")
def save_settings(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, data = form

    def run(session: Session) -> str:
        drafts.update_settings(session, clock, actor, draft_id=draft_id, fields=data)
        return "saved"

    return _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)


@router.post("/drafts/{draft_id}/lessons")
def add_lesson(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, _ = form
    made: list[int] = []

    def run(session: Session) -> str:
        made.append(row_id(drafts.add_lesson(session, clock, actor, draft_id=draft_id)))
        return "added"

    answer = _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)
    return _back(f"/staff/drafts/{draft_id}/lessons/{made[0]}", "added") if made else answer


@router.post("/drafts/{draft_id}/lessons/{lesson_id}/move")
def move_lesson(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    lesson_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, data = form
    by = -1 if str(data.get("by")) == "up" else 1

    def run(session: Session) -> str:
        drafts.move_lesson(session, clock, actor, draft_id=draft_id, lesson_id=lesson_id, by=by)
        return "saved"

    return _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)


@router.post("/drafts/{draft_id}/lessons/{lesson_id}/remove")
def remove_lesson(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    lesson_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, _ = form

    def run(session: Session) -> str:
        drafts.remove_lesson(session, clock, actor, draft_id=draft_id, lesson_id=lesson_id)
        return "saved"

    return _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)


def _lesson_context(
    session: Session, *, draft_id: RowId, lesson_id: RowId, settings: Settings, persona: Persona
) -> dict[str, Any]:
    draft = drafts.get(session, draft_id)
    found = drafts.lesson(session, draft_id, lesson_id)
    check = drafts.check_draft(session, draft, layout=_layout(settings))
    return {
        "draft": draft,
        "lesson": found,
        "sources_text": drafts.sources_text(found.sources),
        "findings": check.for_lesson(found.key),
        "score": check.scores.get(found.key),
        "persona": persona,
        "personas": PERSONA_VALUES,
        "editable": draft.state in drafts.EDITABLE,
        "live": True,
    }


@router.get("/drafts/{draft_id}/lessons/{lesson_id}", response_class=HTMLResponse)
def lesson_page(
    request: Request,
    actor: StaffDep,
    *,
    draft_id: RowId,
    lesson_id: RowId,
    settings: SettingsDep,
    engine: EngineDep,
) -> HTMLResponse:
    persona = _persona(request.query_params)
    with session_scope(engine) as session:
        context = _lesson_context(
            session, draft_id=draft_id, lesson_id=lesson_id, settings=settings, persona=persona
        )
    return staff_page(
        request, "lesson.html", actor=actor, section="courses", notice=_notice(request), **context
    )


@router.post("/drafts/{draft_id}/lessons/{lesson_id}")
def save_lesson(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    lesson_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    """Save the lesson (the Preview button saves too, then shows the preview for the reader
    chosen)."""
    actor, data = form
    persona = _persona(data)
    try:
        with session_scope(engine) as session:
            drafts.update_lesson(
                session, clock, actor, draft_id=draft_id, lesson_id=lesson_id, fields=data
            )
    except (InvalidInput, accounts.NotPermitted) as exc:
        with session_scope(engine) as session:
            context = _lesson_context(
                session, draft_id=draft_id, lesson_id=lesson_id, settings=settings, persona=persona
            )
        return staff_page(
            request,
            "lesson.html",
            403 if isinstance(exc, accounts.NotPermitted) else 422,
            actor=actor,
            section="courses",
            error=exc.message,
            error_field=getattr(exc, "field", ""),
            values=data,
            **context,
        )
    query = f"relationship={persona.relationship}&substance={persona.substance}"
    if persona.first_name:
        query += "&first_name=" + persona.first_name
    return _back(f"/staff/drafts/{draft_id}/lessons/{lesson_id}?{query}", "saved")


def _preview_html(
    draft: SequenceDraft, found: LessonDraft, *, persona: Persona, settings: Settings
) -> tuple[str, str, str]:
    """(html, text, problem): the email for `persona`, or why it cannot be shown."""
    try:
        rendered = drafts.preview(draft, found, persona, layout=_layout(settings))
    except Exception as exc:  # a template can fail in any way: say so beside the editor
        return "", "", drafts.render_problem(exc)
    return rendered.html, rendered.text, ""


@router.get("/drafts/{draft_id}/lessons/{lesson_id}/preview")
def preview(
    request: Request,
    actor: StaffDep,
    *,
    draft_id: RowId,
    lesson_id: RowId,
    settings: SettingsDep,
    engine: EngineDep,
) -> Response:
    """The email itself, for the preview frame: served with a CSP that runs nothing."""
    persona = _persona(request.query_params)
    with session_scope(engine) as session:
        draft = drafts.get(session, draft_id)
        found = drafts.lesson(session, draft_id, lesson_id)
        html, text, problem = _preview_html(draft, found, persona=persona, settings=settings)
    headers = {"Content-Security-Policy": PREVIEW_CSP, "Cache-Control": "no-store"}
    if problem:
        return HTMLResponse(f"<p>{Markup.escape(problem)}</p>", status_code=200, headers=headers)
    if request.query_params.get("part") == "text":
        return Response(text, media_type="text/plain; charset=utf-8", headers=headers)
    return HTMLResponse(html, headers=headers)


@router.post("/drafts/{draft_id}/lessons/{lesson_id}/live", response_class=HTMLResponse)
def live_preview(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    lesson_id: RowId,
    settings: SettingsDep,
    engine: EngineDep,
) -> HTMLResponse:
    """What the preview would show for the fields as typed, unsaved (htmx swaps it in)."""
    actor, data = form
    persona = _persona(data)
    with session_scope(engine) as session:
        draft = drafts.get(session, draft_id)
        found = drafts.lesson(session, draft_id, lesson_id)
        typed = LessonDraft(
            draft_id=draft_id,
            position=found.position,
            key=found.key,
            subject=str(data.get("subject") or ""),
            preheader=str(data.get("preheader") or ""),
            heading=str(data.get("heading") or ""),
            module=str(data.get("module") or found.module),
            body=str(data.get("body") or ""),
            sources=found.sources,
        )
        html, _, problem = _preview_html(draft, typed, persona=persona, settings=settings)
    return staff_page(request, "_preview.html", actor=actor, html=html, problem=problem)


@router.post("/drafts/{draft_id}/test-send")
def test_send(
    form: StaffFormDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    """One lesson, or every lesson at once (the course on a fast clock), to the staff member's
    own address, each marked as a test."""
    actor, data = form
    persona = _persona(data)
    which = str(data.get("lesson_id") or "all")
    with session_scope(engine) as session:
        draft = drafts.get(session, draft_id)
        lessons = drafts.lessons_of(session, draft_id)
        chosen = [o for o in lessons if which == "all" or str(o.id) == which]
        messages = []
        for found in chosen:
            rendered = drafts.preview(draft, found, persona, layout=_layout(settings))
            label = (
                f"lesson {found.position} of {len(lessons)}"
                if which == "all"
                else f"lesson {found.position}"
            )
            messages.append(
                staff_mail.test_message(
                    settings,
                    to=actor.email,
                    rendered=rendered,
                    sender_name=draft.sender_name,
                    label=label,
                )
            )
        audit.record(
            session,
            clock,
            actor,
            action="draft.test_send",
            target=draft.slug,
            lessons=len(messages),
        )
    staff_mail.send(settings, messages)
    back = str(data.get("back") or f"/staff/drafts/{draft_id}")
    return _back(back if back.startswith("/staff/") else f"/staff/drafts/{draft_id}", "test_sent")


@router.post("/drafts/{draft_id}/submit")
def submit(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, _ = form

    def run(session: Session) -> str:
        draft = drafts.get(session, draft_id)
        passed = drafts.check_draft(session, draft, layout=_layout(settings)).ok
        drafts.submit(session, clock, actor, draft_id=draft_id, passed=passed)
        return "submitted"

    return _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)


@router.post("/drafts/{draft_id}/withdraw")
def withdraw(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, _ = form

    def run(session: Session) -> str:
        drafts.withdraw(session, clock, actor, draft_id=draft_id)
        return "withdrawn"

    return _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)


@router.get("/drafts/{draft_id}/review", response_class=HTMLResponse)
def review_page(
    request: Request, actor: StaffDep, *, draft_id: RowId, clock: ClockDep, engine: EngineDep
) -> HTMLResponse:
    with session_scope(engine) as session:
        draft = drafts.get(session, draft_id)
        changes = drafts.diff(session, draft)
        author = session.get(StaffMember, draft.author_id)
    return staff_page(
        request,
        "review.html",
        actor=actor,
        section="courses",
        draft=draft,
        changes=changes,
        author=author.email if author else "",
        default_review_by=clock.now().date() + timedelta(days=365),
    )


@router.post("/drafts/{draft_id}/sign-off")
def sign_off(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, data = form

    def run(session: Session) -> str:
        try:
            review_by = date.fromisoformat(str(data.get("review_by") or ""))
        except ValueError:
            raise InvalidInput(
                "Give the review-by date as year, month and day, like 2027-12-01.",
                "review_by",
                "review_by",
            ) from None
        drafts.sign_off(session, clock, actor, draft_id=draft_id, review_by=review_by)
        return "signed_off"

    return _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)


@router.post("/drafts/{draft_id}/send-back")
def send_back(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, data = form

    def run(session: Session) -> str:
        drafts.send_back(
            session, clock, actor, draft_id=draft_id, comment=str(data.get("comment") or "")
        )
        return "sent_back"

    return _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)


@router.post("/drafts/{draft_id}/publish")
def publish(
    request: Request,
    form: StaffFormDep,
    *,
    draft_id: RowId,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, _ = form

    def run(session: Session) -> str:
        drafts.publish_draft(
            session,
            clock,
            actor,
            draft_id=draft_id,
            layout=_layout(settings),
            reviewer_email=_reviewer_email(session),
        )
        return "published"

    return _draft_action(request, draft_id=draft_id, engine=engine, settings=settings, run=run)


@router.get("/drafts/{draft_id}/export")
def export_draft(actor: StaffDep, *, draft_id: RowId, engine: EngineDep) -> Response:
    with session_scope(engine) as session:
        draft = drafts.get(session, draft_id)
        return _zip(drafts.as_files(draft, drafts.lessons_of(session, draft_id)))


# --- the sign-up page's offer -----------------------------------------------------------------


@router.get("/offer", response_class=HTMLResponse)
def offer_page(
    request: Request, actor: StaffDep, *, settings: SettingsDep, engine: EngineDep
) -> HTMLResponse:
    with session_scope(engine) as session:
        choice = offering.current(session, settings)
    return staff_page(
        request,
        "offer.html",
        actor=actor,
        section="offer",
        choice=choice,
        notice=_notice(request),
        base_url=settings.base_url.rstrip("/"),
    )


@router.post("/offer")
def save_offer(
    request: Request,
    form: StaffFormDep,
    *,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, data = form
    picked = [
        key.removeprefix("offer:")
        for key, value in data.items()
        if key.startswith("offer:") and value
    ]
    try:
        with session_scope(engine) as session:
            offering.choose(session, clock, actor, slugs=picked)
    except (InvalidInput, accounts.NotPermitted) as exc:
        with session_scope(engine) as session:
            choice = offering.current(session, settings)
        return _invalid(
            request,
            "offer.html",
            exc,
            actor=actor,
            section="offer",
            choice=choice,
            base_url=settings.base_url.rstrip("/"),
        )
    return _back("/staff/offer", "saved")


# --- people, tokens, the audit log (admins) ---------------------------------------------------


@router.get("/people", response_class=HTMLResponse)
def people_page(request: Request, actor: StaffDep, *, engine: EngineDep) -> HTMLResponse:
    actor.require_admin()
    with session_scope(engine) as session:
        members = accounts.everyone(session)
        tokens = sign_in.tokens(session)
    return staff_page(
        request,
        "people.html",
        actor=actor,
        section="people",
        members=members,
        tokens=tokens,
        roles=accounts.ROLES,
        notice=_notice(request),
        new_token=request.query_params.get("new_token", ""),
    )


@router.post("/people")
def add_person(
    request: Request, form: StaffFormDep, *, clock: ClockDep, engine: EngineDep
) -> Response:
    actor, data = form
    actor.require_admin()
    try:
        with session_scope(engine) as session:
            member, _ = accounts.add(
                session,
                clock,
                email=str(data.get("email") or ""),
                role=str(data.get("role") or ""),
                name=str(data.get("name") or ""),
            )
            audit.record(
                session, clock, actor, action="staff.add", target=member.email, role=member.role
            )
    except InvalidInput as exc:
        with session_scope(engine) as session:
            members, tokens = accounts.everyone(session), sign_in.tokens(session)
        return _invalid(
            request,
            "people.html",
            exc,
            actor=actor,
            section="people",
            members=members,
            tokens=tokens,
            roles=accounts.ROLES,
            new_token="",
        )
    return _back("/staff/people", "saved")


@router.post("/people/{staff_id}/disable")
def disable_person(
    form: StaffFormDep, *, staff_id: RowId, clock: ClockDep, engine: EngineDep
) -> Response:
    actor, _ = form
    actor.require_admin()
    if staff_id == actor.staff_id:
        raise accounts.NotPermitted("You cannot turn off your own account.")
    with session_scope(engine) as session:
        accounts.disable(session, clock, staff_id=staff_id)
        audit.record(session, clock, actor, action="staff.disable", target=str(staff_id))
    return _back("/staff/people", "saved")


@router.post("/tokens")
def create_token(
    request: Request, form: StaffFormDep, *, clock: ClockDep, engine: EngineDep
) -> Response:
    """A token acting as the admin who makes it; the secret is shown on the next page, once."""
    actor, data = form
    actor.require_admin()
    assert actor.staff_id is not None
    with session_scope(engine) as session:
        member = session.get(StaffMember, actor.staff_id)
        assert member is not None
        token, secret = sign_in.create_token(
            session, clock, staff=member, name=str(data.get("name") or "")
        )
        audit.record(session, clock, actor, action="token.create", target=token.name)
    # Shown once, on this answer only (not in an address, which browsers keep in history).
    with session_scope(engine) as session:
        members, tokens = accounts.everyone(session), sign_in.tokens(session)
    return staff_page(
        request,
        "people.html",
        actor=actor,
        section="people",
        members=members,
        tokens=tokens,
        roles=accounts.ROLES,
        new_token=secret,
        notice="",
    )


@router.post("/tokens/{token_id}/revoke")
def revoke_token(
    form: StaffFormDep, *, token_id: RowId, clock: ClockDep, engine: EngineDep
) -> Response:
    actor, _ = form
    actor.require_admin()
    with session_scope(engine) as session:
        token = sign_in.revoke_token(session, clock, token_id=token_id)
        audit.record(
            session,
            clock,
            actor,
            action="token.revoke",
            target=token.name if token else str(token_id),
        )
    return _back("/staff/people", "saved")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, actor: StaffDep, *, engine: EngineDep) -> HTMLResponse:
    actor.require_admin()
    before = request.query_params.get("before")
    with session_scope(engine) as session:
        entries = audit.recent(
            session, limit=200, before_id=int(before) if before and before.isdigit() else None
        )
    return staff_page(request, "audit.html", actor=actor, section="audit", entries=entries)


__all__ = ["router"]

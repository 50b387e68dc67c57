"""Courses written in the browser: a draft of a sequence, its lessons as fields, checked and
previewed exactly as a folder of files is, then reviewed and published.

A draft is written out as files (course.authoring.folder) whenever it is checked or published,
so the one checker and the one publisher serve both ways of writing. Edits are allowed while a
draft is being written or was sent back; a draft in review or signed off is locked (withdraw it
to edit), so what a reviewer signed off is what gets published.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from course import catalog
from course.authoring import folder, load_sequence, publish
from course.authoring.check import NO_STAGE_LINKS, SAMPLE_LINKS
from course.authoring.check import check as check_sequence
from course.authoring.load import FILE_RE, LOCALES, MODULES, SLUG_RE, SequenceSpec
from course.clock import Clock
from course.errors import CourseError, InvalidInput, LessonInvalid
from course.models import (
    DraftState,
    Enrollment,
    Lesson,
    LessonDraft,
    SequenceDraft,
    SequenceVersion,
    row_id,
)
from course.plan import ANCHORS
from course.render import Content, Layout, Persona, RenderedEmail, render_email
from course.staff import audit
from course.staff.accounts import Actor, NotPermitted

EDITABLE = (DraftState.DRAFT, DraftState.RETURNED)
OPEN = (DraftState.DRAFT, DraftState.RETURNED, DraftState.IN_REVIEW, DraftState.SIGNED_OFF)


class DraftNotFound(CourseError):
    """No such draft, lesson or version (or not of this course)."""

    default_code = "not_found"

    def __init__(self, what: object) -> None:
        super().__init__(f"There is no such draft, lesson or version ({what}).")


# --- finding ----------------------------------------------------------------------------------


def get(session: Session, draft_id: int) -> SequenceDraft:
    draft = session.get(SequenceDraft, draft_id)
    if draft is None:
        raise DraftNotFound(draft_id)
    return draft


def lessons_of(session: Session, draft_id: int) -> list[LessonDraft]:
    return list(
        session.exec(
            select(LessonDraft)
            .where(col(LessonDraft.draft_id) == draft_id)
            .order_by(col(LessonDraft.position))
        ).all()
    )


def lesson(session: Session, draft_id: int, lesson_id: int) -> LessonDraft:
    found = session.get(LessonDraft, lesson_id)
    if found is None or found.draft_id != draft_id:
        raise DraftNotFound(lesson_id)
    return found


def open_draft(session: Session, slug: str) -> SequenceDraft | None:
    return session.exec(
        select(SequenceDraft).where(
            col(SequenceDraft.slug) == slug, col(SequenceDraft.state).in_(OPEN)
        )
    ).first()


@dataclass
class CourseRow:
    """One course on the staff home page."""

    slug: str
    title: str
    locale: str
    published: SequenceVersion | None
    draft: SequenceDraft | None
    readers: dict[str, int] = field(default_factory=dict)

    def review_overdue(self, today: date) -> bool:
        due = self.published.review_by if self.published else None
        return due is not None and due < today


def courses(session: Session) -> list[CourseRow]:
    """Every course: published ones with their newest version, and drafts of new ones."""
    rows: dict[str, CourseRow] = {}
    newest = (
        select(col(SequenceVersion.slug), func.max(SequenceVersion.version).label("v"))
        .group_by(col(SequenceVersion.slug))
        .subquery()
    )
    versions = session.exec(
        select(SequenceVersion).join(
            newest,
            (col(SequenceVersion.slug) == newest.c.slug)
            & (col(SequenceVersion.version) == newest.c.v),
        )
    ).all()
    for version in versions:
        rows[version.slug] = CourseRow(version.slug, version.title, version.locale, version, None)
    for draft in session.exec(select(SequenceDraft).where(col(SequenceDraft.state).in_(OPEN))):
        row = rows.setdefault(
            draft.slug, CourseRow(draft.slug, draft.title, draft.locale, None, None)
        )
        row.draft = draft
    counts = session.exec(
        select(col(Enrollment.sequence_slug), col(Enrollment.status), func.count()).group_by(
            col(Enrollment.sequence_slug), col(Enrollment.status)
        )
    ).all()
    for slug, status, count in counts:
        if slug in rows:
            rows[slug].readers[status] = count
    return sorted(rows.values(), key=lambda r: (r.locale, r.title.lower()))


# --- writing ----------------------------------------------------------------------------------


def _editable(draft: SequenceDraft) -> None:
    if draft.state not in EDITABLE:
        raise NotPermitted(
            "This draft is in review or signed off, so it cannot change. Withdraw it to edit."
        )


def _touch(session: Session, clock: Clock, draft: SequenceDraft) -> None:
    draft.updated_at = clock.now()
    session.add(draft)


def _storable(value: Any, name: str) -> str:
    # A NUL byte cannot be stored in a PostgreSQL text column (and means nothing in a lesson):
    # refused in words here, not a server error at the write.
    text = str(value or "")
    if "\x00" in text:
        raise InvalidInput(
            f"The {name.replace('_', ' ')} has a character that cannot be stored (a NUL byte).",
            "nul",
            name,
        )
    return text


MAX_DELAY_DAYS = 365


def _text(value: Any, name: str, *, limit: int, required: bool = False) -> str:
    text = _storable(value, name).strip()
    if required and not text:
        raise InvalidInput(f"Please fill in the {name.replace('_', ' ')}.", "required", name)
    if len(text) > limit:
        raise InvalidInput(
            f"The {name.replace('_', ' ')} is {len(text)} characters; keep it to {limit}.",
            "too_long",
            name,
        )
    return text


def _settings(fields: dict[str, Any]) -> dict[str, Any]:
    title = _text(fields.get("title"), "title", limit=200, required=True)
    sender = _text(fields.get("sender_name"), "sender_name", limit=80, required=True)
    if any(ch in sender for ch in '<>"'):
        raise InvalidInput(
            "The sender name cannot have < > or quotes in it.", "sender_name", "sender_name"
        )
    locale = str(fields.get("locale") or "en")
    if locale not in LOCALES:
        raise InvalidInput("The language is English (en) or Spanish (es).", "locale", "locale")
    return {
        "title": title,
        "sender_name": sender,
        "locale": locale,
        "description": _text(fields.get("description"), "description", limit=2000),
    }


def create(
    session: Session, clock: Clock, actor: Actor, *, slug: str, fields: dict[str, Any]
) -> SequenceDraft:
    """A new course, with one lesson to start from."""
    slug = slug.strip().lower()
    if not SLUG_RE.match(slug):
        raise InvalidInput(
            "The short name is lower-case letters, digits and dashes, like family-guide-partners.",
            "slug",
            "slug",
        )
    if catalog.newest_version(session, slug) is not None or open_draft(session, slug):
        raise InvalidInput(
            f"There is already a course called {slug}: open it from the list to edit it.",
            "slug_taken",
            "slug",
        )
    now = clock.now()
    draft = SequenceDraft(
        slug=slug,
        author_id=_staff_id(actor),
        created_at=now,
        updated_at=now,
        options={},
        **_settings(fields),
    )
    session.add(draft)
    session.flush()
    session.add(
        LessonDraft(
            draft_id=row_id(draft),
            position=1,
            key="welcome",
            subject="",
            preheader="",
            body=STARTER_BODY,
        )
    )
    audit.record(session, clock, actor, action="draft.create", target=slug)
    return draft


STARTER_BODY = """{% if first_name %}Hi {{ first_name }},{% else %}Hello,{% endif %}

Write the lesson here, in short paragraphs.
"""


def _staff_id(actor: Actor) -> int:
    if actor.staff_id is None:
        raise NotPermitted("Drafts are written by a staff member: sign in to the staff pages.")
    return actor.staff_id


def edit_published(session: Session, clock: Clock, actor: Actor, *, slug: str) -> SequenceDraft:
    """The open draft of a published course, or a new one copied from its newest version."""
    existing = open_draft(session, slug)
    if existing is not None:
        return existing
    version = catalog.newest_version(session, slug)
    if version is None:
        raise DraftNotFound(slug)
    now = clock.now()
    draft = SequenceDraft(
        slug=slug,
        based_on_version_id=row_id(version),
        title=version.title,
        description=version.description,
        locale=version.locale,
        sender_name=version.sender_name,
        # The checker's settings a version was published with are not stored: its language's
        # defaults stand in, and a stricter one can be set on the draft again.
        options={},
        author_id=_staff_id(actor),
        created_at=now,
        updated_at=now,
    )
    session.add(draft)
    session.flush()
    for stored in _version_lessons(session, row_id(version)):
        session.add(
            LessonDraft(
                draft_id=row_id(draft),
                position=stored.position,
                key=stored.key,
                subject=stored.subject,
                preheader=stored.preheader,
                heading=stored.heading,
                delay_days=stored.delay_days,
                module=stored.module,
                never_skip=stored.never_skip,
                anchor=stored.anchor,
                body=stored.body,
                sources=list(stored.sources),
            )
        )
    audit.record(
        session, clock, actor, action="draft.create", target=slug, from_version=version.version
    )
    return draft


def _version_lessons(session: Session, version_id: int) -> list[Lesson]:
    return list(
        session.exec(
            select(Lesson)
            .where(col(Lesson.version_id) == version_id)
            .order_by(col(Lesson.position))
        ).all()
    )


def update_settings(
    session: Session, clock: Clock, actor: Actor, *, draft_id: int, fields: dict[str, Any]
) -> SequenceDraft:
    draft = get(session, draft_id)
    _editable(draft)
    for name, value in _settings(fields).items():
        setattr(draft, name, value)
    options: dict[str, Any] = {}
    limit = str(fields.get("reading_limit") or "").strip()
    if limit:
        try:
            number = float(limit)
        except ValueError:
            raise InvalidInput(
                "The reading level is a number, like 7.", "reading_limit", "reading_limit"
            ) from None
        options["min_ease" if draft.locale == "es" else "max_grade"] = number
    if str(fields.get("allow_revealing_subjects") or "") in ("1", "true", "on", "yes"):
        options["allow_revealing_subjects"] = True
    draft.options = options
    _touch(session, clock, draft)
    audit.record(session, clock, actor, action="draft.settings", target=draft.slug)
    return draft


def _lesson_key(value: Any) -> str:
    key = str(value or "").strip().lower()
    if not SLUG_RE.match(key):
        raise InvalidInput(
            "The lesson's short name is lower-case letters, digits and dashes, like the-signs.",
            "lesson_key",
            "key",
        )
    return key


def _sources(raw: Any) -> list[dict[str, str]]:
    """One source per line: a title, then " | " and an https link if there is one (or, from
    the API, a list of {"title", "url"})."""
    if isinstance(raw, list):
        raw = "\n".join(
            f"{item.get('title', '')} | {item.get('url', '')}"
            if isinstance(item, dict)
            else str(item)
            for item in raw
        )
    sources = []
    for number, line in enumerate(_storable(raw, "sources").splitlines(), start=1):
        if not line.strip():
            continue
        title, _, url = (part.strip() for part in line.partition("|"))
        if url and not url.startswith("https://"):
            raise InvalidInput(
                f"Source line {number}: a link must start with https:// ({url}).",
                "source_link",
                "sources",
            )
        if not title:
            raise InvalidInput(f"Source line {number} needs a title.", "source_title", "sources")
        sources.append({"title": title, "url": url})
    return sources


def sources_text(sources: list[dict[str, str]]) -> str:
    return "\n".join(f"{s['title']} | {s['url']}" if s.get("url") else s["title"] for s in sources)


def update_lesson(
    session: Session,
    clock: Clock,
    actor: Actor,
    *,
    draft_id: int,
    lesson_id: int,
    fields: dict[str, Any],
) -> LessonDraft:
    """Save a lesson's fields as typed; the checker says later what is wrong with them, so a
    half-written lesson can be saved."""
    draft = get(session, draft_id)
    _editable(draft)
    found = lesson(session, draft_id, lesson_id)
    key = _lesson_key(fields.get("key", found.key))
    if any(o.key == key and o.id != found.id for o in lessons_of(session, draft_id)):
        raise InvalidInput(
            f"Another lesson of this course is already called {key}.", "lesson_key_taken", "key"
        )
    found.key = key
    found.subject = _text(fields.get("subject"), "subject", limit=200)
    found.preheader = _text(fields.get("preheader"), "preheader", limit=300)
    found.heading = _text(fields.get("heading"), "heading", limit=120)
    try:
        found.delay_days = int(str(fields.get("delay_days") or "0").strip())
    except ValueError:
        raise InvalidInput(
            "Days after the last lesson is a whole number, 0 or more.", "delay_days", "delay_days"
        ) from None
    if not 0 <= found.delay_days <= MAX_DELAY_DAYS:
        raise InvalidInput(
            f"Days after the last lesson is a whole number from 0 to {MAX_DELAY_DAYS}.",
            "delay_days",
            "delay_days",
        )
    module = str(fields.get("module") or "recognize")
    if module not in MODULES:
        raise InvalidInput(
            f"The part of the course is one of {', '.join(MODULES)}.", "module", "module"
        )
    found.module = module
    anchor = str(fields.get("anchor") or "")
    if anchor not in ANCHORS:
        raise InvalidInput("That is not one of the dates a lesson can follow.", "anchor", "anchor")
    found.anchor = anchor
    found.never_skip = str(fields.get("never_skip") or "") in ("1", "true", "on", "yes")
    found.body = _storable(fields.get("body"), "body").replace("\r\n", "\n")
    found.sources = _sources(fields.get("sources"))
    session.add(found)
    _touch(session, clock, draft)
    audit.record(session, clock, actor, action="lesson.edit", target=f"{draft.slug}/{key}")
    return found


def add_lesson(session: Session, clock: Clock, actor: Actor, *, draft_id: int) -> LessonDraft:
    """A new lesson at the end (before the aftercare lessons, which must stay last, unless the
    course is all aftercare)."""
    draft = get(session, draft_id)
    _editable(draft)
    existing = lessons_of(session, draft_id)
    taken = {o.key for o in existing}
    number = len(existing) + 1
    while f"lesson-{number}" in taken:
        number += 1
    aftercare = [o for o in existing if o.module == "aftercare"]
    at = (
        aftercare[0].position if aftercare and len(aftercare) < len(existing) else len(existing) + 1
    )
    for later in sorted((o for o in existing if o.position >= at), key=lambda o: -o.position):
        later.position += 1
        session.add(later)
        session.flush()  # one at a time: positions stay unique at every step
    new = LessonDraft(
        draft_id=draft_id,
        position=at,
        key=f"lesson-{number}",
        delay_days=3,
        module="act" if aftercare else "recognize",
        body=STARTER_BODY,
    )
    session.add(new)
    session.flush()
    _touch(session, clock, draft)
    audit.record(session, clock, actor, action="lesson.add", target=f"{draft.slug}/{new.key}")
    return new


def move_lesson(
    session: Session, clock: Clock, actor: Actor, *, draft_id: int, lesson_id: int, by: int
) -> None:
    """Swap a lesson with the one before (by=-1) or after (by=+1) it."""
    draft = get(session, draft_id)
    _editable(draft)
    ordered = lessons_of(session, draft_id)
    found = lesson(session, draft_id, lesson_id)
    index = ordered.index(found)
    other = index + (1 if by > 0 else -1)
    if not 0 <= other < len(ordered):
        return
    a, b = ordered[index], ordered[other]
    mine, theirs = a.position, b.position
    a.position = 0  # out of the way: positions stay unique at every step
    session.add(a)
    session.flush()
    b.position = mine
    session.add(b)
    session.flush()
    a.position = theirs
    session.add(a)
    _touch(session, clock, draft)
    audit.record(
        session, clock, actor, action="lesson.move", target=f"{draft.slug}/{found.key}", by=by
    )


def remove_lesson(
    session: Session, clock: Clock, actor: Actor, *, draft_id: int, lesson_id: int
) -> None:
    draft = get(session, draft_id)
    _editable(draft)
    ordered = lessons_of(session, draft_id)
    if len(ordered) == 1:
        raise InvalidInput("A course needs at least one lesson.", "last_lesson", "")
    found = lesson(session, draft_id, lesson_id)
    session.delete(found)
    session.flush()
    for later in (o for o in ordered if o.position > found.position):
        later.position -= 1
        session.add(later)
        session.flush()
    _touch(session, clock, draft)
    audit.record(session, clock, actor, action="lesson.remove", target=f"{draft.slug}/{found.key}")


# --- files, checking and previews -------------------------------------------------------------


def _lesson_file(o: LessonDraft | Lesson) -> folder.LessonFile:
    """A lesson, drafted or published, as the file `course lessons check` reads."""
    return folder.LessonFile(
        key=o.key,
        subject=o.subject,
        preheader=o.preheader,
        heading=o.heading,
        body=o.body,
        delay_days=o.delay_days,
        module=o.module,
        never_skip=o.never_skip,
        anchor=o.anchor,
        sources=list(o.sources),
    )


def as_files(draft: SequenceDraft, lessons: list[LessonDraft]) -> folder.SequenceFiles:
    return folder.SequenceFiles(
        slug=draft.slug,
        title=draft.title,
        description=draft.description,
        locale=draft.locale,
        sender_name=draft.sender_name,
        options=dict(draft.options),
        lessons=[_lesson_file(o) for o in lessons],
    )


def version_files(session: Session, version: SequenceVersion) -> folder.SequenceFiles:
    """A published version as files (an export, or the content of a rollback)."""
    return folder.SequenceFiles(
        slug=version.slug,
        title=version.title,
        description=version.description,
        locale=version.locale,
        sender_name=version.sender_name,
        lessons=[_lesson_file(o) for o in _version_lessons(session, row_id(version))],
    )


@contextmanager
def written(files: folder.SequenceFiles) -> Iterator[Path]:
    """The sequence as a folder of files, for as long as the block runs."""
    with tempfile.TemporaryDirectory(prefix="homeward-draft-") as tmp:
        yield folder.write(Path(tmp), files)


@dataclass
class Finding:
    """What the checker says about one lesson (or, with no key, about the course)."""

    key: str
    line: int
    message: str
    severity: str = "problem"  # or "warning"


@dataclass
class DraftCheck:
    findings: list[Finding]
    # Per lesson key: its reading score on its language's scale, and its words.
    scores: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "problem" for f in self.findings)

    def for_lesson(self, key: str) -> list[Finding]:
        return [f for f in self.findings if f.key == key]

    def for_course(self) -> list[Finding]:
        return [f for f in self.findings if not f.key]


_PROBLEM = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<message>.*)$", re.S)


def _finding(text: str, *, severity: str) -> Finding:
    match = _PROBLEM.match(text)
    if not match:
        return Finding("", 0, text, severity)
    name = Path(match["path"]).name
    file = FILE_RE.match(name)
    return Finding(file.group(2) if file else "", int(match["line"]), match["message"], severity)


def check_files(
    files: folder.SequenceFiles, *, layout: Layout, language_dir: Path | None
) -> DraftCheck:
    """Everything `course lessons check` says about these files, by lesson."""
    with written(files) as path:
        try:
            _, reports = check_sequence(path, layout, language_dir)
        except LessonInvalid as exc:
            return DraftCheck([_finding(p, severity="problem") for p in exc.problems])
    findings = [
        _finding(w if re.match(r".+:\d+: ", w) else f"{r.lesson.path}:1: {w}", severity="warning")
        for r in reports
        for w in r.warnings
    ]
    scores = {r.lesson.key: (r.reading, r.words) for r in reports}
    return DraftCheck(findings, scores)


def check_draft(
    session: Session, draft: SequenceDraft, *, layout: Layout, language_dir: Path | None = None
) -> DraftCheck:
    return check_files(
        as_files(draft, lessons_of(session, row_id(draft))),
        layout=layout,
        language_dir=language_dir,
    )


def preview(
    draft: SequenceDraft, found: LessonDraft, persona: Persona, *, layout: Layout
) -> RenderedEmail:
    """The email a reader like `persona` would get, with sample links. Raises what rendering
    raises (the caller shows it)."""
    content = Content(
        subject=found.subject,
        heading=found.heading,
        preheader=found.preheader,
        body=found.body,
        sources=list(found.sources),
        module=found.module,
        sender_name=draft.sender_name,
        locale=draft.locale,
    )
    links = SAMPLE_LINKS if found.module in ("recognize", "act") else NO_STAGE_LINKS
    return render_email(content, persona, links, layout=layout)


def render_problem(exc: BaseException) -> str:
    """Why a lesson cannot be shown, in words a counsellor can act on."""
    from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

    if isinstance(exc, SecurityError):
        return (
            "This lesson tries to reach inside the system, which lessons may not do. Use only "
            "the names listed in the writing guide: first_name, relationship, substance."
        )
    if isinstance(exc, UndefinedError):
        return f"This lesson uses a name that does not exist: {exc.message}."
    if isinstance(exc, TemplateError):
        return f"This lesson cannot be shown: {exc.message}."
    return f"This lesson cannot be shown: {exc}."


# --- review and publishing --------------------------------------------------------------------


def submit(
    session: Session, clock: Clock, actor: Actor, *, draft_id: int, passed: bool
) -> SequenceDraft:
    draft = get(session, draft_id)
    _editable(draft)
    if not passed:
        raise InvalidInput(
            "The checker still finds problems in this course: fix them first (they are listed "
            "beside each lesson).",
            "draft_has_problems",
            "",
        )
    draft.state, draft.submitted_at = DraftState.IN_REVIEW, clock.now()
    draft.review_comment = ""
    _touch(session, clock, draft)
    audit.record(session, clock, actor, action="draft.submit", target=draft.slug)
    return draft


def withdraw(session: Session, clock: Clock, actor: Actor, *, draft_id: int) -> SequenceDraft:
    draft = get(session, draft_id)
    if draft.state not in (DraftState.IN_REVIEW, DraftState.SIGNED_OFF):
        return draft
    draft.state, draft.reviewer_id, draft.reviewed_at, draft.review_by = (
        DraftState.DRAFT,
        None,
        None,
        None,
    )
    _touch(session, clock, draft)
    audit.record(session, clock, actor, action="draft.withdraw", target=draft.slug)
    return draft


def _in_review(draft: SequenceDraft) -> None:
    if draft.state != DraftState.IN_REVIEW:
        raise NotPermitted("Only a draft submitted for review can be signed off or sent back.")


def sign_off(
    session: Session, clock: Clock, actor: Actor, *, draft_id: int, review_by: date
) -> SequenceDraft:
    """A reviewer other than the author vouches for the draft, until `review_by`."""
    actor.require_review()
    draft = get(session, draft_id)
    _in_review(draft)
    if actor.staff_id == draft.author_id:
        raise NotPermitted("You wrote this draft: another reviewer must sign it off.")
    if review_by <= clock.now().date():
        raise InvalidInput("The review-by date must be in the future.", "review_by", "review_by")
    draft.state, draft.reviewer_id = DraftState.SIGNED_OFF, actor.staff_id
    draft.reviewed_at, draft.review_by = clock.now(), review_by
    _touch(session, clock, draft)
    audit.record(
        session, clock, actor, action="draft.sign_off", target=draft.slug, review_by=str(review_by)
    )
    return draft


def send_back(
    session: Session, clock: Clock, actor: Actor, *, draft_id: int, comment: str
) -> SequenceDraft:
    actor.require_review()
    draft = get(session, draft_id)
    _in_review(draft)
    text = _text(comment, "comment", limit=4000, required=True)
    draft.state, draft.review_comment = DraftState.RETURNED, text
    _touch(session, clock, draft)
    audit.record(session, clock, actor, action="draft.send_back", target=draft.slug, comment=text)
    return draft


def publish_draft(
    session: Session,
    clock: Clock,
    actor: Actor,
    *,
    draft_id: int,
    layout: Layout,
    reviewer_email: Callable[[int], str],
    language_dir: Path | None = None,
) -> SequenceVersion:
    """Publish a signed-off draft as the course's next version, with its sign-off."""
    actor.require_review()
    draft = get(session, draft_id)
    if draft.state != DraftState.SIGNED_OFF:
        raise NotPermitted("Only a signed-off draft can be published.")
    files = as_files(draft, lessons_of(session, draft_id))
    version = _publish_files(session, clock, files, layout=layout, language_dir=language_dir)
    version.reviewed_by = reviewer_email(draft.reviewer_id) if draft.reviewer_id else ""
    version.reviewed_at, version.review_by = draft.reviewed_at, draft.review_by
    session.add(version)
    draft.state, draft.published_version_id = DraftState.PUBLISHED, row_id(version)
    _touch(session, clock, draft)
    audit.record(
        session, clock, actor, action="course.publish", target=draft.slug, version=version.version
    )
    return version


def _publish_files(
    session: Session,
    clock: Clock,
    files: folder.SequenceFiles,
    *,
    layout: Layout,
    language_dir: Path | None,
) -> SequenceVersion:
    with written(files) as path:
        spec, _ = check_sequence(path, layout, language_dir)
        version, _ = publish(session, spec, clock)
    return version


def rollback(
    session: Session,
    clock: Clock,
    actor: Actor,
    *,
    slug: str,
    version_id: int,
    layout: Layout,
) -> SequenceVersion:
    """Publish an earlier version's content again, as the newest version (readers move with
    it by lesson key, as with any publish). Its sign-off goes with it."""
    actor.require_review()
    # A number from a form: one past any id column's range is simply not one of ours.
    earlier = session.get(SequenceVersion, version_id) if 0 < version_id < 2**31 else None
    if earlier is None or earlier.slug != slug:
        raise DraftNotFound(version_id)
    version = _publish_files(
        session, clock, version_files(session, earlier), layout=layout, language_dir=None
    )
    version.reviewed_by, version.reviewed_at = earlier.reviewed_by, earlier.reviewed_at
    version.review_by = earlier.review_by
    session.add(version)
    audit.record(
        session, clock, actor, action="course.rollback", target=slug, to_version=earlier.version
    )
    return version


def versions(session: Session, slug: str) -> list[SequenceVersion]:
    return list(
        session.exec(
            select(SequenceVersion)
            .where(col(SequenceVersion.slug) == slug)
            .order_by(col(SequenceVersion.version).desc())
        ).all()
    )


def import_folder(session: Session, clock: Clock, actor: Actor, *, path: Path) -> SequenceDraft:
    """A folder of files (an upload) as a draft: of a new course, or of a published one."""
    spec: SequenceSpec = load_sequence(path)
    files = folder.from_spec(spec)
    draft = open_draft(session, spec.slug)
    if draft is not None:
        raise InvalidInput(
            f"{spec.slug} already has a draft being worked on: finish or withdraw it first.",
            "slug_taken",
            "",
        )
    newest = catalog.newest_version(session, spec.slug)
    now = clock.now()
    draft = SequenceDraft(
        slug=spec.slug,
        based_on_version_id=row_id(newest) if newest else None,
        title=files.title,
        description=files.description,
        locale=files.locale,
        sender_name=files.sender_name,
        options=files.options,
        author_id=_staff_id(actor),
        created_at=now,
        updated_at=now,
    )
    session.add(draft)
    session.flush()
    for position, item in enumerate(files.lessons, start=1):
        session.add(
            LessonDraft(
                draft_id=row_id(draft),
                position=position,
                key=item.key,
                subject=item.subject,
                preheader=item.preheader,
                heading=item.heading,
                delay_days=item.delay_days,
                module=item.module,
                never_skip=item.never_skip,
                anchor=item.anchor,
                body=item.body,
                sources=item.sources,
            )
        )
    audit.record(session, clock, actor, action="draft.import", target=spec.slug)
    return draft


# --- the reviewer's diff ----------------------------------------------------------------------


@dataclass
class LessonChange:
    key: str
    change: str  # "added", "removed", "changed", "moved" or "same"
    lines: list[str] = field(default_factory=list)  # a unified diff of the lesson as a file


def _as_text(item: folder.LessonFile) -> list[str]:
    import yaml

    front = yaml.safe_dump(item.front_matter(), sort_keys=False, allow_unicode=True, width=1000)
    return [*front.splitlines(), "---", *item.body.splitlines()]


def diff(session: Session, draft: SequenceDraft) -> list[LessonChange]:
    """Each lesson of the draft against the published version it started from."""
    mine = as_files(draft, lessons_of(session, row_id(draft))).lessons
    base_version = (
        session.get(SequenceVersion, draft.based_on_version_id)
        if draft.based_on_version_id
        else None
    )
    theirs = version_files(session, base_version).lessons if base_version else []
    before = {item.key: (index, item) for index, item in enumerate(theirs)}
    changes = []
    for index, item in enumerate(mine):
        if item.key not in before:
            changes.append(LessonChange(item.key, "added", [f"+{line}" for line in _as_text(item)]))
            continue
        old_index, old = before.pop(item.key)
        lines = list(
            difflib.unified_diff(
                _as_text(old), _as_text(item), "published", "draft", lineterm="", n=2
            )
        )
        kind = "changed" if lines else ("moved" if old_index != index else "same")
        changes.append(LessonChange(item.key, kind, lines[2:]))
    changes += [
        LessonChange(key, "removed", [f"-{line}" for line in _as_text(old)])
        for key, (_, old) in before.items()
    ]
    return changes

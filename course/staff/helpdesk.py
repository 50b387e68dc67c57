"""Helping a reader who calls: find them by their exact address, see where they are in each
course, and act for them. Every action is the domain function the reader's own links use
(course.readers, course.suppression), written to the audit log in the same transaction.

Any signed-in staff member may look a reader up and help them (counsellors answer the phone);
only an admin may erase a reader or export a whole course (course.staff.export).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from course.catalog import latest_version
from course.clock import Clock, as_utc
from course.errors import CourseError, InvalidInput
from course.message import new_message_id
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Lesson,
    SequenceVersion,
    Subscriber,
    row_id,
)
from course.readers import personal_data, preferences
from course.readers.signup import EnrollRequest, enroll
from course.render import Persona, one_line, render_template
from course.settings import Settings
from course.staff import audit
from course.staff.accounts import Actor, normal_email
from course.suppression import leave


class ReaderNotFound(CourseError):
    default_code = "not_found"

    def __init__(self) -> None:
        super().__init__("Nobody with that address is signed up (or they were erased).")


class CourseNotFound(CourseError):
    default_code = "not_found"

    def __init__(self, slug: str) -> None:
        super().__init__(f"No published course is called {slug}.")


@dataclass(frozen=True)
class Sent:
    """One email the reader was sent, or is waiting for."""

    delivery_id: int
    kind: str
    position: int
    subject: str
    status: str
    at: datetime | None  # sent, or written (still waiting)
    error: str


@dataclass(frozen=True)
class Course:
    """One course of the reader, as staff see it."""

    enrollment: Enrollment
    title: str
    version: int
    next_subject: str
    emails: list[Sent]

    def paused(self, now: datetime) -> bool:
        until = self.enrollment.paused_until
        return until is not None and as_utc(until) > now

    @property
    def lessons_had(self) -> list[Sent]:
        return [e for e in self.emails if e.kind == DeliveryKind.LESSON and e.status == "sent"]


@dataclass(frozen=True)
class Reader:
    subscriber: Subscriber
    courses: list[Course]


def find(session: Session, email: str) -> Reader:
    """Everything about the reader with exactly this address: each course, each email sent and
    what comes next. Raises ReaderNotFound."""
    subscriber = session.exec(
        select(Subscriber).where(col(Subscriber.email) == normal_email(email))
    ).first()
    if subscriber is None:
        raise ReaderNotFound()
    return reader(session, row_id(subscriber))


def reader(session: Session, subscriber_id: int) -> Reader:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise ReaderNotFound()
    enrollments = session.exec(
        select(Enrollment)
        .where(col(Enrollment.subscriber_id) == subscriber_id)
        .order_by(col(Enrollment.id))
    ).all()
    ids = [row_id(e) for e in enrollments]
    # One query for every email of every course, with the lesson's subject where it has one.
    rows = session.exec(
        select(Delivery, Lesson.subject)
        .join(
            Lesson,
            (col(Lesson.version_id) == col(Delivery.version_id))
            & (col(Lesson.position) == col(Delivery.position))
            & col(Delivery.kind).in_([DeliveryKind.LESSON, DeliveryKind.RESEND]),
            isouter=True,
        )
        .where(col(Delivery.enrollment_id).in_(ids))
        .order_by(col(Delivery.id))
    ).all()
    versions = {
        v.id: v
        for v in session.exec(
            select(SequenceVersion).where(
                col(SequenceVersion.id).in_([e.version_id for e in enrollments])
            )
        ).all()
    }
    upcoming = {
        (lesson.version_id, lesson.position): lesson.subject
        for lesson in session.exec(
            select(Lesson).where(
                col(Lesson.version_id).in_([e.version_id for e in enrollments]),
                col(Lesson.position).in_([e.next_position for e in enrollments]),
            )
        ).all()
    }
    context = Persona(
        first_name=subscriber.first_name,
        relationship=subscriber.relationship,
        substance=subscriber.substance,
    ).as_context()

    def said(subject: str | None) -> str:
        # As the reader saw it: subjects may name them or their relationship.
        try:
            return one_line(render_template(subject, context)) if subject else ""
        except Exception:  # a subject that cannot render shows as written
            return subject or ""

    courses = []
    for e in enrollments:
        version = versions[e.version_id]
        emails = [
            Sent(
                delivery_id=row_id(d),
                kind=d.kind,
                position=d.position,
                subject=said(subject) or _KIND_WORDS.get(d.kind, d.kind),
                status=d.status,
                at=d.sent_at or d.created_at,
                error=d.last_error or "",
            )
            for d, subject in rows
            if d.enrollment_id == e.id
        ]
        courses.append(
            Course(
                enrollment=e,
                title=version.title,
                version=version.version,
                next_subject=said(upcoming.get((e.version_id, e.next_position))),
                emails=emails,
            )
        )
    return Reader(subscriber, courses)


_KIND_WORDS: dict[str, str] = {
    DeliveryKind.CONFIRM: "Please confirm (sign-up)",
    DeliveryKind.DATA: "A link to their data",
    DeliveryKind.PAUSED: "Pause confirmed",
}


def _course_of(session: Session, subscriber_id: int, enrollment_id: int) -> Enrollment:
    found = session.get(Enrollment, enrollment_id)
    if found is None or found.subscriber_id != subscriber_id:
        raise ReaderNotFound()
    return found


def act(
    session: Session,
    settings: Settings,
    clock: Clock,
    *,
    actor: Actor,
    subscriber_id: int,
    enrollment_id: int,
    action: str,
    value: str = "",
) -> list[int]:
    """Do `action` for the reader's course: pause (value: week, month, resumed), resume,
    stop, aftercare, resend (value: the lesson's position). Returns delivery ids to enqueue."""
    enrollment = _course_of(session, subscriber_id, enrollment_id)
    queued: list[int] = []
    if action == "pause":
        queued = preferences.pause(
            session, settings, clock, enrollment_id=enrollment_id, how_long=value or "resumed"
        )
    elif action == "resume":
        preferences.resume(session, settings, clock, enrollment_id=enrollment_id)
    elif action == "stop":
        leave(session, clock, enrollment_id)
    elif action == "aftercare":
        preferences.start_aftercare(session, settings, clock, enrollment_id=enrollment_id)
    elif action == "resend":
        queued = [resend(session, settings, clock, enrollment=enrollment, position=_int(value))]
    else:
        raise InvalidInput("That is not something staff can do for a reader.", "action", "action")
    audit.record(
        session,
        clock,
        actor,
        action=f"reader.{action}",
        target=f"enrollment:{enrollment_id}",
        value=value,
    )
    return queued


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput("Pick the lesson to send again.", "lesson", "value") from None


def resend(
    session: Session, settings: Settings, clock: Clock, *, enrollment: Enrollment, position: int
) -> int:
    """Send a lesson the reader already had once more (they deleted it, or cannot find it). The
    course goes on as it was. Asking twice for the same lesson sends it twice, on purpose."""
    # Staff pressing twice at once: the second waits here for the first (PostgreSQL), so only
    # one of them writes the resend row (SQLite takes its write lock at BEGIN already).
    session.exec(select(Enrollment).where(col(Enrollment.id) == enrollment.id).with_for_update())
    had = session.exec(
        select(Delivery)
        .where(
            col(Delivery.enrollment_id) == enrollment.id,
            col(Delivery.kind) == DeliveryKind.LESSON,
            col(Delivery.position) == position,
            col(Delivery.status) == DeliveryStatus.SENT,
        )
        # The version they had it in last: its words are the ones they know.
        .order_by(col(Delivery.id).desc())
    ).first()
    if had is None:
        raise InvalidInput(
            "Only a lesson the reader has already had can be sent again.", "not_sent", "value"
        )
    if enrollment.status not in (EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED):
        raise InvalidInput(
            "This reader left the course: nothing more is sent to them.", "left", "value"
        )
    now = clock.now()
    # One row per lesson and version (the delivery table's unique key): asked again, the same
    # row goes out again, under a new Message-ID.
    row = session.exec(
        select(Delivery).where(
            col(Delivery.enrollment_id) == enrollment.id,
            col(Delivery.kind) == DeliveryKind.RESEND,
            col(Delivery.version_id) == had.version_id,
            col(Delivery.position) == position,
        )
    ).first()
    if row is None:
        row = Delivery(
            enrollment_id=row_id(enrollment),
            kind=DeliveryKind.RESEND,
            version_id=had.version_id,
            position=position,
            message_id="",
            created_at=now,
        )
    elif row.status == DeliveryStatus.PENDING:
        return row_id(row)  # already on its way
    row.message_id = new_message_id(
        DeliveryKind.RESEND.value, row_id(enrollment), position, domain=settings.message_domain
    )
    row.status = DeliveryStatus.PENDING
    row.attempts, row.render_failures, row.sent_at, row.last_error = 0, 0, None, None
    row.created_at = now
    row.lease_until = now + timedelta(seconds=settings.lease_seconds)
    session.add(row)
    session.flush()
    return row_id(row)


OUTCOMES = ("asked", "asked_recently", "already", "suppressed")


@dataclass(frozen=True)
class Enrolled:
    queued: list[int]  # the confirmation email to enqueue, if one was written
    outcome: str  # asked, asked_recently, already, suppressed

    @property
    def words(self) -> str:
        return {
            "asked": "Signed up: they get an email asking them to confirm.",
            "asked_recently": "Signed up. They were sent a confirmation email a few minutes ago:"
            " ask them to look for it (and in spam).",
            "already": "They are already getting this course: nothing was changed.",
            "suppressed": "This address refused our email before (or was reported): nothing can"
            " be sent to it.",
        }[self.outcome]


def enroll_by_hand(
    session: Session, settings: Settings, clock: Clock, *, actor: Actor, fields: dict[str, Any]
) -> Enrolled:
    """A person who asked at the front desk or on the phone: signed up as the form would, with
    who did it and their note as the consent record. They still confirm by email."""
    note = str(fields.get("consent_note") or "").strip()
    if not note:
        raise InvalidInput(
            "Say how they agreed (for example: asked at the front desk on 3 May).",
            "required",
            "consent_note",
        )
    if len(note) > 500:
        raise InvalidInput("Keep the note to 500 characters.", "too_long", "consent_note")
    req = EnrollRequest.parse(fields, settings.default_sequence)
    if latest_version(session, req.sequence) is None:
        raise InvalidInput("Pick a published course.", "unknown_course", "sequence")
    req = EnrollRequest(
        **{
            **req.to_fields(),
            "given": req.given,
            "consent_source": f"staff:{actor.staff_id or 'cli'}",
            "consent_wording": "staff",
        }
    )
    queued = enroll(session, settings, clock, req=req)
    found = session.exec(
        select(Enrollment, Subscriber)
        .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
        .where(col(Subscriber.email) == req.email, col(Enrollment.sequence_slug) == req.sequence)
    ).first()
    if found is None or found[1].suppressed_at is not None:
        outcome = "suppressed"  # this address refused our mail: nothing is sent to it
    elif found[0].status == EnrollmentStatus.ACTIVE:
        outcome = "already"
    else:
        found[0].consent_note = note
        session.add(found[0])
        outcome = "asked" if queued else "asked_recently"
    # The note is the reader's consent record, kept with them (and erased with them): the log
    # says who enrolled which sign-up, not what the note says.
    audit.record(
        session,
        clock,
        actor,
        action="reader.enroll",
        target=f"enrollment:{found[0].id}" if found else f"course:{req.sequence}",
        outcome=outcome,
    )
    return Enrolled(queued, outcome)


def export(session: Session, clock: Clock, actor: Actor, *, subscriber_id: int) -> dict[str, Any]:
    found = reader(session, subscriber_id)
    data = personal_data.export(session, found.subscriber.email)
    audit.record(session, clock, actor, action="reader.export", target=f"reader:{subscriber_id}")
    return data or {}


def erase(session: Session, clock: Clock, actor: Actor, *, subscriber_id: int) -> str:
    """Erase the reader (admins only). The caller makes the bytes unreadable on disk after the
    commit (course.db.scrub). Returns the address, for the caller to say what was erased."""
    actor.require_admin()
    found = reader(session, subscriber_id)
    email = found.subscriber.email
    personal_data.erase(session, email)
    # The log keeps that a reader was erased, not who: their address is what was erased.
    audit.record(session, clock, actor, action="reader.erase", target=f"reader:{subscriber_id}")
    return email

"""What a reader changes about their course from their own links: a pause, the pace, the time
lessons arrive, the language, discretion, a date that matters, and the switch to aftercare.

Every change applies from the next lesson. A reader idle between lessons has their next lesson
planned afresh at once (course.plan, from what they have had). With a lesson in flight, that
lesson still goes out, and is recorded with a mark (Enrollment.replan) that has the next tick
plan the one after it from the new preferences. Never-skip lessons come whatever is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from course import catalog, outbound, timing, versions
from course.clock import Clock, as_utc
from course.errors import InvalidInput, LinkEnded
from course.models import (
    PAUSED_UNTIL_RESUMED,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    SequenceVersion,
    Subscriber,
    row_id,
)
from course.plan import PACES, Calendar, Step
from course.readers.personal_data import forget_enrollment
from course.readers.service_mail import throttled_delivery
from course.schedule import valid_time_zone
from course.settings import Settings

PAUSES = {"week": 7, "month": 30}
# How far ahead (or, for a treatment start, back) a date may be.
DATE_RANGE = timedelta(days=366)


@dataclass
class Change:
    """A change to one reader's course, applied and planned in one transaction."""

    session: Session
    settings: Settings
    now: datetime
    enrollment: Enrollment
    subscriber: Subscriber

    @classmethod
    def load(
        cls, session: Session, settings: Settings, clock: Clock, *, enrollment_id: int
    ) -> Change:
        # Locked until commit (PostgreSQL): a worker recording a lesson for this reader waits,
        # so the plan below is made from what they really have had.
        enrollment = session.exec(
            select(Enrollment).where(col(Enrollment.id) == enrollment_id).with_for_update()
        ).first()
        subscriber = session.get(Subscriber, enrollment.subscriber_id) if enrollment else None
        if enrollment is None or subscriber is None:
            raise LinkEnded()
        return cls(session, settings, clock.now(), enrollment, subscriber)

    @property
    def calendar(self) -> Calendar:
        return timing.calendar(
            self.enrollment, self.subscriber, day_seconds=self.settings.day_seconds, now=self.now
        )

    def today(self) -> date:
        return self.calendar.date_of(self.now)

    def replan(self, enrollment: Enrollment | None = None, *, catch_up: bool = False) -> None:
        """Plan the next lesson from the reader's choices as they now stand (`catch_up`: see
        course.timing.replanned)."""
        enrollment = enrollment or self.enrollment
        if enrollment.status != EnrollmentStatus.ACTIVE:
            return  # a pending sign-up keeps its choices for when it is confirmed
        if enrollment.next_due_at is None:
            enrollment.replan = True  # in flight: the tick plans the next once it has gone
            return
        found = timing.replanned(
            _steps(self.session, enrollment),
            enrollment,
            self.subscriber,
            sent=timing.history(self.session, row_id(enrollment)),
            day_seconds=self.settings.day_seconds,
            now=self.now,
            catch_up=catch_up,
        )
        if found.position is None:
            enrollment.status = EnrollmentStatus.COMPLETED
            enrollment.ended_at = self.now
            enrollment.next_due_at = None
        else:
            enrollment.next_position = found.position
            enrollment.next_due_at = found.due
        self.session.add(enrollment)

    def every_course(self) -> list[Enrollment]:
        """All of this person's courses (send hour and time zone are theirs, not a course's)."""
        return list(
            self.session.exec(
                select(Enrollment).where(col(Enrollment.subscriber_id) == self.subscriber.id)
            ).all()
        )


def _published(session: Session, enrollment: Enrollment) -> catalog.Published:
    version = session.get(SequenceVersion, enrollment.version_id)
    if version is None:
        raise LinkEnded()
    return _read(session, version)


def _read(session: Session, version: SequenceVersion) -> catalog.Published:
    key = (row_id(version), version.content_hash, version.published_at)
    return catalog.versions(session, [key])[row_id(version)]


def _steps(session: Session, enrollment: Enrollment) -> tuple[Step, ...]:
    return tuple(
        catalog.step_of(lesson) for lesson in _published(session, enrollment).lessons.values()
    )


def _change(
    session: Session,
    settings: Settings,
    clock: Clock,
    *,
    enrollment_id: int,
    apply: Callable[[Change], None],
) -> Enrollment:
    change = Change.load(session, settings, clock, enrollment_id=enrollment_id)
    apply(change)
    session.flush()
    return change.enrollment


def pause(
    session: Session, settings: Settings, clock: Clock, *, enrollment_id: int, how_long: str
) -> list[int]:
    """Pause for a week, a month, or until the reader comes back ("resumed"); the one email
    that confirms it (with a link to resume) is returned to be enqueued."""
    if how_long not in (*PAUSES, "resumed"):
        raise InvalidInput("Please pick how long to pause.", "choice", "pause")

    def apply(change: Change) -> None:
        if how_long == "resumed":
            until = PAUSED_UNTIL_RESUMED
        else:
            until = change.calendar.slot(change.today() + timedelta(days=PAUSES[how_long]))
        change.enrollment.paused_until = until
        change.replan()

    enrollment = _change(session, settings, clock, enrollment_id=enrollment_id, apply=apply)
    if enrollment.status != EnrollmentStatus.ACTIVE:
        return []
    return throttled_delivery(
        session, settings, enrollment_id=enrollment_id, kind=DeliveryKind.PAUSED, now=clock.now()
    )


def resume(session: Session, settings: Settings, clock: Clock, *, enrollment_id: int) -> Enrollment:
    """End a pause: the next lesson comes at the reader's next send hour (or as planned, if
    that is later)."""

    def apply(change: Change) -> None:
        change.enrollment.paused_until = None
        change.replan()

    return _change(session, settings, clock, enrollment_id=enrollment_id, apply=apply)


def set_pace(
    session: Session, settings: Settings, clock: Clock, *, enrollment_id: int, days: int | None
) -> Enrollment:
    """A lesson every `days` days (1, 2, 3 or 7), or None for the course's own rhythm."""
    if days is not None and days not in PACES:
        raise InvalidInput("Please pick how often lessons should come.", "choice", "pace")

    def apply(change: Change) -> None:
        change.enrollment.pace_days = days
        change.replan()

    return _change(session, settings, clock, enrollment_id=enrollment_id, apply=apply)


def set_delivery_time(
    session: Session,
    settings: Settings,
    clock: Clock,
    *,
    enrollment_id: int,
    send_hour: int,
    time_zone: str,
) -> Enrollment:
    """The hour lessons arrive, in the reader's time zone: for every course of theirs."""
    if not 0 <= send_hour <= 23:
        raise InvalidInput(
            "The send hour must be a whole hour from 0 to 23.", "send_hour", "send_hour"
        )
    zone = valid_time_zone(time_zone)

    def apply(change: Change) -> None:
        change.subscriber.send_hour, change.subscriber.time_zone = send_hour, zone
        change.session.add(change.subscriber)
        for enrollment in change.every_course():
            change.replan(enrollment)

    return _change(session, settings, clock, enrollment_id=enrollment_id, apply=apply)


def set_discreet(
    session: Session, settings: Settings, clock: Clock, *, enrollment_id: int, discreet: bool
) -> Enrollment:
    """Neutral sender name and subjects, no preheader, from the next email on."""

    def apply(change: Change) -> None:
        change.subscriber.discreet = discreet
        change.session.add(change.subscriber)

    return _change(session, settings, clock, enrollment_id=enrollment_id, apply=apply)


def set_dates(
    session: Session,
    settings: Settings,
    clock: Clock,
    *,
    enrollment_id: int,
    conversation_on: date | None,
    treatment_on: date | None,
) -> Enrollment:
    """The day the conversation is planned for, and the day treatment starts (None: not set,
    or cleared). The rest of the course is planned around them (course.plan)."""

    def apply(change: Change) -> None:
        today = change.today()
        if conversation_on is not None and not today <= conversation_on <= today + DATE_RANGE:
            raise InvalidInput(
                "Please pick a day for the conversation from today to a year from now.",
                "conversation_date",
                "conversation_on",
            )
        if treatment_on is not None and not (
            today - DATE_RANGE <= treatment_on <= today + DATE_RANGE
        ):
            raise InvalidInput(
                "Please pick a treatment start within a year of today.",
                "treatment_date",
                "treatment_on",
            )
        enrollment = change.enrollment
        enrollment.conversation_on, enrollment.treatment_on = conversation_on, treatment_on
        if conversation_on is not None:
            enrollment.reordered = True  # lessons may now come out of their order
        change.replan()

    return _change(session, settings, clock, enrollment_id=enrollment_id, apply=apply)


def set_language(
    session: Session, settings: Settings, clock: Clock, *, enrollment_id: int, locale: str
) -> Enrollment:
    """The same course in another language, from the next lesson on: the reader moves to the
    course offered in that language, at the same lesson (lessons are matched by their key)."""
    slug = settings.sequences.get(locale)
    if slug is None:
        raise InvalidInput("That language is not offered.", "choice", "locale")

    def apply(change: Change) -> None:
        enrollment = change.enrollment
        if enrollment.sequence_slug == slug:
            return
        here = _published(session, enrollment)
        target = catalog.newest_version(session, slug)
        if target is None:
            raise InvalidInput("That language is not offered.", "choice", "locale")
        there = _read(session, target)
        if [lesson.key for lesson in here.lessons.values()] != [
            lesson.key for lesson in there.lessons.values()
        ]:
            raise InvalidInput(
                "This course does not have the same lessons in that language yet.",
                "no_translation",
                "locale",
            )
        other = session.exec(
            select(Enrollment).where(
                col(Enrollment.subscriber_id) == enrollment.subscriber_id,
                col(Enrollment.sequence_slug) == slug,
            )
        ).first()
        if other is not None:
            if other.status in (EnrollmentStatus.ACTIVE, EnrollmentStatus.PENDING):
                raise InvalidInput(
                    "You already get this course in that language.", "already_enrolled", "locale"
                )
            forget_enrollment(session, row_id(other))  # an ended round: nobody needs it
        enrollment.sequence_slug = slug
        enrollment.version_id = row_id(target)  # same keys, same positions
        session.add(enrollment)

    return _change(session, settings, clock, enrollment_id=enrollment_id, apply=apply)


def start_aftercare(
    session: Session, settings: Settings, clock: Clock, *, enrollment_id: int
) -> Enrollment:
    """The reader says treatment has started: from the next lesson on, send aftercare, and
    every never-skip lesson (overdose, safety) not sent yet. Clicking twice is harmless."""

    def apply(change: Change) -> None:
        enrollment = change.enrollment
        if enrollment.status != EnrollmentStatus.ACTIVE or enrollment.started_treatment_at:
            return
        published = _published(session, enrollment)
        if not any(lesson.module == "aftercare" for lesson in published.lessons.values()):
            raise InvalidInput(
                "This course has no lessons about recovery to move on to.", "no_aftercare"
            )
        enrollment.started_treatment_at = change.now
        enrollment.treatment_after = enrollment.next_position - 1
        change.replan()
        outbound.enrollment_event(
            session, event="treatment.started", enrollment=enrollment, now=change.now
        )

    return _change(session, settings, clock, enrollment_id=enrollment_id, apply=apply)


def paused(enrollment: Enrollment, now: datetime) -> bool:
    until = enrollment.paused_until
    return until is not None and as_utc(until) > now


def replan_waiting(engine: Engine, settings: Settings, clock: Clock, *, limit: int) -> int:
    """Plan the next lesson of readers who changed a preference while a lesson was in flight,
    now that it has gone (the tick runs this), and of readers a new version of their course
    left to move from their own history (course.versions): moved first, then planned. A reader
    whose lesson is still in flight, or gave up after repeated errors (it holds the course
    until an operator retries it), waits. Returns how many were planned."""
    now = clock.now()
    held = (
        select(col(Delivery.id))
        .where(
            col(Delivery.enrollment_id) == col(Enrollment.id),
            col(Delivery.kind) == DeliveryKind.LESSON,
            col(Delivery.version_id) == col(Enrollment.version_id),
            col(Delivery.position) == col(Enrollment.next_position),
            col(Delivery.status) != DeliveryStatus.SENT,
        )
        .exists()
    )
    waiting = (
        select(Enrollment)
        .where(
            col(Enrollment.replan),
            col(Enrollment.status) == EnrollmentStatus.ACTIVE,
            col(Enrollment.next_due_at).is_(None),
            ~held,
        )
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        waiting = waiting.with_for_update(skip_locked=True, of=Enrollment)
    with Session(engine, expire_on_commit=False) as session:
        enrollments = list(session.exec(waiting).all())
        for enrollment in enrollments:
            subscriber = session.get(Subscriber, enrollment.subscriber_id)
            if subscriber is None:
                continue
            change = Change(session, settings, now, enrollment, subscriber)
            versions.move_one(session, enrollment, now=now)
            enrollment.replan = False
            enrollment.next_due_at = now  # idle for planning: replan() sets the real time
            change.replan(catch_up=True)
        session.commit()
    return len(enrollments)

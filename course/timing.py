"""A reader's timing as course.plan sees it, from their rows: their preferences, their calendar,
what they have had, and the next lesson planned afresh from all of it.

The sending path plans from the rows a batch loads; a preference change (and the tick, for a
change made while a lesson was in flight) plans from the delivery history here.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import Select, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from course.clock import as_utc
from course.models import Delivery, DeliveryKind, DeliveryStatus, Enrollment, Lesson
from course.plan import Calendar, Next, Preferences, Step, next_lesson


class EnrollmentLike(Protocol):
    @property
    def started_treatment_at(self) -> datetime | None: ...
    @property
    def confirmed_at(self) -> datetime | None: ...
    @property
    def pace_days(self) -> int | None: ...
    @property
    def paused_until(self) -> datetime | None: ...
    @property
    def conversation_on(self) -> date | None: ...
    @property
    def treatment_on(self) -> date | None: ...


class SubscriberLike(Protocol):
    @property
    def time_zone(self) -> str: ...
    @property
    def send_hour(self) -> int: ...


def preferences(enrollment: EnrollmentLike, subscriber: SubscriberLike) -> Preferences:
    paused = enrollment.paused_until
    return Preferences(
        time_zone=subscriber.time_zone,
        send_hour=subscriber.send_hour,
        pace_days=enrollment.pace_days,
        paused_until=as_utc(paused) if paused is not None else None,
        conversation_on=enrollment.conversation_on,
        treatment_on=enrollment.treatment_on,
        switched=enrollment.started_treatment_at is not None,
    )


def calendar(
    enrollment: EnrollmentLike, subscriber: SubscriberLike, *, day_seconds: float, now: datetime
) -> Calendar:
    """The reader's days; a compressed course day counts from their confirmation."""
    start = enrollment.confirmed_at
    return Calendar(
        subscriber.time_zone,
        subscriber.send_hour,
        day_seconds,
        start=as_utc(start) if start is not None else now,
    )


# A lesson is behind the reader once it was sent, or cancelled (it will not be tried again).
_DONE = (DeliveryStatus.SENT, DeliveryStatus.CANCELLED)


def _done(enrollment_ids: Collection[int]) -> Select[*tuple[Any, ...]]:
    """(enrollment, position in its current version, status, sent at) of every lesson behind
    these enrollments. A reader may have had a lesson under an earlier version of the course:
    it is found by its key in the version they are on now (None: that version has no such
    lesson any more, and it cannot be sent again)."""
    had, now = aliased(Lesson), aliased(Lesson)
    return (
        select(
            col(Delivery.enrollment_id),
            col(now.position),
            col(Delivery.status),
            col(Delivery.sent_at),
        )
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
        .join(
            had,
            (col(had.version_id) == col(Delivery.version_id))
            & (col(had.position) == col(Delivery.position)),
        )
        .outerjoin(
            now,
            (col(now.version_id) == col(Enrollment.version_id)) & (col(now.key) == col(had.key)),
        )
        .where(
            col(Delivery.enrollment_id).in_(enrollment_ids),
            col(Delivery.kind) == DeliveryKind.LESSON,
            col(Delivery.status).in_(_DONE),
        )
    )


def history(session: Session, enrollment_id: int) -> tuple[int, datetime | None, frozenset[int]]:
    """(the last lesson sent, when, every lesson behind the reader) for an enrollment, as
    positions in the version it is on; (0, None, ...) before the first. The time is that of the
    last email sent even if its lesson is gone from the course (0 then): the next one counts
    its delay from it."""
    rows = session.execute(_done([enrollment_id])).all()
    sent = [(p or 0, as_utc(t)) for _, p, status, t in rows if status == DeliveryStatus.SENT and t]
    done = frozenset(p for _, p, _, _ in rows if p is not None)
    if not sent:
        return 0, None, done
    last, at = max(sent, key=lambda r: r[1])
    return last, at, done


def keys_behind(session: Session, enrollment_id: int) -> frozenset[str]:
    """The keys of every lesson behind the reader, in whichever version they had it (moving a
    reader to a new version needs those its own version no longer has: one may come back)."""
    had = aliased(Lesson)
    return frozenset(
        session.execute(
            select(col(had.key))
            .join(
                Delivery,
                (col(had.version_id) == col(Delivery.version_id))
                & (col(had.position) == col(Delivery.position)),
            )
            .where(
                col(Delivery.enrollment_id) == enrollment_id,
                col(Delivery.kind) == DeliveryKind.LESSON,
                col(Delivery.status).in_(_DONE),
            )
        ).scalars()
    )


def behind(session: Session, enrollment_ids: Collection[int]) -> dict[int, frozenset[int]]:
    """Every lesson behind each of these enrollments, as positions in the version it is on
    (one query)."""
    if not enrollment_ids:
        return {}
    found: dict[int, set[int]] = {e: set() for e in enrollment_ids}
    for enrollment_id, position, _, _ in session.execute(_done(enrollment_ids)):
        if position is not None:
            found[enrollment_id].add(position)
    return {e: frozenset(p) for e, p in found.items()}


def replanned(
    steps: tuple[Step, ...],
    enrollment: EnrollmentLike,
    subscriber: SubscriberLike,
    *,
    sent: tuple[int, datetime | None, Collection[int]],
    day_seconds: float,
    now: datetime,
    catch_up: bool = False,
) -> Next:
    """The next lesson for a reader idle between lessons, planned from what they have had. A
    lesson that would already be due comes at `now`'s next send slot (a resumed course does not
    catch up at 3 a.m.), or with `catch_up` at once (the tick, just after a lesson went out); a
    first lesson not sent yet still goes at once. It is chosen as of then (course.plan, rule 5)."""
    after, at, positions = sent
    cal = calendar(enrollment, subscriber, day_seconds=day_seconds, now=now)
    prefs = preferences(enrollment, subscriber)
    not_before = now if catch_up or at is None else cal.next_slot(now)
    return next_lesson(
        steps, prefs, cal, after=after, at=at or now, sent=positions, not_before=not_before
    )

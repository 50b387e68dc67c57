"""The one path that stops mail to a person: an unsubscribe, a hard bounce (an SMTP 5xx, a
provider's webhook, a bounce message), a spam complaint, or too many soft bounces. Every course of theirs ends at once and every email still queued is cancelled; a
bounced address is also suppressed for good, so no sign-up reaches it again."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, update
from sqlmodel import Session, col, select

from course import outbound
from course.clock import Clock
from course.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    pending_named,
)

_RUNNING = (EnrollmentStatus.PENDING, EnrollmentStatus.ACTIVE)


def stop_everything(
    conn: Connection | Session, *, subscriber_id: int, now: datetime, status: EnrollmentStatus
) -> None:
    """End every running course of the person (as `status`) and cancel their queued emails;
    other systems are told of each course that ended (course.outbound)."""
    event = "bounced" if status == EnrollmentStatus.BOUNCED else "unsubscribed"
    for enrollment_id, slug, next_position in conn.execute(
        select(
            col(Enrollment.id), col(Enrollment.sequence_slug), col(Enrollment.next_position)
        ).where(
            col(Enrollment.subscriber_id) == subscriber_id, col(Enrollment.status).in_(_RUNNING)
        )
    ).all():
        outbound.emit(
            conn,
            event=event,
            about=f"enrollment:{enrollment_id}@{now.isoformat()}",
            payload={
                "enrollment": enrollment_id,
                "reader": subscriber_id,
                "course": slug,
                "next_lesson": next_position,
            },
            now=now,
        )
    conn.execute(
        update(Enrollment)
        .where(col(Enrollment.subscriber_id) == subscriber_id, col(Enrollment.status).in_(_RUNNING))
        .values(status=status, next_due_at=None, ended_at=now)
    )
    theirs = select(col(Enrollment.id)).where(col(Enrollment.subscriber_id) == subscriber_id)
    conn.execute(
        update(Delivery)
        .where(
            col(Delivery.enrollment_id).in_(theirs),
            pending_named(),
        )
        .values(status=DeliveryStatus.CANCELLED, lease_owner=None)
    )


def unsubscribe(session: Session, clock: Clock, enrollment_id: int) -> Subscriber | None:
    """Stop every course for the person behind this enrollment, at once, and cancel what is queued."""
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        return None  # erased already: nothing is left to stop
    now = clock.now()
    stop_everything(
        session,
        subscriber_id=enrollment.subscriber_id,
        now=now,
        status=EnrollmentStatus.UNSUBSCRIBED,
    )
    return session.get(Subscriber, enrollment.subscriber_id)


def suppress(conn: Connection | Session, *, subscriber_id: int, now: datetime, reason: str) -> None:
    """The address refused our mail for good (an SMTP 5xx): stop everything, and never write to
    it again."""
    stop_everything(conn, subscriber_id=subscriber_id, now=now, status=EnrollmentStatus.BOUNCED)
    conn.execute(
        update(Subscriber)
        .where(col(Subscriber.id) == subscriber_id)
        .values(suppressed_at=now, suppressed_reason=reason[:500])
    )


def leave(session: Session, clock: Clock, enrollment_id: int) -> None:
    """Stop one course (the reader's others go on), and cancel what it has queued."""
    now = clock.now()
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is not None and enrollment.status in _RUNNING:
        outbound.enrollment_event(session, event="unsubscribed", enrollment=enrollment, now=now)
    session.execute(
        update(Enrollment)
        .where(col(Enrollment.id) == enrollment_id, col(Enrollment.status).in_(_RUNNING))
        .values(status=EnrollmentStatus.UNSUBSCRIBED, next_due_at=None, ended_at=now)
    )
    session.execute(
        update(Delivery)
        .where(
            col(Delivery.enrollment_id) == enrollment_id,
            pending_named(),
        )
        .values(status=DeliveryStatus.CANCELLED, lease_owner=None)
    )


class Report(StrEnum):
    """What a mail provider, or a bounce message, says about an address."""

    HARD = "hard"  # it does not exist, or refuses us for good
    SOFT = "soft"  # full, or away for now
    COMPLAINT = "complaint"  # the reader marked our email as spam


def report(
    conn: Connection | Session,
    *,
    email: str,
    kind: Report,
    reason: str,
    now: datetime,
    soft_limit: int,
) -> bool:
    """A bounce or complaint for `email`, from a provider's webhook or a bounce mailbox. A hard
    bounce or a complaint stops everything for good; soft bounces are counted, and past
    `soft_limit` do the same. Returns whether the address is now suppressed."""
    found = conn.execute(
        select(
            col(Subscriber.id), col(Subscriber.soft_bounces), col(Subscriber.suppressed_at)
        ).where(col(Subscriber.email) == email.strip().lower())
    ).first()
    if found is None:
        return False  # nobody we write to (or erased since)
    subscriber_id, soft_bounces, suppressed_at = found
    if subscriber_id is None:  # (never: a primary key)
        return False
    if suppressed_at is not None:
        return True
    if kind == Report.SOFT:
        conn.execute(
            update(Subscriber)
            .where(col(Subscriber.id) == subscriber_id)
            .values(soft_bounces=col(Subscriber.soft_bounces) + 1)
        )
        if soft_bounces + 1 < soft_limit:
            return False
        reason = f"{soft_limit} temporary bounces; the last: {reason}"
    why = {Report.COMPLAINT: "marked as spam"}.get(kind, "bounced")
    suppress(conn, subscriber_id=subscriber_id, now=now, reason=f"{why}: {reason}")
    return True

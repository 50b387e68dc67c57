"""The one path that stops mail to a person: an unsubscribe, or a hard bounce (and, as they come,
complaints). Every course of theirs ends at once and every email still queued is cancelled; a
bounced address is also suppressed for good, so no sign-up reaches it again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, update
from sqlmodel import Session, col, select

from course.clock import Clock
from course.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Subscriber

_RUNNING = (EnrollmentStatus.PENDING, EnrollmentStatus.ACTIVE)


def stop_everything(
    conn: Connection | Session, *, subscriber_id: int, now: datetime, status: EnrollmentStatus
) -> None:
    """End every running course of the person (as `status`) and cancel their queued emails."""
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
            col(Delivery.status) == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.CANCELLED, lease_owner=None)
    )


def unsubscribe(session: Session, clock: Clock, enrollment_id: int) -> Subscriber | None:
    """Stop every course for the person behind this enrollment, at once, and cancel what is queued."""
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        return None  # erased already: nothing is left to stop
    stop_everything(
        session,
        subscriber_id=enrollment.subscriber_id,
        now=clock.now(),
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

"""The double opt-in: the confirmation link activates an enrollment and lesson 1 becomes due."""

from __future__ import annotations

from sqlmodel import Session, col, select

from course import outbound
from course.clock import Clock
from course.errors import LinkEnded
from course.models import Enrollment, EnrollmentStatus, Lesson, Subscriber
from course.schedule import next_due
from course.settings import Settings


def confirm(
    session: Session, settings: Settings, clock: Clock, *, enrollment_id: int
) -> Enrollment:
    """Activate a pending enrollment; its first lesson becomes due. Clicking twice is harmless."""
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        raise LinkEnded()
    if enrollment.status != EnrollmentStatus.PENDING:
        return enrollment
    subscriber = session.get(Subscriber, enrollment.subscriber_id)
    first = session.exec(
        select(Lesson).where(
            col(Lesson.version_id) == enrollment.version_id, col(Lesson.position) == 1
        )
    ).one()
    now = clock.now()
    enrollment.status = EnrollmentStatus.ACTIVE
    enrollment.confirmed_at = now
    enrollment.next_position = 1
    enrollment.next_due_at = next_due(
        now,
        first.delay_days,
        time_zone=subscriber.time_zone if subscriber else "UTC",
        send_hour=subscriber.send_hour if subscriber else 9,
        day_seconds=settings.day_seconds,
    )
    outbound.enrollment_event(session, event="confirmed", enrollment=enrollment, now=now)
    return enrollment

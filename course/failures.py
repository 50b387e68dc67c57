"""Deliveries that gave up: list them, and send them again once the cause is fixed.

A lesson that failed after `max_attempts` temporary errors (about a day of backoff) is not
dropped: its enrollment waits on it, and an operator can put it back in the queue with
`course deliveries retry` after fixing the cause (the mail server, say). A lesson that cannot
be rendered fails at once; `course lessons check` refuses the known causes before publishing.
A published version is never edited: workers read each one once and keep it, so a version
changed in the database by hand reaches them only when they restart.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select, update
from sqlmodel import col

from course.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus

_WAITING = (EnrollmentStatus.PENDING, EnrollmentStatus.ACTIVE)


def failed_reasons(engine: Engine) -> list[tuple[str, int]]:
    """The last error of each failed delivery that someone is still waiting on, grouped."""
    stmt = (
        select(func.coalesce(col(Delivery.last_error), "unknown"), func.count())
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
        .where(col(Delivery.status) == DeliveryStatus.FAILED, col(Enrollment.status).in_(_WAITING))
        .group_by(col(Delivery.last_error))
        .order_by(func.count().desc())
    )
    with engine.connect() as conn:
        return [(reason, count) for reason, count in conn.execute(stmt).all()]


def retry_failed(engine: Engine) -> int:
    """Put every failed delivery of a still-running enrollment back in the queue, with a fresh
    count of attempts; the next beat tick hands them to workers. Returns how many."""
    waiting = select(col(Enrollment.id)).where(col(Enrollment.status).in_(_WAITING))
    stmt = (
        update(Delivery)
        .where(
            col(Delivery.status) == DeliveryStatus.FAILED,
            col(Delivery.enrollment_id).in_(waiting),
        )
        .values(
            status=DeliveryStatus.PENDING,
            attempts=0,
            render_failures=0,
            lease_owner=None,
            lease_until=None,
        )
    )
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount or 0

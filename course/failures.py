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

from course.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus

_WAITING = (EnrollmentStatus.PENDING, EnrollmentStatus.ACTIVE)


def failed_reasons(engine: Engine) -> list[tuple[str, int]]:
    """The last error of each failed delivery that someone is still waiting on, grouped."""
    stmt = (
        select(func.coalesce(Delivery.last_error, "unknown"), func.count())
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)  # type: ignore[arg-type]
        .where(Delivery.status == DeliveryStatus.FAILED, Enrollment.status.in_(_WAITING))  # type: ignore[attr-defined]
        .group_by(Delivery.last_error)
        .order_by(func.count().desc())
    )
    with engine.connect() as conn:
        return [(reason, count) for reason, count in conn.execute(stmt).all()]


def retry_failed(engine: Engine) -> int:
    """Put every failed delivery of a still-running enrollment back in the queue, with a fresh
    count of attempts; the next beat tick hands them to workers. Returns how many."""
    waiting = select(Enrollment.id).where(Enrollment.status.in_(_WAITING))  # type: ignore[attr-defined]
    stmt = (
        update(Delivery)
        .where(
            Delivery.status == DeliveryStatus.FAILED,
            Delivery.enrollment_id.in_(waiting),  # type: ignore[attr-defined]
        )
        .values(status=DeliveryStatus.PENDING, attempts=0, lease_owner=None, lease_until=None)
    )
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount or 0

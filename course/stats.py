"""What the service is doing, counted in the database: enrollments and deliveries by status."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlmodel import col

from course.models import Delivery, Enrollment


def by_status(engine: Engine) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(enrollments by status, deliveries by status), each a list of (status, count)."""
    with engine.connect() as conn:
        enrollments = conn.execute(
            select(col(Enrollment.status), func.count()).group_by(col(Enrollment.status))
        ).all()
        deliveries = conn.execute(
            select(col(Delivery.status), func.count()).group_by(col(Delivery.status))
        ).all()
    return [(s, n) for s, n in enrollments], [(s, n) for s, n in deliveries]

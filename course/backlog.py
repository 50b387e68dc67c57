"""The due backlog, as a scrape of /metrics measures it: one statement that reads only index
ranges, so it stays cheap however many readers there are.

- lessons due: `ix_enrollment_due_at` of the due queue (enrollment_due, which holds only active
  readers), the range due_at <= now, counted in the index (the lessons due now, not the
  million enrolled);
- emails pending: the prefix status = 'pending' of `ix_delivery_pending` (status, lease_until),
  a few thousand rows at most while workers keep up, not the table of every email ever sent;
- the oldest due time: the first entry of that same enrollment range.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, func, select
from sqlmodel import col

from course.clock import as_utc
from course.db import is_sqlite, read_only
from course.metrics import Backlog
from course.models import Delivery, DeliveryStatus, EnrollmentDue

# A scrape must not hold a connection for long, whatever the planner does one day.
STATEMENT_TIMEOUT_MS = 2000


def backlog_statement(now: datetime) -> Select[Any]:
    due = col(EnrollmentDue.due_at) <= now
    return select(
        select(func.count()).select_from(EnrollmentDue).where(due).scalar_subquery(),
        select(func.count())
        .select_from(Delivery)
        .where(col(Delivery.status) == DeliveryStatus.PENDING)
        .scalar_subquery(),
        select(func.min(col(EnrollmentDue.due_at))).where(due).scalar_subquery(),
    )


def measure(engine: Engine, now: datetime) -> Backlog:
    """Lessons due, emails pending and the oldest due time at `now`."""
    with read_only(engine).begin() as conn:
        if not is_sqlite(engine):
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        due, pending, oldest = conn.execute(backlog_statement(now)).one()
    return Backlog(
        due=int(due or 0),
        pending=int(pending or 0),
        oldest_due=as_utc(oldest) if oldest is not None else None,
    )

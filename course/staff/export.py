"""A course's readers and emails as CSV, streamed: rows are read from the database in chunks
and written out as they come, so a million rows take no more memory than a thousand.

No answers given at sign-up, no names: the address is what staff need to reach a reader, the
rest is where each reader is and what was sent. Admins only (course.staff.accounts), and every
export is in the audit log.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, func, select
from sqlmodel import col

from course.clock import as_utc
from course.models import Delivery, Enrollment, SequenceVersion, Subscriber

CHUNK = 2_000
KINDS = ("enrollments", "deliveries")

_ENROLLMENTS = (
    "enrollment",
    "email",
    "status",
    "signed_up_at",
    "confirmed_at",
    "consent_from",
    "version",
    "next_lesson",
    "next_due_at",
    "started_treatment_at",
    "ended_at",
)
_DELIVERIES = (
    "delivery",
    "enrollment",
    "kind",
    "version",
    "lesson",
    "status",
    "attempts",
    "created_at",
    "sent_at",
    "last_error",
)


def _query(kind: str, slug: str) -> Select[*tuple[Any, ...]]:
    if kind == "enrollments":
        return (
            select(
                col(Enrollment.id),
                col(Subscriber.email),
                col(Enrollment.status),
                col(Enrollment.created_at),
                col(Enrollment.confirmed_at),
                col(Enrollment.consent_source),
                col(SequenceVersion.version),
                col(Enrollment.next_position),
                col(Enrollment.next_due_at),
                col(Enrollment.started_treatment_at),
                col(Enrollment.ended_at),
            )
            .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
            .join(SequenceVersion, col(SequenceVersion.id) == col(Enrollment.version_id))
            .where(col(Enrollment.sequence_slug) == slug)
            .order_by(col(Enrollment.id))
        )
    return (
        select(
            col(Delivery.id),
            col(Delivery.enrollment_id),
            col(Delivery.kind),
            col(SequenceVersion.version),
            col(Delivery.position),
            col(Delivery.status),
            col(Delivery.attempts),
            col(Delivery.created_at),
            col(Delivery.sent_at),
            col(Delivery.last_error),
        )
        .join(SequenceVersion, col(SequenceVersion.id) == col(Delivery.version_id))
        .where(col(SequenceVersion.slug) == slug)
        .order_by(col(Delivery.id))
    )


def count(engine: Engine, kind: str, slug: str) -> int:
    """How many rows `rows` will yield (for a progress bar)."""
    query = _query(kind, slug).order_by(None)
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    text = "" if value is None else str(value)
    # A cell a spreadsheet would run as a formula (CSV injection): kept as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def rows(engine: Engine, kind: str, slug: str) -> Iterator[list[str]]:
    """The header, then every row, read CHUNK at a time from a server-side cursor."""
    if kind not in KINDS:
        raise ValueError(kind)
    yield list(_ENROLLMENTS if kind == "enrollments" else _DELIVERIES)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(
            _query(kind, slug)
        )
        for row in result:
            yield [_cell(v) for v in row]


def csv_chunks(lines: Iterator[list[str]], *, per_chunk: int = 500) -> Iterator[str]:
    """CSV text in pieces of `per_chunk` rows: what a streamed HTTP answer sends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for n, line in enumerate(lines, start=1):
        writer.writerow(line)
        if n % per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()

"""What the service is doing, counted in the database: enrollments and deliveries by status, and
each course's dashboard (sign-ups, the funnel, who left and after which lesson, "was this
helpful?", how late lessons go out).

Set-based: the dashboard is a handful of grouped queries over indexed columns whatever the size
of the course (the enrollments by status and next lesson, sign-ups by day, one window of recent
deliveries), so it answers in well under a second with a million readers (bench/dashboard.py).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlmodel import col

from course.clock import as_utc
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Lesson,
    LessonFeedback,
    SequenceVersion,
)

# Delivery lag is read from this many of the course's most recent lessons sent.
LAG_WINDOW = 10_000
SIGNUP_DAYS = 30


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


@dataclass(frozen=True)
class LessonLine:
    """One lesson of the course's newest version, and what readers did around it."""

    position: int
    key: str
    subject: str
    reached: int  # readers who got this far: had this lesson, or were moved past it
    left: int  # unsubscribed with this as the last lesson they had
    bounced: int  # their address bounced after this lesson
    treatment: int  # said treatment had started, after this lesson
    helpful: int
    not_helpful: int


@dataclass(frozen=True)
class Dashboard:
    slug: str
    title: str
    version: int
    signups: list[tuple[date, int]]  # the last SIGNUP_DAYS days, oldest first, zeros included
    by_status: dict[str, int]
    confirmed: int
    lessons: list[LessonLine]
    lag_p50: float | None  # seconds, from the tick that found a lesson due to its sending
    lag_p95: float | None
    lag_sample: int
    failed_waiting: int  # gave up after repeated temporary errors: `course deliveries retry`

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def confirmed_share(self) -> float | None:
        return self.confirmed / self.total if self.total else None


def courses(engine: Engine) -> list[str]:
    """Every course that has a published version, by short name."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(col(SequenceVersion.slug)).distinct().order_by(col(SequenceVersion.slug))
            ).scalars()
        )


def dashboard(engine: Engine, slug: str, *, now: datetime) -> Dashboard | None:
    """The course's figures, or None if no version of it was ever published."""
    with engine.connect() as conn:
        versions = conn.execute(
            select(
                col(SequenceVersion.id), col(SequenceVersion.version), col(SequenceVersion.title)
            )
            .where(col(SequenceVersion.slug) == slug)
            .order_by(col(SequenceVersion.version).desc())
        ).all()
        if not versions:
            return None
        newest_id, newest, title = versions[0]
        version_ids = [v[0] for v in versions]
        lessons = conn.execute(
            select(col(Lesson.position), col(Lesson.key), col(Lesson.subject))
            .where(col(Lesson.version_id) == newest_id)
            .order_by(col(Lesson.position))
        ).all()
        # One pass over the course's readers: by status, next lesson and the switch.
        groups = conn.execute(
            select(
                col(Enrollment.status),
                col(Enrollment.next_position),
                col(Enrollment.treatment_after),
                func.count(),
                func.count(col(Enrollment.confirmed_at)),
            )
            .where(col(Enrollment.sequence_slug) == slug)
            .group_by(
                col(Enrollment.status),
                col(Enrollment.next_position),
                col(Enrollment.treatment_after),
            )
        ).all()
        since = (now - timedelta(days=SIGNUP_DAYS - 1)).date()
        day = func.date(col(Enrollment.created_at))
        per_day = conn.execute(
            select(day, func.count())
            .where(
                col(Enrollment.sequence_slug) == slug,
                col(Enrollment.created_at)
                >= datetime(since.year, since.month, since.day, tzinfo=UTC),
            )
            .group_by(day)
        ).all()
        feedback = conn.execute(
            select(
                col(LessonFeedback.position),
                func.sum(col(LessonFeedback.helpful)),
                func.sum(col(LessonFeedback.not_helpful)),
            )
            .where(col(LessonFeedback.version_id).in_(version_ids))
            .group_by(col(LessonFeedback.position))
        ).all()
        recent = conn.execute(
            select(col(Delivery.created_at), col(Delivery.sent_at))
            .where(
                col(Delivery.version_id).in_(version_ids),
                col(Delivery.kind) == DeliveryKind.LESSON,
                col(Delivery.status) == DeliveryStatus.SENT,
            )
            .order_by(col(Delivery.id).desc())
            .limit(LAG_WINDOW)
        ).all()
        failed = conn.execute(
            select(func.count()).where(
                col(Delivery.status) == DeliveryStatus.FAILED,
                col(Delivery.version_id).in_(version_ids),
            )
        ).scalar_one()
    return _assemble(
        slug=slug,
        title=title,
        version=newest,
        lessons=[(p, k, s) for p, k, s in lessons],
        groups=[(st, pos, after, n, c) for st, pos, after, n, c in groups],
        per_day={str(d)[:10]: n for d, n in per_day},
        feedback={p: (int(y or 0), int(n or 0)) for p, y, n in feedback},
        lags=[
            (as_utc(sent) - as_utc(made)).total_seconds() for made, sent in recent if sent and made
        ],
        failed=failed,
        since=since,
    )


def _assemble(
    *,
    slug: str,
    title: str,
    version: int,
    lessons: list[tuple[int, str, str]],
    groups: list[tuple[str, int, int | None, int, int]],
    per_day: dict[str, int],
    feedback: dict[int, tuple[int, int]],
    lags: list[float],
    failed: int,
    since: date,
) -> Dashboard:
    by_status: dict[str, int] = {}
    confirmed = 0
    reached: dict[int, int] = {}
    left: dict[int, int] = {}
    bounced: dict[int, int] = {}
    treatment: dict[int, int] = {}
    last = lessons[-1][0] if lessons else 0
    for status, next_position, after, count, with_confirm in groups:
        by_status[status] = by_status.get(status, 0) + count
        confirmed += with_confirm
        if status == EnrollmentStatus.PENDING:
            continue
        # The last lesson they had: all of them once completed, else the one before the next.
        had = last if status == EnrollmentStatus.COMPLETED else next_position - 1
        for position, *_ in lessons:
            if position <= had:
                reached[position] = reached.get(position, 0) + count
        if status == EnrollmentStatus.UNSUBSCRIBED:
            left[had] = left.get(had, 0) + count
        elif status == EnrollmentStatus.BOUNCED:
            bounced[had] = bounced.get(had, 0) + count
        if after is not None:
            treatment[after] = treatment.get(after, 0) + count
    lines = [
        LessonLine(
            position=p,
            key=k,
            subject=s,
            reached=reached.get(p, 0),
            left=left.get(p, 0),
            bounced=bounced.get(p, 0),
            treatment=treatment.get(p, 0),
            helpful=feedback.get(p, (0, 0))[0],
            not_helpful=feedback.get(p, (0, 0))[1],
        )
        for p, k, s in lessons
    ]
    days = [since + timedelta(days=n) for n in range(SIGNUP_DAYS)]
    p50 = p95 = None
    if len(lags) >= 2:
        cuts = statistics.quantiles(lags, n=100, method="inclusive")
        p50, p95 = cuts[49], cuts[94]
    elif lags:
        p50 = p95 = lags[0]
    return Dashboard(
        slug=slug,
        title=title,
        version=version,
        signups=[(d, per_day.get(d.isoformat(), 0)) for d in days],
        by_status=by_status,
        confirmed=confirmed,
        lessons=lines,
        lag_p50=p50,
        lag_p95=p95,
        lag_sample=len(lags),
        failed_waiting=failed,
    )

"""A batch's work, as the send loop needs it: take the lease on the deliveries nobody else
holds, and load each one with its enrollment, reader and lesson in one query.

Rows are read as plain dataclasses, not ORM objects: building ORM objects for them cost more
per email than rendering it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    DateTime,
    Engine,
    Integer,
    Select,
    any_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlmodel import Session, col

from course import catalog, timing
from course.catalog import VERSION_KEY_COLUMNS, LessonPlan
from course.clock import Clock
from course.db import read_only
from course.models import (
    Delivery,
    DeliveryKind,
    Enrollment,
    Lesson,
    SequenceVersion,
    Subscriber,
    pending_named,
)
from course.settings import Settings


# What sending needs of a delivery, its enrollment and its reader: read as plain rows, because
# building ORM objects for them cost more per email than rendering it.
@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    kind: str
    # The version and lesson it was claimed for (the reader may be on a newer version by now).
    version_id: int
    position: int
    attempts: int
    render_failures: int
    message_id: str
    created_at: datetime  # when it was claimed, as due: the start of its delivery lag


@dataclass(frozen=True, slots=True)
class EnrollmentRow:
    id: int
    link_key: str
    status: str
    version_id: int
    started_treatment_at: datetime | None
    confirmed_at: datetime | None
    pace_days: int | None
    paused_until: datetime | None
    conversation_on: date | None
    treatment_on: date | None
    reordered: bool


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    id: int
    email: str
    first_name: str
    time_zone: str
    send_hour: int
    relationship: str
    substance: str
    suppressed_at: datetime | None
    discreet: bool


_JOB_COLUMNS = (
    *(getattr(Delivery, f) for f in DeliveryRow.__slots__),
    *(getattr(Enrollment, f) for f in EnrollmentRow.__slots__),
    *(getattr(Subscriber, f) for f in SubscriberRow.__slots__),
    *VERSION_KEY_COLUMNS,
)
_D = len(DeliveryRow.__slots__)
_E = _D + len(EnrollmentRow.__slots__)
_S = _E + len(SubscriberRow.__slots__)


@dataclass
class Job:
    delivery: DeliveryRow
    enrollment: EnrollmentRow
    subscriber: SubscriberRow
    version: SequenceVersion  # the delivery's version
    lesson: Lesson | None
    # First lesson of the aftercare module after this one, if the sequence has one.
    aftercare_from: int | None = None
    # Every lesson this reader has had, for a reader whose order changed (else None: those up
    # to this one, which is all course.plan then needs).
    sent: frozenset[int] | None = None

    @property
    def offers_stage_switch(self) -> bool:
        return (
            self.lesson is not None
            and self.lesson.module in ("recognize", "act")
            and self.aftercare_from is not None
            and self.enrollment.started_treatment_at is None
        )


def _claimable(now: datetime | BindParameter[datetime]) -> tuple[ColumnElement[bool], ...]:
    """Which of a batch's rows a worker may take (found by id, whatever the statistics say)."""
    return (
        pending_named(),
        or_(col(Delivery.lease_owner).is_(None), col(Delivery.lease_until) <= now),
    )


def claim_batch(
    engine: Engine, settings: Settings, clock: Clock, *, ids: Iterable[int], owner: str
) -> list[int]:
    """Take the lease on those ids nobody else holds. A duplicate task for the same ids finds
    them taken and sends nothing."""
    now = clock.now()
    stmt = (
        update(Delivery)
        .where(col(Delivery.id).in_(list(ids)), *_claimable(now))
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=settings.lease_seconds))
        .returning(col(Delivery.id))
    )
    with engine.begin() as session:
        return [i for i in session.execute(stmt).scalars() if i is not None]


def claim_and_load(
    engine: Engine, settings: Settings, clock: Clock, *, ids: list[int], owner: str
) -> tuple[list[Job], LessonPlan]:
    """claim_batch, then load_jobs for what was claimed.

    On PostgreSQL the claim and the readers' rows are one statement (an UPDATE ... RETURNING
    that the SELECT joins): a batch's preparation is time in which this worker's SMTP
    connection sits idle, and with two workers on two cores it took ~40 ms per 200 lessons as
    two transactions. On SQLite they stay two transactions: the load takes no lock there.
    """
    if engine.dialect.name != "postgresql":
        claimed = claim_batch(engine, settings, clock, ids=ids, owner=owner)
        with Session(read_only(engine), expire_on_commit=False) as session:
            loaded = load_jobs(session, claimed)
            session.commit()
        return loaded
    stmt, values = claim_and_load_statement(
        ids=ids, owner=owner, now=clock.now(), lease=timedelta(seconds=settings.lease_seconds)
    )
    with Session(engine, expire_on_commit=False) as session:
        loaded = _jobs(session, session.execute(stmt, values))
        session.commit()
    return loaded


def _claim_and_load() -> Select[Any]:
    claimed = (
        update(Delivery)
        .where(
            col(Delivery.id) == any_(bindparam("ids", type_=postgresql.ARRAY(Integer))),
            *_claimable(bindparam("now", type_=DateTime(timezone=True))),
        )
        .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
        .returning(
            *(getattr(Delivery, f) for f in DeliveryRow.__slots__), col(Delivery.enrollment_id)
        )
        .cte("claimed")
    )
    return (
        select(
            *(claimed.c[f] for f in DeliveryRow.__slots__),
            *_JOB_COLUMNS[_D:],
        )
        .select_from(claimed)
        .join(Enrollment, col(Enrollment.id) == claimed.c.enrollment_id)
        .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
        .join(SequenceVersion, col(SequenceVersion.id) == claimed.c.version_id)
        .order_by(claimed.c.id)
    )


# Built once: building it took ~2 ms, longer than the database takes to run it for 200 rows.
_CLAIM_AND_LOAD = _claim_and_load()


def claim_and_load_statement(
    *, ids: list[int], owner: str, now: datetime, lease: timedelta
) -> tuple[Select[Any], dict[str, Any]]:
    """PostgreSQL: the statement and values that lease the claimable rows among `ids` to `owner`
    and return them as rows of _JOB_COLUMNS (the reader's enrollment, subscriber and sequence
    version joined in), ordered by id."""
    return _CLAIM_AND_LOAD, {"ids": ids, "owner": owner, "now": now, "until": now + lease}


def load_jobs(session: Session, ids: list[int]) -> tuple[list[Job], LessonPlan]:
    """Everything needed to render and send a batch: one query for the readers, and the few
    sequence versions and lessons they share (whose shape is the batch's plan) from the
    catalog, which reads each published version once per process."""
    stmt = (
        select(*_JOB_COLUMNS)
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
        .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
        .join(SequenceVersion, col(SequenceVersion.id) == col(Delivery.version_id))
        .where(col(Delivery.id).in_(ids))
        .order_by(col(Delivery.id))
    )
    return _jobs(session, session.execute(stmt))


def _jobs(session: Session, result: Iterable[Any]) -> tuple[list[Job], LessonPlan]:
    """Jobs from rows of _JOB_COLUMNS, with the versions and lessons they need."""
    rows = [
        (DeliveryRow(*row[:_D]), EnrollmentRow(*row[_D:_E]), SubscriberRow(*row[_E:_S]), row[_S:])
        for row in result
    ]
    versions = catalog.versions(session, (tuple(key) for *_, key in rows))
    plan = LessonPlan.of(versions.values())
    # The lessons each reordered reader has had (one query, only for them).
    sent = timing.behind(session, [e.id for _, e, _, _ in rows if e.reordered])
    jobs = [
        Job(
            d,
            e,
            s,
            versions[d.version_id].version,
            versions[d.version_id].lessons.get(d.position)
            if d.kind in (DeliveryKind.LESSON, DeliveryKind.RESEND)
            else None,
            plan.aftercare_after(d.version_id, d.position),
            sent.get(e.id, frozenset()) if e.reordered else None,
        )
        for d, e, s, _ in rows
    ]
    return jobs, plan

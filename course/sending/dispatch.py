"""The beat tick: hand out again what was lost, and turn due enrollments into delivery rows.

The database is the truth: every email exists as a delivery row before anything is enqueued,
and a row whose lease runs out is handed out again by the next tick. Set-based in the database:
one statement claims a batch of due enrollments and writes their delivery rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Engine,
    FromClause,
    Insert,
    Integer,
    Select,
    String,
    Update,
    any_,
    bindparam,
    cast,
    func,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped
from sqlmodel import col

from course.clock import Clock
from course.db import chunks, is_sqlite, read_only
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentDue,
    EnrollmentStatus,
    SignupRequest,
)
from course.readers.intake import take_in
from course.readers.preferences import replan_waiting
from course.settings import Settings


def _one_of(
    on_sqlite: bool, key: Mapped[int | None], chosen: Select[int | None]
) -> ColumnElement[bool]:
    """`key IN (chosen)`, for an UPDATE whose rows a limited, locking subquery picks.

    On PostgreSQL both `IN (subquery)` (a semi-join) and `UPDATE ... FROM (subquery)` (a join)
    leave the join method to the planner, which sizes it by the subquery's estimated rows: with
    a thousand it hashed them and read the whole table (10,000 or 100,000 enrollments; a
    million deliveries) to find the rows to update. `key = ANY(ARRAY(subquery))` runs the
    subquery once, on its own, and the planner, which takes an array it has not seen for ten
    elements, finds the rows through the primary key whatever the table's statistics say.
    """
    if on_sqlite:
        return key.in_(chosen.scalar_subquery())
    return key == any_(func.array(chosen.scalar_subquery(), type_=postgresql.ARRAY(Integer)))


def release_expired(engine: Engine, settings: Settings, clock: Clock, *, limit: int) -> list[int]:
    """Pending deliveries nobody holds (lost message, killed worker, retry time reached):
    lease them anew so they can be enqueued again."""
    now = clock.now()
    no_lease = col(Delivery.lease_until).is_(None)
    lapsed = col(Delivery.lease_until) <= now
    pending = col(Delivery.status) == DeliveryStatus.PENDING
    # "No lease OR lapsed" as one condition is read by walking every pending row: on SQLite
    # 2 ms for 20,000 (under the write lock every sending worker then waits for); on
    # PostgreSQL, which counts every sent row (no lease either) as a match, a read of all ten
    # million emails on every tick once a backlog had been seen. As two searches of the index
    # the same answer takes a tenth of a millisecond.
    found: ColumnElement[bool]
    if is_sqlite(engine):
        expired = union_all(
            select(col(Delivery.id)).where(pending, no_lease),
            select(col(Delivery.id)).where(pending, lapsed),
        ).limit(limit)
        found = col(Delivery.id).in_(expired.scalar_subquery())
    else:
        # FOR UPDATE takes no UNION: each search locks its own rows, up to `limit` each (a
        # row locked and then left out of the first `limit` stays as it was). In the index's
        # order: the planner sized "no lease" by the sent rows and, the first `limit` rows
        # being so many, read the table for them, finding none (190 ms at 2M emails).
        searches = [
            func.array(
                select(col(Delivery.id))
                .where(pending, which)
                .order_by(col(Delivery.lease_until))
                .limit(limit)
                .with_for_update(skip_locked=True)
                .scalar_subquery(),
                type_=postgresql.ARRAY(Integer),
            )
            for which in (lapsed, no_lease)  # the lost first: they have waited longest
        ]
        both = func.array_cat(*searches, type_=postgresql.ARRAY(Integer))
        found = col(Delivery.id) == any_(both[1:limit])
    stmt = (
        update(Delivery)
        .where(found)
        .values(lease_until=now + timedelta(seconds=settings.lease_seconds), lease_owner=None)
        .returning(col(Delivery.id))
    )
    with engine.begin() as session:
        return [i for i in session.execute(stmt).scalars() if i is not None]


# What a claimed enrollment's delivery row is made of, besides its id.
_CLAIMED = (col(Enrollment.next_position), col(Enrollment.version_id))
_NOW = bindparam("now", type_=DateTime(timezone=True))


@lru_cache(maxsize=8)
def _claim_statements(on_sqlite: bool, domain: str) -> tuple[Update, Insert]:
    """The claim, and the INSERT of its delivery rows (on PostgreSQL with the claim inside it,
    one statement; on SQLite from the claimed ids, as JSON in :ids). Built once: building them
    took a tenth of the tick's time. Parameters: now, candidates, batch, lease_until (and ids).
    """
    # Twice as many as are taken, and on PostgreSQL none that another transaction holds: a
    # reader whose row is being written (a large publish moving every reader of a course,
    # another tick's claim) has their place in the queue held too, by the trigger. So the
    # claim never stops at a front of the queue others hold. It waits for no lock at all:
    # what it deletes from the queue below it has locked here.
    oldest_due = (
        select(col(EnrollmentDue.enrollment_id))
        .where(col(EnrollmentDue.due_at) <= _NOW)
        .order_by(col(EnrollmentDue.due_at))
        .limit(bindparam("candidates", type_=Integer))
    )
    if not on_sqlite:
        oldest_due = oldest_due.with_for_update(skip_locked=True)
    # Then the readers' own rows, skipping those held (a reader saving a preference), each
    # read again as it is now: one that another tick claimed, or that is no longer due, drops
    # out.
    due = (
        select(col(Enrollment.id))
        .where(
            _one_of(on_sqlite, col(Enrollment.id), oldest_due),
            col(Enrollment.status) == EnrollmentStatus.ACTIVE,
            col(Enrollment.next_due_at) <= _NOW,
        )
        .limit(bindparam("batch", type_=Integer))
    )
    if not on_sqlite:
        due = due.with_for_update(skip_locked=True)
    # While a lesson is in flight the enrollment has no due time; sending sets the next one.
    # The trigger on enrollment takes the claimed ones out of the queue in the same statement.
    claim = (
        update(Enrollment)
        .where(_one_of(on_sqlite, col(Enrollment.id), due))
        .values(next_due_at=None)
        .returning(col(Enrollment.id), *_CLAIMED)
    )

    def new_rows(claimed: FromClause) -> Insert:
        enrollment_id, position = claimed.c.id, claimed.c.next_position
        kind = DeliveryKind.LESSON.value
        row = {
            "enrollment_id": enrollment_id,
            "kind": literal(kind),
            # The lesson of the version the reader is on now: sent as claimed, whatever is
            # published before it goes out.
            "version_id": claimed.c.version_id,
            "position": position,
            "message_id": _message_id_sql(
                on_sqlite, kind, enrollment_id=enrollment_id, position=position, domain=domain
            ),
            "status": literal(DeliveryStatus.PENDING.value),
            "attempts": literal(0),
            "lease_until": bindparam("lease_until", type_=DateTime(timezone=True)),
            "created_at": _NOW,
        }
        # "WHERE true": SQLite would read "SELECT ... FROM x ON CONFLICT" as a join's ON.
        rows = select(*row.values()).where(true())
        insert = sqlite.insert if on_sqlite else postgresql.insert
        return (
            insert(Delivery)
            .from_select(list(row), rows)
            .on_conflict_do_nothing()
            .returning(col(Delivery.id))
        )

    if on_sqlite:
        # SQLite has no UPDATE inside WITH: the claimed ids come back and go in again as one
        # JSON parameter (one parameter per id would meet SQLite's limit of 32,766 with a
        # large COURSE_CLAIM_BATCH).
        listed = func.json_each(bindparam("ids", type_=String)).table_valued("value")
        claimed = (
            select(col(Enrollment.id), *_CLAIMED)
            .where(col(Enrollment.id).in_(select(listed.c.value)))
            .subquery()
        )
        return claim, new_rows(claimed)
    claimed_cte = claim.cte("claimed")
    return claim, new_rows(claimed_cte).add_cte(claimed_cte)


def claim_due(engine: Engine, settings: Settings, clock: Clock, *, limit: int) -> list[int]:
    """Turn due enrollments into delivery rows, in one transaction; return the new delivery ids.

    Set-based in the database: built row by row in Python, 5,000 rows took the tick 0.1 s on
    SQLite (holding the write lock every sending worker waits for) and 0.7 s on PostgreSQL.
    The due are found in the queue (EnrollmentDue), oldest first: the claim then rewrites each
    reader's row in place and no index of enrollment (migration 0014).
    """
    now = clock.now()
    on_sqlite = is_sqlite(engine)
    claim, insert = _claim_statements(on_sqlite, settings.message_domain)
    values = {
        "now": now,
        "candidates": limit * 2,
        "batch": limit,
        "lease_until": now + timedelta(seconds=settings.lease_seconds),
    }
    with engine.begin() as conn:
        if on_sqlite:
            ids = list(conn.execute(claim, values).scalars())
            if not ids:
                return []
            return list(conn.execute(insert, {**values, "ids": json.dumps(ids)}).scalars())
        return list(conn.execute(insert, values).scalars())


def _message_id_sql(
    on_sqlite: bool,
    kind: str,
    *,
    enrollment_id: ColumnElement[int],
    position: ColumnElement[int],
    domain: str,
) -> ColumnElement[str]:
    """new_message_id, worked out by the database for a whole set of rows."""
    if on_sqlite:
        token = func.lower(func.hex(func.randomblob(6)))
    else:
        # gen_random_uuid() is built in (PostgreSQL 13+); its first twelve digits are random.
        token = func.left(func.replace(cast(func.gen_random_uuid(), String), "-", ""), 12)
    return (
        literal(f"<{kind}.")
        + cast(enrollment_id, String)
        + "."
        + cast(position, String)
        + "."
        + token
        + literal(f"@{domain}>")
    )


_PENDING = col(Delivery.status) == DeliveryStatus.PENDING


def _any(query: Select[int | None], key: Mapped[Any]) -> ColumnElement[bool]:
    """Whether `query` finds a row, looked for in the order of an index on `key`. Not EXISTS,
    which PostgreSQL plans without the ORDER BY and LIMIT, by the statistics: statistics that
    last saw a backlog (half the emails lost) chose to read the table, which finds nothing, and
    reads it all, once the backlog is gone."""
    return query.order_by(key).limit(1).scalar_subquery().is_not(None)


# Whether each step before the claim has anything to do, asked in one statement: most ticks
# none has, and the three steps' transactions cost a sixth of a tick of 1,000 lessons. Each
# condition takes in all its step handles (a row added after it is asked is the next tick's,
# as one added after the step ran would be). The lost deliveries are two searches of the
# index, as in release_expired.
_WAITING = select(
    _any(
        select(col(Delivery.id)).where(_PENDING, col(Delivery.lease_until).is_(None)),
        col(Delivery.lease_until),
    )
    | _any(
        select(col(Delivery.id)).where(_PENDING, col(Delivery.lease_until) <= _NOW),
        col(Delivery.lease_until),
    ),
    _any(select(col(SignupRequest.id)), col(SignupRequest.id)),
    _any(select(col(Enrollment.id)).where(col(Enrollment.replan)), col(Enrollment.id)),
)


def _work_waiting(engine: Engine, clock: Clock) -> tuple[bool, bool, bool]:
    """(lost deliveries, sign-ups, readers to plan again): which is there now."""
    # A read alone: on PostgreSQL one round trip, without BEGIN and ROLLBACK around it; on
    # SQLite a deferred transaction, which takes no write lock for the sending workers to wait on.
    reader = (
        read_only(engine)
        if is_sqlite(engine)
        else engine.execution_options(isolation_level="AUTOCOMMIT")
    )
    with reader.connect() as conn:
        row = conn.execute(_WAITING, {"now": clock.now()}).one()
    return bool(row[0]), bool(row[1]), bool(row[2])


def tick(
    engine: Engine,
    settings: Settings,
    clock: Clock,
    *,
    budget_seconds: float = 2.0,
    hand_out: Callable[[list[list[int]]], object] | None = None,
) -> list[list[int]]:
    """One beat tick: re-lease what was lost, turn due enrollments into deliveries, and return
    the batches of delivery ids to enqueue (after commit, so a task never runs before its row).

    With `hand_out`, each committed claim's batches go to it at once: with a large backlog the
    workers start sending while the tick is still claiming the rest.
    """
    started = time.monotonic()
    out: list[list[int]] = []

    def commit(ids: list[int]) -> None:
        batches = chunks(ids, settings.send_batch)
        if hand_out is not None and batches:
            hand_out(batches)
        out.extend(batches)

    lost, signups, replan = _work_waiting(engine, clock)
    if lost:
        commit(release_expired(engine, settings, clock, limit=settings.claim_batch * 10))
    # Sign-ups waiting to be taken in: their confirmation emails go out in this tick.
    if signups:
        commit(take_in(engine, settings, clock, limit=settings.claim_batch))
    # Readers who changed a preference with a lesson in flight: their next lesson, planned now
    # that it has gone, may be due in this very tick.
    if replan:
        replan_waiting(engine, settings, clock, limit=settings.claim_batch)
    while time.monotonic() - started < budget_seconds:
        fresh = claim_due(engine, settings, clock, limit=settings.claim_batch)
        commit(fresh)
        if len(fresh) < settings.claim_batch:
            break
    return out

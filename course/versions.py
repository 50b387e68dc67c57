"""Live edits reach people already enrolled: publishing a new version of a sequence moves the
readers in the middle of it onto the new version, by lesson key (course.placement says where
each then stands).

- Readers waiting for their next lesson move at once, set-based: they fall into a few groups
  (the version they are on, their next lesson, whether they switched to aftercare), each
  placed once, in Python, and moved with one UPDATE. Their next lesson stays due when it was.
- Readers whose next lesson is not a matter of position alone (a conversation date reorders
  their course, a treatment date switches it on a day), readers with a lesson in flight (it goes
  out as it was claimed), and readers who had, under an earlier version, a lesson their own
  version has dropped and the new one has again: marked to be replanned, with no due time, so
  the tick claims nothing for them until it has moved them, one by one, from their own history
  (move_one, from course.readers.preferences.replan_waiting), once their lesson in flight is sent.
- Pending sign-ups move as they are: they have had nothing.
- Readers who completed, unsubscribed or bounced stay where they ended.

Rolling back is publishing an earlier version's content again, as a new version: the same rules.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    DateTime,
    Integer,
    Result,
    String,
    any_,
    bindparam,
    func,
    literal,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from course import catalog, timing
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Lesson,
    row_id,
)
from course.placement import Placed, Placement, place
from course.plan import Step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moves:
    """What one publication did to the readers of the course."""

    moved: int = 0  # waiting readers now on the new version
    completed: int = 0  # waiting readers with nothing left in it
    later: int = 0  # marked for the tick to move from their own history
    pending: int = 0  # sign-ups not confirmed yet


def move_readers(session: Session, *, slug: str, to_version_id: int, now: datetime) -> Moves:
    """Move every reader of `slug` on an older version onto `to_version_id` (just published)."""
    pending = _rows(
        session.execute(
            update(Enrollment)
            .where(
                col(Enrollment.sequence_slug) == slug,
                col(Enrollment.status) == EnrollmentStatus.PENDING,
                col(Enrollment.version_id) != to_version_id,
            )
            .values(version_id=to_version_id)
        )
    )
    moved = completed = 0
    for group in _waiting_groups(session, slug=slug, to_version_id=to_version_id):
        count = _move_group(session, group, now=now)
        if group.placement.next_position is None:
            completed += count
        else:
            moved += count
    # Everyone still on an older version (including any a worker claimed a lesson for since the
    # groups were read): the tick moves them once nothing of theirs is in flight.
    later = _rows(
        session.execute(
            update(Enrollment)
            .where(
                col(Enrollment.sequence_slug) == slug,
                col(Enrollment.status) == EnrollmentStatus.ACTIVE,
                col(Enrollment.version_id) != to_version_id,
            )
            .values(replan=True, next_due_at=None)
        )
    )
    moves = Moves(moved=moved, completed=completed, later=later, pending=pending)
    log.info("%s: readers moved to version id %s: %s", slug, to_version_id, moves)
    return moves


def move_one(session: Session, enrollment: Enrollment, *, now: datetime) -> bool:
    """Move one reader onto the newest version of their course, from their own history (what
    they had in any version, and for a reader whose order never changed every lesson before
    their next one). The caller plans their next lesson afterwards. False: already on it."""
    newest = catalog.newest_version(session, enrollment.sequence_slug)
    if newest is None or row_id(newest) == enrollment.version_id:
        return False
    to_version_id = row_id(newest)
    lessons = _lessons(session, [enrollment.version_id, to_version_id])
    old = lessons[enrollment.version_id]
    had = set(timing.keys_behind(session, row_id(enrollment)))
    if not enrollment.reordered:
        had |= {p.key for p in old if p.step.position < enrollment.next_position}
    placement = place(
        [p.key for p in old],
        had,
        lessons[to_version_id],
        switched=enrollment.started_treatment_at is not None,
    )
    enrollment.version_id = to_version_id
    enrollment.reordered = enrollment.reordered or placement.reordered
    session.add(enrollment)
    session.flush()
    _skip(
        session,
        [row_id(enrollment)],
        version_id=to_version_id,
        positions=placement.skipped,
        now=now,
    )
    return True


# --- waiting readers, by group ----------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """Waiting readers who stand in the same place, and where that is in the new version."""

    version_id: int
    next_position: int
    switched: bool
    to_version_id: int
    placement: Placement
    # Keys of the new version their own version lacks: a reader who had one of them under an
    # earlier version is not placed with the group (move_one places them).
    returning: frozenset[str]
    slug: str


def _switched() -> ColumnElement[bool]:
    return col(Enrollment.started_treatment_at).is_not(None)


def _waiting(slug: str, to_version_id: int) -> tuple[ColumnElement[bool], ...]:
    """Readers on an older version whose next lesson is a matter of position alone, waiting
    for it (a due time, nothing in flight)."""
    in_flight = (
        select(col(Delivery.id))
        .where(
            col(Delivery.enrollment_id) == col(Enrollment.id),
            col(Delivery.kind) == DeliveryKind.LESSON,
            col(Delivery.status) == DeliveryStatus.PENDING,
        )
        .exists()
    )
    return (
        col(Enrollment.sequence_slug) == slug,
        col(Enrollment.status) == EnrollmentStatus.ACTIVE,
        col(Enrollment.version_id) != to_version_id,
        col(Enrollment.next_due_at).is_not(None),
        ~col(Enrollment.reordered),
        col(Enrollment.treatment_on).is_(None),
        ~in_flight,
    )


def _waiting_groups(session: Session, *, slug: str, to_version_id: int) -> list[_Group]:
    found = session.execute(
        select(col(Enrollment.version_id), col(Enrollment.next_position), _switched())
        .where(*_waiting(slug, to_version_id))
        .group_by(col(Enrollment.version_id), col(Enrollment.next_position), _switched())
    ).all()
    lessons = _lessons(session, {v for v, _, _ in found} | {to_version_id})
    target = lessons[to_version_id]
    groups = []
    for version_id, next_position, switched in found:
        old = lessons[version_id]
        keys = [p.key for p in old]
        had = [p.key for p in old if p.step.position < next_position]
        groups.append(
            _Group(
                version_id=version_id,
                next_position=next_position,
                switched=bool(switched),
                to_version_id=to_version_id,
                placement=place(keys, had, target, switched=bool(switched)),
                returning=frozenset(p.key for p in target) - set(keys),
                slug=slug,
            )
        )
    return groups


def _move_group(session: Session, group: _Group, *, now: datetime) -> int:
    """One UPDATE for the whole group; returns how many readers it moved."""
    where = [
        *_waiting(group.slug, group.to_version_id),
        col(Enrollment.version_id) == group.version_id,
        col(Enrollment.next_position) == group.next_position,
        _switched() if group.switched else ~_switched(),
    ]
    if group.returning:
        where.append(~_had_any(group.returning))
    placement = group.placement
    if placement.next_position is None:  # as recording completes a course
        return _rows(
            session.execute(
                update(Enrollment)
                .where(*where)
                .values(status=EnrollmentStatus.COMPLETED, ended_at=now, next_due_at=None)
            )
        )
    move = (
        update(Enrollment)
        .where(*where)
        .values(
            version_id=group.to_version_id,
            next_position=placement.next_position,
            reordered=placement.reordered,
        )
    )
    if not placement.skipped:
        return _rows(session.execute(move))
    ids = list(session.execute(move.returning(col(Enrollment.id))).scalars())
    _skip(session, ids, version_id=group.to_version_id, positions=placement.skipped, now=now)
    return len(ids)


def _had_any(keys: Iterable[str]) -> ColumnElement[bool]:
    """The enrollment has had a lesson with one of these keys, in any version."""
    return (
        select(col(Delivery.id))
        .join(
            Lesson,
            (col(Lesson.version_id) == col(Delivery.version_id))
            & (col(Lesson.position) == col(Delivery.position)),
        )
        .where(
            col(Delivery.enrollment_id) == col(Enrollment.id),
            col(Delivery.kind) == DeliveryKind.LESSON,
            col(Delivery.status).in_((DeliveryStatus.SENT, DeliveryStatus.CANCELLED)),
            col(Lesson.key).in_(sorted(keys)),
        )
        .exists()
    )


# --- shared -----------------------------------------------------------------------------------


def _skip(
    session: Session,
    enrollment_ids: list[int],
    *,
    version_id: int,
    positions: Collection[int],
    now: datetime,
) -> None:
    """Record lessons added among what these readers have read as cancelled for them, in one
    statement: behind them (course.timing reads it so), never sent."""
    if not enrollment_ids or not positions:
        return
    version = literal(version_id, Integer)
    rows = {
        "enrollment_id": col(Enrollment.id),
        "kind": literal(DeliveryKind.LESSON.value),
        "version_id": version,
        "position": col(Lesson.position),
        # Never sent, so never seen by anyone: unique is all it has to be.
        "message_id": literal("<skipped.")
        + sql_cast(col(Enrollment.id), String)
        + "."
        + sql_cast(version, String)
        + "."
        + sql_cast(col(Lesson.position), String)
        + literal("@homeward.invalid>"),
        "status": literal(DeliveryStatus.CANCELLED.value),
        "attempts": literal(0),
        "created_at": literal(now, DateTime(timezone=True)),
    }
    chosen = (
        select(*rows.values())
        .join(Lesson, col(Lesson.version_id) == version)
        .where(_one_of(session, enrollment_ids), col(Lesson.position).in_(sorted(positions)))
    )
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    session.execute(
        dialect.insert(Delivery).from_select(list(rows), chosen).on_conflict_do_nothing()
    )


def _one_of(session: Session, ids: list[int]) -> ColumnElement[bool]:
    """Enrollment.id is one of `ids`, passed as one parameter (one per id would meet SQLite's
    limit of 32,766 with a large course)."""
    if session.get_bind().dialect.name == "sqlite":
        listed = func.json_each(json.dumps(ids)).table_valued("value")
        return col(Enrollment.id).in_(select(listed.c.value))
    return col(Enrollment.id) == any_(bindparam("ids", ids, type_=postgresql.ARRAY(Integer)))


def _lessons(session: Session, version_ids: Iterable[int]) -> dict[int, list[Placed]]:
    """Each version's lessons as placing sees them, in position order."""
    found: dict[int, list[Placed]] = {v: [] for v in version_ids}
    rows = session.execute(
        select(
            col(Lesson.version_id),
            col(Lesson.key),
            col(Lesson.position),
            col(Lesson.delay_days),
            col(Lesson.module),
            col(Lesson.never_skip),
            col(Lesson.anchor),
        )
        .where(col(Lesson.version_id).in_(found))
        .order_by(col(Lesson.version_id), col(Lesson.position))
    )
    for version_id, key, *step in rows:
        found[version_id].append(Placed(key, Step(*step)))
    return found


def _rows(result: Result[Any]) -> int:
    """How many rows an UPDATE changed."""
    return cast(CursorResult[Any], result).rowcount or 0

"""Recording that the SMTP server accepted a message: one "sent" write per message.

Exactly once rests on this write. The write for a message is committed before the next
message's data goes out on the same connection, so at most one accepted message per open SMTP
connection is ever unrecorded. It runs while the SMTP server answers the next message's
envelope, so the server does not wait for the database.

A worker process has many connections sending at once; their writes go to one thread with one
database connection (GroupRecorder), which commits together all those handed in at the same
moment.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Integer, bindparam, case, null, update
from sqlmodel import col

from course import timing
from course.catalog import LessonPlan
from course.db import polling_locks, raw_statement, raw_transaction
from course.models import Delivery, DeliveryKind, DeliveryStatus, Enrollment, EnrollmentStatus
from course.plan import next_lesson
from course.sending.jobs import Job
from course.settings import Settings

log = logging.getLogger(__name__)

# Built once: on the hot path, building a statement costs more than running it.
_MARK_SENT = (
    update(Delivery)
    .where(col(Delivery.id) == bindparam("d_id"), col(Delivery.lease_owner) == bindparam("d_owner"))
    .values(
        status=DeliveryStatus.SENT, sent_at=bindparam("d_now"), lease_owner=None, lease_until=None
    )
)
_STILL_ON_LESSON = (
    col(Enrollment.id) == bindparam("e_id"),
    col(Enrollment.status) == EnrollmentStatus.ACTIVE,
    # The version too: a plan made from one version's lessons never moves a reader on another.
    col(Enrollment.version_id) == bindparam("e_ver"),
    col(Enrollment.next_position) == bindparam("e_pos"),
)
# A preference changed while this lesson was in flight (Enrollment.replan): the plan made when
# the batch was loaded is stale, so the lesson is recorded but the next one is left for the
# tick to plan afresh (course.sending.dispatch.replan).
_ADVANCE = (
    update(Enrollment)
    .where(*_STILL_ON_LESSON)
    .values(
        next_position=bindparam("e_next", type_=Integer),
        next_due_at=case(
            (col(Enrollment.replan), null()),
            else_=bindparam("e_due", type_=DateTime(timezone=True)),
        ),
    )
)
_COMPLETE = (
    update(Enrollment)
    .where(*_STILL_ON_LESSON)
    .values(
        status=case(
            (col(Enrollment.replan), col(Enrollment.status)), else_=EnrollmentStatus.COMPLETED.value
        ),
        ended_at=case(
            (col(Enrollment.replan), col(Enrollment.ended_at)),
            else_=bindparam("e_now", type_=DateTime(timezone=True)),
        ),
        next_due_at=None,
    )
)


# On PostgreSQL, both writes as one statement: marking the delivery sent, with the enrollment's
# update as a data-modifying WITH, which PostgreSQL always runs, in the same statement, even
# though nothing reads it. It runs after the main statement (the docs leave the order open), so
# rows are locked delivery first, then enrollment, as erase() deletes them.
_MARK_SENT_THEN = {
    id(then): _MARK_SENT.add_cte(then.returning(col(Enrollment.id)).cte("then_enrollment"))
    for then in (_ADVANCE, _COMPLETE)
}


def sent_writes(
    settings: Settings,
    job: Job,
    *,
    owner: str,
    now: datetime,
    plan: LessonPlan,
    one_statement: bool = False,
) -> list[tuple[Any, dict[str, Any]]]:
    """The statements (built once) and values that mark the delivery sent and, for a lesson, plan
    the next one (course.plan). With `one_statement`, both are one statement (PostgreSQL)."""
    writes: list[tuple[Any, dict[str, Any]]] = [
        (_MARK_SENT, {"d_id": job.delivery.id, "d_owner": owner, "d_now": now})
    ]
    if job.delivery.kind == DeliveryKind.LESSON:
        position, version_id = job.delivery.position, job.delivery.version_id
        enrollment, subscriber = job.enrollment, job.subscriber
        where = {"e_id": enrollment.id, "e_ver": version_id, "e_pos": position}
        found = next_lesson(
            plan.steps[version_id],
            timing.preferences(enrollment, subscriber),
            timing.calendar(enrollment, subscriber, day_seconds=settings.day_seconds, now=now),
            after=position,
            at=now,
            sent=job.sent | {position} if job.sent is not None else None,
        )
        if found.position is None:
            writes.append((_COMPLETE, {**where, "e_now": now}))
        else:
            writes.append((_ADVANCE, {**where, "e_next": found.position, "e_due": found.due}))
    if len(writes) == 2 and one_statement:
        (_, sent_values), (then, values) = writes
        writes = [(_MARK_SENT_THEN[id(then)], {**sent_values, **values})]
    return writes


class RecordFailed(Exception):
    """The database refused a "sent" write, or the connection to it broke."""


@dataclass
class _Handed:
    writes: list[tuple[Any, dict[str, Any]]]
    done: Future[None] = field(default_factory=Future)


class GroupRecorder:
    """Writes "sent" for every sending thread of a worker process: one thread, one database
    connection, and each transaction holds every write handed in since the last one began
    (group commit). A worker with many SMTP connections has many messages accepted at the same
    moment; one commit for them all keeps the database's share of a message small (one fsync,
    one hold of SQLite's write lock) and the process to one connection for it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[_Handed | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # PostgreSQL takes both writes of a message as one statement (see _MARK_SENT_THEN).
        self._one_statement = engine.dialect.name == "postgresql"

    def submit(
        self, settings: Settings, job: Job, *, owner: str, now: datetime, plan: LessonPlan
    ) -> Future[None]:
        """Hand in one message's "sent" write; the future is done once it is committed."""
        # Worked out here, on the sending thread: the writing thread only writes.
        handed = _Handed(
            sent_writes(
                settings, job, owner=owner, now=now, plan=plan, one_statement=self._one_statement
            )
        )
        with self._lock:
            # A writing thread that ended on an error nobody foresaw is replaced: the sending
            # threads would otherwise wait for their writes for ever, holding their lessons.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="homeward-record", daemon=True
                )
                self._thread.start()
        self._queue.put(handed)
        return handed.done

    def handle(self) -> RecordHandle:
        return RecordHandle(self)

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def __enter__(self) -> GroupRecorder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self) -> None:
        stack = ExitStack()
        conn: Connection | None = None
        try:
            while (first := self._queue.get()) is not None:
                group, stopping = [first], False
                while True:  # everything handed in meanwhile joins this transaction
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    group.append(more)
                try:
                    if conn is None:
                        conn = stack.enter_context(self._engine.connect())
                        conn = stack.enter_context(polling_locks(conn))
                    _write(conn, group)
                except Exception as exc:
                    log.error("could not record %d sent messages: %s", len(group), exc)
                    failed = RecordFailed(str(exc))
                    for handed in group:
                        handed.done.set_exception(failed)
                    # The connection may be broken or mid-answer: never use it again.
                    if conn is not None:
                        conn.invalidate()
                    stack.close()
                    conn = None
                else:
                    for handed in group:
                        handed.done.set_result(None)
                if stopping:
                    break
        finally:
            stack.close()


def _write(conn: Connection, group: list[_Handed]) -> None:
    """One transaction for the whole group: each statement once, with every row's values."""
    dialect = conn.dialect
    by_statement: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
    for handed in group:
        for stmt, values in handed.writes:
            by_statement.setdefault(id(stmt), (stmt, []))[1].append(values)
    prepared = [(raw_statement(stmt, dialect), rows) for stmt, rows in by_statement.values()]
    with raw_transaction(conn) as cursor:
        for statement, rows in prepared:
            if len(rows) == 1:
                cursor.execute(statement.sql, statement.params(rows[0]))
            else:
                cursor.executemany(statement.sql, [statement.params(v) for v in rows])  # type: ignore[arg-type]


class RecordHandle:
    """One batch's view of the recorder: a message's write is waited for before the next
    message's data goes out on that batch's connection."""

    def __init__(self, group: GroupRecorder) -> None:
        self._group = group
        self._writing: Future[None] | None = None

    def record_sent(
        self, settings: Settings, job: Job, *, owner: str, now: datetime, plan: LessonPlan
    ) -> None:
        """Start the write; wait() waits for it."""
        self.wait()
        self._writing = self._group.submit(settings, job, owner=owner, now=now, plan=plan)

    def wait(self) -> None:
        """Wait for the write in flight, if any, to commit; RecordFailed if it did not."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

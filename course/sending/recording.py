"""Recording that the SMTP server accepted a message: one "sent" write per message.

Exactly once rests on this write. The write for a message is committed before the next
message's data goes out, so at most one accepted message per worker process is ever unrecorded.
It runs while the SMTP server answers the next message's envelope, so the server does not wait
for the database.

Two ways to run it beside the sending loop:
- PostgreSQL (PostgresRecorder): one statement in autocommit, sent from the sending thread
  without waiting, its answer read just before the next message's data.
- SQLite (ThreadRecorder): a short transaction on a thread and a connection of its own.
"""

from __future__ import annotations

import hashlib
import select as io
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, DateTime, Engine, Integer, bindparam, case, null, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlmodel import col

from course import timing
from course.catalog import LessonPlan
from course.db import polling_locks, raw_statement, raw_transaction
from course.models import Delivery, DeliveryKind, DeliveryStatus, Enrollment, EnrollmentStatus
from course.plan import next_lesson
from course.sending.jobs import Job
from course.settings import Settings

if TYPE_CHECKING:  # psycopg is only installed with PostgreSQL (the postgres extra)
    from psycopg.pq.abc import PGconn, PGresult

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


def record_sent(
    conn: Connection,
    settings: Settings,
    job: Job,
    *,
    owner: str,
    now: datetime,
    plan: LessonPlan,
) -> None:
    """The "sent" write as one transaction on `conn`, straight on the DBAPI cursor."""
    # Everything is worked out before the transaction, to hold SQLite's write lock briefly.
    dialect = conn.dialect
    prepared = [
        (raw_statement(stmt, dialect), values)
        for stmt, values in sent_writes(settings, job, owner=owner, now=now, plan=plan)
    ]
    with raw_transaction(conn) as cursor:
        for statement, values in prepared:
            cursor.execute(statement.sql, statement.params(values))


class ThreadRecorder:
    """Writes "sent" on a thread and a connection of its own, one short transaction each."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="homeward-record")
        self._resources = ExitStack()
        self._conn: Connection | None = None
        self._writing: Future[None] | None = None

    def _connection(self) -> Connection:  # only ever called on the thread
        if self._conn is None:
            conn = self._resources.enter_context(self._engine.connect())
            self._conn = self._resources.enter_context(polling_locks(conn))
        return self._conn

    def record_sent(
        self, settings: Settings, job: Job, *, owner: str, now: datetime, plan: LessonPlan
    ) -> None:
        """Start the write; wait() waits for it."""
        self.wait()
        self._writing = self._thread.submit(
            lambda: record_sent(self._connection(), settings, job, owner=owner, now=now, plan=plan)
        )

    def wait(self) -> None:
        """Wait for the write in flight, if any, to commit; raise what it raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def __enter__(self) -> ThreadRecorder:
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self._thread.submit(self._resources.close).result()
        finally:
            self._thread.shutdown()


@cache
def _numbered() -> Dialect:
    """The dialect for the write in libpq's own form ($1, $2 ... each cast to its type)."""
    # SQLAlchemy's dialect classes are not annotated.
    return postgresql.psycopg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


@cache
def _prepared_name(sql: str) -> bytes:
    # From the text, not id(): behind a pooler, another process may have prepared a name.
    return f"homeward_sent_{hashlib.sha256(sql.encode()).hexdigest()[:24]}".encode()


class PostgresRecorder:
    """Writes "sent" as one statement in autocommit, from the sending thread, without waiting.

    A thread, as for SQLite, would do as well, but handing each write to it cost more CPU than
    the write itself, on the machine the SMTP server and the database share.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._resources = ExitStack()
        self._prepared: set[bytes] | None = None  # read from the server on first use
        self._in_flight = False

    def __enter__(self) -> PostgresRecorder:
        with ExitStack() as resources:
            conn = resources.enter_context(self._engine.connect())
            self._conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = self._conn.connection.driver_connection
            assert driver is not None
            self._pg: PGconn = driver.pgconn
            self._resources = resources.pop_all()
        return self

    def record_sent(
        self, settings: Settings, job: Job, *, owner: str, now: datetime, plan: LessonPlan
    ) -> None:
        """Send the write to the server; wait() reads its answer."""
        import psycopg

        self.wait()
        [(stmt, values)] = sent_writes(
            settings, job, owner=owner, now=now, plan=plan, one_statement=True
        )
        statement = raw_statement(stmt, _numbered())
        name = _prepared_name(statement.sql)
        pg = self._pg
        try:
            if self._prepared is None:
                self._prepared = _prepared_statements(pg)
            if name not in self._prepared:
                _check(pg.prepare(name, statement.sql.encode()))
                self._prepared.add(name)
            pg.send_query_prepared(name, [_as_text(v) for v in statement.params(values)])
            self._in_flight = True
            while pg.flush():  # the socket's buffer is full: wait until it drains
                io.select([], [pg.socket], [])
        except (psycopg.Error, OSError) as exc:
            # Not an OSError: the sending loop would take it for the SMTP server being down.
            raise RecordFailed(str(exc)) from exc

    def wait(self) -> None:
        """Wait for the write in flight, if any, to commit; RecordFailed if it did not."""
        import psycopg

        if not self._in_flight:
            return
        error = None
        try:
            while (answer := self._pg.get_result()) is not None:
                error = error or _error(answer)
        except (psycopg.Error, OSError) as exc:
            error = str(exc)
        self._in_flight = False
        if error:
            raise RecordFailed(error)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        from psycopg import pq

        try:
            self.wait()
            if exc_type is not None or self._pg.transaction_status != pq.TransactionStatus.IDLE:
                self._conn.invalidate()  # it may be mid-answer: it must not go back to the pool
        except BaseException:
            self._conn.invalidate()
            raise
        finally:
            self._resources.close()


Recorder = PostgresRecorder | ThreadRecorder


def recorder_for(engine: Engine) -> Recorder:
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return PostgresRecorder(engine)
    return ThreadRecorder(engine)


class RecordFailed(Exception):
    """The database refused a "sent" write, or the connection to it broke."""


def _prepared_statements(pg: PGconn) -> set[bytes]:
    """What this session has prepared. Asked of the server once per batch, not remembered with
    the pooled connection: psycopg deallocates every statement on a connection after a
    ROLLBACK once it has prepared some of its own."""
    answer = pg.exec_(b"SELECT name FROM pg_prepared_statements WHERE name LIKE 'homeward_%'")
    _check(answer)
    return {answer.get_value(row, 0) or b"" for row in range(answer.ntuples)}


def _check(answer: PGresult) -> None:
    if error := _error(answer):
        raise RecordFailed(error)


def _error(answer: PGresult) -> str | None:
    from psycopg import pq

    if answer.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return None
    return answer.error_message.decode("utf-8", "replace") or f"status {answer.status}"


def _as_text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text form (the statement casts each one to its type)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().encode()
    return str(value).encode()

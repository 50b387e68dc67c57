"""Engine and session helpers, SQLite tuning, and schema upgrades through Alembic."""

from __future__ import annotations

import os
import select
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import ClauseElement, Connection, Engine, event, inspect, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel import Session, create_engine

from course.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# How long an SQLite connection waits for another one's write lock before it gives up.
BUSY_TIMEOUT_MS = 30000
_READ_ONLY = "homeward_read_only"  # an execution option: see read_only()


# How many values one IN (...) list takes: SQLite allows at most 32,766 parameters in a statement,
# and batch sizes (COURSE_CLAIM_BATCH) have no upper bound.
IN_LIST = 1000
_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int = IN_LIST) -> list[list[_T]]:
    """`items` in lists of at most `size`, in order."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


# How long a new PostgreSQL connection may take. Left to psycopg (130 s), a server that takes
# the connection but never answers (a hung host, a full proxy) holds a sign-up, and the web
# process's sign-up slots behind it, for minutes. A URL's own connect_timeout, or
# PGCONNECT_TIMEOUT, is kept; it counts per address, so name hosts by one address.
CONNECT_TIMEOUT_SECONDS = 10


def _connect_args(url: str) -> dict[str, Any]:
    """The driver's settings for each new PostgreSQL connection."""
    # Sessions in UTC: a date taken of a timestamp (the dashboard's days) and timestamps as
    # read are UTC days and UTC times, whatever the server's own zone.
    args: dict[str, Any] = {"options": "-c TimeZone=UTC"}
    if "connect_timeout" not in make_url(url).query and "PGCONNECT_TIMEOUT" not in os.environ:
        args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return args


def connections_kept() -> int:
    """The PostgreSQL connections a process keeps, at most: one per sending thread of a worker
    (COURSE_SMTP_CONNECTIONS) and five more for its tick and beat tasks. A web process gets
    as many, for the requests its threads serve at once (up to 40; the rest wait)."""
    return 5 + max(5, get_settings().smtp_connections)


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        engine = create_engine(
            url,
            # A worker's sending threads (one per SMTP connection) each claim and load their
            # batches, and a web process serves up to 40 requests at once on its threads:
            # waiting for one of ten connections made 32 threads send at the pace of ten. Every
            # connection is kept once opened. Kept only five (the rest closed when handed
            # back), a burst of sign-ups opened a new PostgreSQL connection for one request in
            # ten (500 in 10 s), each a server process started and its caches filled.
            pool_size=connections_kept(),
            max_overflow=0,
            # Against what closes an idle connection without a word (a firewall, a proxy):
            # a connection is never reused after this many seconds.
            pool_recycle=1800,
            connect_args=_connect_args(url),
            # A failed statement's parameters are a reader's address, name or answers: never
            # in an error message, which ends up in a log line.
            hide_parameters=True,
        )
        event.listen(engine, "checkout", _refuse_closed)
        return engine
    engine = create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        # Let SQLAlchemy, not the driver, open transactions, so each one can take the write
        # lock up front: SQLite has no FOR UPDATE, and a lock upgrade mid-transaction can fail.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, not left in free space: an erased reader's
        # address must not stay readable in the file.
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # A checkpoint (and its fsyncs) runs inside whichever commit crosses the limit; the
        # sending loop commits once per message, so checkpoint every ~40 MB of WAL, not ~4 MB.
        cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")  # WAL: reads a snapshot and takes no lock at all
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _refuse_closed(dbapi_conn: Any, _record: object, _proxy: object) -> None:
    """Hand out no connection the server has closed, without a round trip (pool_pre_ping's
    SELECT 1 on every checkout was a query per request): a server that restarts or ends a
    session sends a last message and closes the socket, so an idle connection with anything to
    read is gone. The pool then opens another. A connection that dies silently fails its first
    statement instead, and SQLAlchemy then drops every connection opened before it."""
    if getattr(dbapi_conn, "closed", False) or getattr(dbapi_conn, "broken", False):
        raise DisconnectionError("the connection is closed")
    waiting = select.poll()  # (not select.select: a busy process has descriptors past 1024)
    waiting.register(dbapi_conn.fileno(), select.POLLIN)
    if waiting.poll(0):
        raise DisconnectionError("the server closed the connection")


# Tables that hold what a person told us, for scrub().
PERSONAL_TABLES = ("subscriber", "enrollment", "delivery", "signup_request")


def scrub(engine: Engine, *, within_seconds: float = 10.0, vacuum: bool = False) -> bool:
    """Make deleted rows unreadable on disk; whether that is done.

    SQLite: deletes already overwrite with zeros (secure_delete), but the write-ahead log still
    holds earlier copies of the pages until a checkpoint copies the log into the database and
    truncates it. That waits for older readers and any writer to finish, so it is retried for
    `within_seconds`. PostgreSQL keeps dead rows until VACUUM marks their space for reuse (and
    even then the bytes stay until overwritten, see the README); with `vacuum` the personal
    tables are vacuumed, which the hourly task does rather than a web request.
    """
    if not is_sqlite(engine):
        if vacuum:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM " + ", ".join(PERSONAL_TABLES))
        return vacuum
    give_up = time.monotonic() + within_seconds
    with engine.connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        dbapi_conn.execute("PRAGMA busy_timeout=1000")
        try:
            while True:
                busy, _, _ = dbapi_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                if time.monotonic() >= give_up:
                    return False
        finally:
            dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def read_only(engine: Engine) -> Engine:
    """`engine` for transactions that only read. On SQLite they begin DEFERRED instead of
    IMMEDIATE, so they never make a writer wait: loading a batch to send used to hold the write
    lock for milliseconds while the other workers' "sent" writes queued behind it. A write in
    such a transaction is an error, not a wait."""
    return engine.execution_options(**{_READ_ONLY: True})


@lru_cache
def engine_for(url: str) -> Engine:
    return make_engine(url)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


class RawStatement:
    """A Core statement compiled once for a dialect, to run on a DBAPI cursor.

    For the per-message writes of the sending loop: SQLAlchemy's execution machinery around a
    one-row UPDATE costs more than the database does. Parameters go through the same bind
    processors SQLAlchemy would use, so the rows written are the same.
    """

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        self.stmt = stmt  # kept alive, so that its id() (the cache key) is never reused
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
        self.sql = compiled.string
        self._positional = compiled.positional
        names = (
            compiled.positiontup
            if compiled.positional
            else list(dict.fromkeys(compiled.bind_names.values()))
        )
        # (name in the SQL, caller's key or None for a value fixed in the statement, processor,
        # the fixed value already processed)
        self._slots: list[tuple[str, str | None, Any, Any]] = []
        for name in names or ():
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                self._slots.append((name, bind.key, process, None))
            else:
                value = bind.effective_value
                self._slots.append((name, None, None, process(value) if process else value))

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        out = [
            (value if key is None else process(values[key]) if process else values[key])
            for _, key, process, value in self._slots
        ]
        if self._positional:
            return out
        return {name: v for (name, *_), v in zip(self._slots, out, strict=True)}


_raw_statements: dict[tuple[int, str, str], RawStatement] = {}


def raw_statement(stmt: ClauseElement, dialect: Dialect) -> RawStatement:
    """RawStatement for a statement built once at import time, compiled on first use."""
    key = (id(stmt), dialect.name, dialect.driver)
    found = _raw_statements.get(key)
    if found is None:
        found = _raw_statements[key] = RawStatement(stmt, dialect)
    return found


_POLLING = "homeward.polling_locks"


@contextmanager
def polling_locks(conn: Connection) -> Iterator[Connection]:
    """`conn` for a run of short transactions (raw_transaction): on SQLite, wait for the write
    lock in steps of a tenth of a millisecond instead of SQLite's own busy wait, which sleeps a
    whole millisecond at the first conflict, ten times longer than such a transaction holds it.
    """
    if conn.dialect.name != "sqlite":
        yield conn
        return
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    conn.info[_POLLING] = True
    try:
        yield conn
    finally:
        conn.info.pop(_POLLING, None)
        # An invalidated connection is closed and never handed out again: nothing to restore.
        if not conn.invalidated:
            try:
                dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            except Exception:
                # Never hand out a connection that would not wait at all; raising here would
                # hide whatever ended the block.
                conn.invalidate()


def _begin_polling(cursor: DBAPICursor) -> None:
    give_up = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.0001
    while True:
        try:
            cursor.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            # The primary code: SQLITE_BUSY_RECOVERY and _SNAPSHOT are worth waiting out too.
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > give_up:
                raise
        time.sleep(pause)
        pause = min(pause * 1.5, 0.005)


@contextmanager
def raw_transaction(conn: Connection) -> Iterator[DBAPICursor]:
    """One transaction on the DBAPI connection under `conn`, which has none open of its own:
    begun the way every transaction here is (BEGIN IMMEDIATE on SQLite), committed on success,
    rolled back on any error."""
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    cursor = dbapi_conn.cursor()
    try:
        if conn.dialect.name == "sqlite":
            if conn.info.get(_POLLING):
                _begin_polling(cursor)
            else:
                cursor.execute("BEGIN IMMEDIATE")
        yield cursor
        dbapi_conn.commit()
    except BaseException:
        with suppress(Exception):  # the error that got us here is the one to report
            dbapi_conn.rollback()
        raise
    finally:
        cursor.close()


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the schema to the newest revision (what `course db upgrade` runs)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


@lru_cache
def _revisions() -> tuple[frozenset[str], frozenset[str]]:
    """(the newest revisions, every revision) this code's migrations know."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return frozenset(scripts.get_heads()), frozenset(r.revision for r in scripts.walk_revisions())


def schema_state(conn: Connection) -> str:
    """Where the database's schema stands against this code: "current"; "behind" (run
    `course db upgrade`); or "ahead" (a newer release migrated it)."""
    heads, known = _revisions()
    # Read directly: alembic's MigrationContext logs two lines each time, and /health asks often.
    if not inspect(conn).has_table("alembic_version"):
        return "behind"
    current = frozenset(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    if current == heads:
        return "current"
    return "behind" if current <= known else "ahead"

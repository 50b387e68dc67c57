"""The database as the code expects it: the schema the migrations build, and SQLite's locks."""

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, insert, make_url, text
from sqlmodel import Session, SQLModel, select

from course.db import connections_kept, engine_for, make_engine, read_only, session_scope
from course.models import Delivery, Enrollment, SequenceVersion, Subscriber
from course.sending.jobs import claim_and_load_statement


def test_the_migrations_build_the_tables_and_indexes_the_models_describe(db_url):
    with engine_for(db_url).connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert differences == []


def test_loading_a_batch_on_sqlite_does_not_hold_up_the_workers_writing_sent(_sqlite_url):
    """A batch is loaded in a read-only transaction: in WAL mode it takes no lock, so another
    worker can record its sent lesson in the middle of it instead of waiting it out."""
    engine = engine_for(_sqlite_url)
    path = make_url(_sqlite_url).database
    assert path is not None
    with Session(read_only(engine)) as session:
        session.exec(select(Delivery.id)).all()  # the read transaction is open from here
        writer = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # raises "database is locked" if a lock is held
            writer.execute("COMMIT")
        finally:
            writer.close()
        session.commit()
    # An ordinary transaction, by contrast, takes the write lock up front (no FOR UPDATE here).
    with session_scope(engine) as session:
        session.exec(select(Delivery.id)).all()
        writer = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                writer.execute("BEGIN IMMEDIATE")
        finally:
            writer.close()


def test_a_batch_is_claimed_by_id_even_when_statistics_say_nothing_is_pending(
    settings, clock, mini_course
):
    """After a quiet spell PostgreSQL's statistics say no delivery is pending. A backlog then
    arrives, and claiming each batch must not walk every pending row to find its 200."""
    engine = engine_for(settings.database_url)
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL query plan: SQLite claims in two plain statements")
    now = clock.now()
    with session_scope(engine) as session:
        version_id = session.exec(select(SequenceVersion.id)).one()
        session.execute(
            insert(Subscriber),
            [{"email": f"q{n}@example.org", "created_at": now} for n in range(5000)],
        )
        people = session.exec(select(Subscriber.id)).all()
        session.execute(
            insert(Enrollment),
            [
                {
                    "subscriber_id": p,
                    "sequence_slug": mini_course,
                    "version_id": version_id,
                    "status": "active",
                    "created_at": now,
                }
                for p in people
            ],
        )
        enrollments = session.exec(select(Enrollment.id)).all()
        session.execute(
            insert(Delivery),
            [
                {
                    "enrollment_id": e,
                    "kind": "lesson",
                    "version_id": version_id,
                    "position": 1,
                    "status": "sent",
                    "message_id": f"<q{e}@homeward.test>",
                    "created_at": now,
                }
                for e in enrollments
            ],
        )
    with engine.connect() as conn:
        # Autovacuum must not refresh the statistics halfway through: this test would then pass
        # with the index scan it is there to catch.
        conn.exec_driver_sql("ALTER TABLE delivery SET (autovacuum_enabled = false)")
        conn.exec_driver_sql("ANALYZE delivery")  # the quiet spell: everything sent
        conn.exec_driver_sql("UPDATE delivery SET status = 'pending'")  # the backlog
        conn.commit()
        ids = list(conn.execute(select(Delivery.id).limit(200)).scalars())
        stmt, values = claim_and_load_statement(
            ids=ids, owner="worker", now=now, lease=timedelta(0)
        )
        compiled = stmt.compile(dialect=conn.dialect)
        params = compiled.construct_params(values)
        plan = "\n".join(
            row[0] for row in conn.exec_driver_sql("EXPLAIN " + compiled.string, params)
        )
        conn.rollback()
        conn.exec_driver_sql("ALTER TABLE delivery RESET (autovacuum_enabled)")
        conn.commit()
    assert "delivery_pkey" in plan and "ix_delivery_pending" not in plan, plan


def test_every_migration_keeps_sqlite_from_reusing_the_ids_links_once_named(_sqlite_url):
    # A batch migration rebuilds a SQLite table from what it reflects, and AUTOINCREMENT is not
    # reflected: each later migration of these tables must keep it (table_kwargs).
    with engine_for(_sqlite_url).connect() as conn:
        tables: dict[str, str] = dict(
            conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all()
        )
    for name in (
        "subscriber",
        "enrollment",
        "delivery",
        "signup_request",
        "webhook_endpoint",
        "webhook_message",
    ):
        assert "AUTOINCREMENT" in tables[name], name


def test_a_burst_of_requests_reuses_the_postgresql_connections_it_opened(db_url):
    """Twelve requests at once, twice: the second burst finds the first's connections kept.
    Closed again past the first five, a burst of sign-ups opened a new connection (a server
    process started) for one request in ten."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite opens a file, not a server connection")
    engine = make_engine(db_url)
    opened: list[object] = []
    event.listen(engine, "connect", lambda dbapi_conn, _record: opened.append(dbapi_conn))
    at_once = min(12, connections_kept())

    def request(together: threading.Barrier) -> None:
        with session_scope(engine) as session:
            session.execute(text("SELECT 1"))
            together.wait()  # every request holds its connection at the same moment

    try:
        for _burst in range(2):
            together = threading.Barrier(at_once, timeout=30)
            with ThreadPoolExecutor(at_once) as pool:
                for done in [pool.submit(request, together) for _ in range(at_once)]:
                    done.result()
        assert len(opened) == at_once
    finally:
        engine.dispose()


def test_a_database_url_that_names_its_own_connection_time_limit_keeps_it():
    """An operator whose database sits far away names a longer (or shorter) limit in the URL;
    it is not replaced by the default."""
    import socket
    import time

    from sqlalchemy.exc import OperationalError

    from course.db import CONNECT_TIMEOUT_SECONDS

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # takes connections in, never answers on them
    port = hung.getsockname()[1]
    engine = make_engine(f"postgresql://homeward@127.0.0.1:{port}/homeward?connect_timeout=1")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            engine.connect()
        took = time.monotonic() - started
    finally:
        engine.dispose()
        hung.close()
    assert 0.9 <= took < CONNECT_TIMEOUT_SECONDS / 2, took

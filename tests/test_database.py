"""The database as the code expects it: the schema the migrations build, and SQLite's locks."""

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import make_url
from sqlmodel import Session, SQLModel, select

from course.db import engine_for, read_only, session_scope
from course.models import Delivery


def test_the_migrations_build_the_tables_and_indexes_the_models_describe(db_url):
    with engine_for(db_url).connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert differences == []


def test_loading_a_batch_on_sqlite_does_not_hold_up_the_workers_writing_sent(_sqlite_url):
    """A batch is loaded in a read-only transaction: in WAL mode it takes no lock, so another
    worker can record its sent lesson in the middle of it instead of waiting it out."""
    engine = engine_for(_sqlite_url)
    path = make_url(_sqlite_url).database
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

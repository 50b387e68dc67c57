"""The schema the migrations build is the one the code reads and writes."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from course.db import engine_for


def test_the_migrations_build_the_tables_and_indexes_the_models_describe(db_url):
    with engine_for(db_url).connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert differences == []

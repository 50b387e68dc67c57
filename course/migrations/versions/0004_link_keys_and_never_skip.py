"""Links name an unguessable key, ids are never reused, and lessons can be marked never-skip

- enrollment.link_key: what a reader's links name instead of the row id. On SQLite an erased
  reader's id went to the next sign-up, and the erased reader's links then opened the new
  reader's data.
- subscriber, enrollment and delivery become AUTOINCREMENT tables on SQLite (PostgreSQL's
  sequences never hand out an id twice), so no id is reused from here on.
- lesson.never_skip (overdose, safety: sent whatever the reader switches to) and lesson.heading
  (the heading inside the email, which may say more than the subject).

Revision ID: 0004
Revises: 0003
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("subscriber", "enrollment", "delivery")


def upgrade() -> None:
    with op.batch_alter_table("lesson") as batch:
        batch.add_column(
            sa.Column("never_skip", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("heading", sa.String(120), nullable=False, server_default=""))
    op.add_column("enrollment", sa.Column("link_key", sa.String(32), nullable=True))
    conn = op.get_bind()
    enrollment = sa.table("enrollment", sa.column("id", sa.Integer), sa.column("link_key"))
    ids = conn.execute(sa.select(enrollment.c.id)).scalars().all()
    if ids:
        conn.execute(
            enrollment.update()
            .where(enrollment.c.id == sa.bindparam("row_id"))
            .values(link_key=sa.bindparam("key")),
            [{"row_id": i, "key": secrets.token_urlsafe(16)} for i in ids],
        )
    sqlite = conn.dialect.name == "sqlite"
    for name in _TABLES:
        # On SQLite AUTOINCREMENT is part of the table's definition: the table is rebuilt.
        with op.batch_alter_table(
            name,
            recreate="always" if sqlite else "auto",
            table_kwargs={"sqlite_autoincrement": True},
        ) as batch:
            if name == "enrollment":
                batch.alter_column("link_key", existing_type=sa.String(32), nullable=False)
                batch.create_unique_constraint("uq_enrollment_link_key", ["link_key"])


def downgrade() -> None:
    with op.batch_alter_table("enrollment") as batch:
        batch.drop_constraint("uq_enrollment_link_key", type_="unique")
        batch.drop_column("link_key")
    with op.batch_alter_table("lesson") as batch:
        batch.drop_column("heading")
        batch.drop_column("never_skip")

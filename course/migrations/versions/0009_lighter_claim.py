"""The tick's claim writes fewer index entries: the due, ended and sent-at indexes hold only the
rows they are read for, and the dashboard finds a course's readers through its sign-ups index;
readers waiting to be planned again (in flight, so out of the due index) are found through an
index of their own; a delivery counts the tries that failed to render it apart from the relay's

Every claimed lesson rewrites its enrollment row, and because `next_due_at` is indexed,
PostgreSQL adds an entry to every index of the table for it. Seven indexes made the claim of
1,000 lessons spend about 25 ms on enrollment alone.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite: keep AUTOINCREMENT on the tables whose ids links and caches once named.
NO_REUSE = {"sqlite_autoincrement": True}

# (name, table, columns, condition): the condition that makes each one partial.
PARTIAL = [
    ("ix_enrollment_due", "enrollment", ["status", "next_due_at"], "next_due_at IS NOT NULL"),
    ("ix_enrollment_ended", "enrollment", ["ended_at"], "ended_at IS NOT NULL"),
    ("ix_delivery_sent_at", "delivery", ["sent_at"], "sent_at IS NOT NULL"),
]


def upgrade() -> None:
    with op.batch_alter_table("delivery", table_kwargs=NO_REUSE) as batch:
        batch.add_column(
            sa.Column("render_failures", sa.Integer(), nullable=False, server_default="0")
        )
    op.drop_index("ix_enrollment_course", table_name="enrollment")
    for name, table, columns, condition in PARTIAL:
        op.drop_index(name, table_name=table)
        where = sa.text(condition)
        op.create_index(name, table, columns, postgresql_where=where, sqlite_where=where)
    # SQLite stores the flag as 1 and uses the index only for a WHERE that says so.
    op.create_index(
        "ix_enrollment_replan",
        "enrollment",
        ["id"],
        postgresql_where=sa.text("replan"),
        sqlite_where=sa.text("replan = 1"),
    )


def downgrade() -> None:
    op.drop_index("ix_enrollment_replan", table_name="enrollment")
    for name, table, columns, _ in PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns)
    op.create_index(
        "ix_enrollment_course", "enrollment", ["sequence_slug", "status", "next_position"]
    )
    with op.batch_alter_table("delivery", table_kwargs=NO_REUSE) as batch:
        batch.drop_column("render_failures")

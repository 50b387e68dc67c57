"""Staff help readers and see how each course is doing: the note a staff member writes when
they enroll someone by hand, the lesson a reader had reached when treatment started, and the
indexes the course dashboard reads by

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# SQLite: keep AUTOINCREMENT on the tables whose ids links and caches once named.
NO_REUSE = {"sqlite_autoincrement": True}

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("enrollment", table_kwargs=NO_REUSE) as batch:
        batch.add_column(
            sa.Column("consent_note", sa.String(500), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("treatment_after", sa.Integer(), nullable=True))
    op.create_index(
        "ix_enrollment_course", "enrollment", ["sequence_slug", "status", "next_position"]
    )
    op.create_index("ix_enrollment_course_signups", "enrollment", ["sequence_slug", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_enrollment_course_signups", table_name="enrollment")
    op.drop_index("ix_enrollment_course", table_name="enrollment")
    with op.batch_alter_table("enrollment", table_kwargs=NO_REUSE) as batch:
        batch.drop_column("treatment_after")
        batch.drop_column("consent_note")

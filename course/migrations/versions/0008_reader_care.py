"""Staff help readers and see how each course is doing: the note a staff member writes when
they enroll someone by hand, the lesson a reader had reached when treatment started, and the
indexes the course dashboard reads by; outbound webhooks (endpoints, the outbox of messages,
and how far sent lessons have been swept into it)

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
    op.create_index("ix_delivery_sent_at", "delivery", ["sent_at"])
    op.create_index("ix_enrollment_ended", "enrollment", ["ended_at"])
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("events", sa.String(300), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("created_by", sa.String(400), nullable=False),
        sa.Column("paused_at", ts, nullable=True),
        sa.Column("paused_reason", sa.String(500), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=False),
        sa.Column("last_success_at", ts, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        **NO_REUSE,
    )
    op.create_table(
        "webhook_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("about", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("next_attempt_at", ts, nullable=False),
        sa.Column("lease_until", ts, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", ts, nullable=True),
        sa.Column("gave_up_at", ts, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoint.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("endpoint_id", "event", "about", name="uq_webhook_message"),
        **NO_REUSE,
    )
    op.create_index(
        "ix_webhook_message_due", "webhook_message", ["delivered_at", "next_attempt_at"]
    )
    op.create_table(
        "webhook_sweep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("swept_to", ts, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("webhook_sweep")
    op.drop_index("ix_webhook_message_due", table_name="webhook_message")
    op.drop_table("webhook_message")
    op.drop_table("webhook_endpoint")
    op.drop_index("ix_enrollment_ended", table_name="enrollment")
    op.drop_index("ix_delivery_sent_at", table_name="delivery")
    op.drop_index("ix_enrollment_course_signups", table_name="enrollment")
    op.drop_index("ix_enrollment_course", table_name="enrollment")
    with op.batch_alter_table("enrollment", table_kwargs=NO_REUSE) as batch:
        batch.drop_column("treatment_after")
        batch.drop_column("consent_note")

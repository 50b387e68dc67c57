"""The reader in control: pace, pause, dates that matter, discretion, consent, sign-up intake,
lesson feedback

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# SQLite: keep AUTOINCREMENT on the tables whose ids links and caches once named.
NO_REUSE = {"sqlite_autoincrement": True}

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _flag(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())


def upgrade() -> None:
    # On SQLite a batch rebuilds the table from what it reflects, and AUTOINCREMENT is not
    # reflected: without table_kwargs the rebuilt table would hand out erased rows' ids again.
    with op.batch_alter_table("subscriber", table_kwargs=NO_REUSE) as batch:
        batch.add_column(_flag("discreet"))
        batch.add_column(
            sa.Column("soft_bounces", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("lesson") as batch:
        batch.add_column(sa.Column("anchor", sa.String(32), nullable=False, server_default=""))
    with op.batch_alter_table("enrollment", table_kwargs=NO_REUSE) as batch:
        batch.add_column(sa.Column("pace_days", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("conversation_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("treatment_on", sa.Date(), nullable=True))
        batch.add_column(_flag("reordered"))
        batch.add_column(_flag("replan"))
        batch.add_column(sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("consent_source", sa.String(16), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("consent_wording", sa.String(32), nullable=False, server_default="")
        )
    op.create_table(
        "signup_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_signup_request_email", "signup_request", ["email"])
    op.create_table(
        "lesson_feedback",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("helpful", sa.Integer(), nullable=False),
        sa.Column("not_helpful", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["sequence_version.id"]),
        sa.PrimaryKeyConstraint("version_id", "position"),
    )


def downgrade() -> None:
    op.drop_table("lesson_feedback")
    op.drop_index("ix_signup_request_email", table_name="signup_request")
    op.drop_table("signup_request")
    with op.batch_alter_table("enrollment", table_kwargs=NO_REUSE) as batch:
        for name in (
            "consent_wording",
            "consent_source",
            "consent_at",
            "replan",
            "reordered",
            "treatment_on",
            "conversation_on",
            "paused_until",
            "pace_days",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("lesson") as batch:
        batch.drop_column("anchor")
    with op.batch_alter_table("subscriber", table_kwargs=NO_REUSE) as batch:
        batch.drop_column("soft_bounces")
        batch.drop_column("discreet")

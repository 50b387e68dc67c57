"""Staff: accounts, one-time sign-in links, sessions, API tokens, the audit log, drafts written
in the browser with their review, the courses the sign-up page offers

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

NO_REUSE = {"sqlite_autoincrement": True}

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", sa.Integer(), nullable=False)


def _at(name: str, *, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _staff(name: str = "staff_id", *, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Integer(), sa.ForeignKey("staff_member.id"), nullable=nullable)


def _secret_table(name: str, *extra: sa.Column) -> None:  # type: ignore[type-arg]
    op.create_table(
        name,
        _id(),
        _staff(),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        _at("created_at", nullable=False),
        *extra,
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(f"ix_{name}_staff_id", name, ["staff_id"])


def upgrade() -> None:
    with op.batch_alter_table("sequence_version") as batch:
        batch.add_column(
            sa.Column("reviewed_by", sa.String(254), nullable=False, server_default="")
        )
        batch.add_column(_at("reviewed_at"))
        batch.add_column(sa.Column("review_by", sa.Date(), nullable=True))
    op.create_table(
        "staff_member",
        _id(),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _at("created_at", nullable=False),
        _at("disabled_at"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    _secret_table("staff_sign_in", _at("expires_at", nullable=False), _at("used_at"))
    _secret_table("staff_session", _at("expires_at", nullable=False), _at("ended_at"))
    _secret_table(
        "api_token",
        sa.Column("name", sa.String(80), nullable=False),
        _at("last_used_at"),
        _at("revoked_at"),
    )
    op.create_table(
        "audit_entry",
        _id(),
        _at("at", nullable=False),
        sa.Column("actor", sa.String(400), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_entry_at", "audit_entry", ["at"])
    op.create_table(
        "sequence_draft",
        _id(),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column(
            "based_on_version_id",
            sa.Integer(),
            sa.ForeignKey("sequence_version.id"),
            nullable=True,
        ),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("locale", sa.String(8), nullable=False),
        sa.Column("sender_name", sa.String(80), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _staff("author_id"),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        _at("submitted_at"),
        _staff("reviewer_id", nullable=True),
        _at("reviewed_at"),
        sa.Column("review_by", sa.Date(), nullable=True),
        sa.Column("review_comment", sa.String(), nullable=False),
        sa.Column(
            "published_version_id",
            sa.Integer(),
            sa.ForeignKey("sequence_version.id"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sequence_draft_slug", "sequence_draft", ["slug"])
    op.create_table(
        "lesson_draft",
        _id(),
        sa.Column("draft_id", sa.Integer(), sa.ForeignKey("sequence_draft.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("preheader", sa.String(300), nullable=False),
        sa.Column("heading", sa.String(120), nullable=False),
        sa.Column("delay_days", sa.Integer(), nullable=False),
        sa.Column("module", sa.String(32), nullable=False),
        sa.Column("never_skip", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("anchor", sa.String(32), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("draft_id", "position"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "offered_course",
        sa.Column("locale", sa.String(8), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("locale", "slug"),
    )


def downgrade() -> None:
    for table in (
        "offered_course",
        "lesson_draft",
        "sequence_draft",
        "audit_entry",
        "api_token",
        "staff_session",
        "staff_sign_in",
        "staff_member",
    ):
        op.drop_table(table)
    with op.batch_alter_table("sequence_version") as batch:
        for name in ("review_by", "reviewed_at", "reviewed_by"):
            batch.drop_column(name)

"""delivery.version_id: the sequence version each email is for, so a reader can move to a new
version of their course and still get its lessons

The unique constraint takes the version in: (enrollment_id, kind, version_id, position). Without
it a new version's position 5 would collide with the old version's position 5 already sent, and
the tick (INSERT ... ON CONFLICT DO NOTHING) would silently never send it.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# SQLite: keep AUTOINCREMENT on the tables whose ids links and caches once named.
NO_REUSE = {"sqlite_autoincrement": True}
# SQLite reflects 0001's unnamed unique constraint without a name; this gives it one in a batch,
# so it can be dropped.
NAMED = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_UNIQUE = "uq_delivery_per_version"
OLD_COLUMNS = ["enrollment_id", "kind", "position"]


def _old_unique() -> str:
    """The name the database gave 0001's unnamed constraint (PostgreSQL), or NAMED gives it."""
    if op.get_bind().dialect.name == "sqlite":
        return "uq_delivery_enrollment_id_kind_position"
    return "delivery_enrollment_id_kind_position_key"


def upgrade() -> None:
    with op.batch_alter_table("delivery", table_kwargs=NO_REUSE) as batch:
        batch.add_column(sa.Column("version_id", sa.Integer(), nullable=True))
    # Until now every email was for the version its enrollment is on.
    op.execute(
        "UPDATE delivery SET version_id = "
        "(SELECT enrollment.version_id FROM enrollment WHERE enrollment.id = delivery.enrollment_id)"
    )
    old_unique = _old_unique()
    with op.batch_alter_table("delivery", table_kwargs=NO_REUSE, naming_convention=NAMED) as batch:
        batch.alter_column("version_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(
            "fk_delivery_version_id", "sequence_version", ["version_id"], ["id"]
        )
        batch.drop_constraint(old_unique, type_="unique")
        batch.create_unique_constraint(
            NEW_UNIQUE, ["enrollment_id", "kind", "version_id", "position"]
        )


def downgrade() -> None:
    # The old schema holds one row per (enrollment, kind, position): where a reader moved
    # between versions, keep the row of the version they are on, else the newest.
    op.execute(
        "DELETE FROM delivery WHERE id IN (SELECT id FROM ("
        " SELECT d.id, ROW_NUMBER() OVER ("
        "  PARTITION BY d.enrollment_id, d.kind, d.position"
        "  ORDER BY CASE WHEN d.version_id = e.version_id THEN 0 ELSE 1 END, d.id DESC"
        " ) AS n FROM delivery d JOIN enrollment e ON e.id = d.enrollment_id"
        ") AS ranked WHERE n > 1)"
    )
    old_unique = _old_unique()
    with op.batch_alter_table("delivery", table_kwargs=NO_REUSE, naming_convention=NAMED) as batch:
        batch.drop_constraint(NEW_UNIQUE, type_="unique")
        batch.drop_constraint("fk_delivery_version_id", type_="foreignkey")
        batch.create_unique_constraint(old_unique, OLD_COLUMNS)
        batch.drop_column("version_id")

"""Drop two indexes that a unique constraint already provides

Lookups by enrollment_id (delivery) and by subscriber_id (enrollment) are served by the
leading column of the unique constraints (enrollment_id, kind, position) and
(subscriber_id, sequence_slug). The extra indexes only cost a write on every delivery row
created and every lesson recorded as sent.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_delivery_enrollment_id", table_name="delivery")
    op.drop_index("ix_enrollment_subscriber_id", table_name="enrollment")


def downgrade() -> None:
    op.create_index("ix_enrollment_subscriber_id", "enrollment", ["subscriber_id"])
    op.create_index("ix_delivery_enrollment_id", "delivery", ["enrollment_id"])

"""enrollment.started_treatment_at: the reader told us their loved one has started treatment

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("enrollment") as batch:
        batch.add_column(
            sa.Column("started_treatment_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("enrollment") as batch:
        batch.drop_column("started_treatment_at")

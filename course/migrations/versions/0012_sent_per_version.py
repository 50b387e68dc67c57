"""A course's lessons sent last, per version, for the dashboard's delivery lag.

The dashboard read its sample of recent lessons by walking every email newest first until it
had found enough of the course's: for a small course beside a big one, with fewer lessons sent
than the sample, that was every email in the database on every view.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME, TABLE = "ix_delivery_sent_per_version", "delivery"


def upgrade() -> None:
    where = sa.text("sent_at IS NOT NULL")
    op.create_index(NAME, TABLE, ["version_id", "id"], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    op.drop_index(NAME, table_name=TABLE)

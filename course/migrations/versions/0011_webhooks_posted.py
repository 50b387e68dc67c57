"""Posted webhook messages by when they were posted, so the hourly task can forget those older
than COURSE_WEBHOOK_KEEP_DAYS without reading the outbox.

A message was kept for ever once posted, one per lesson sent per endpoint: at a million readers
the outbox grew by about half a million rows a day, and the staff Webhooks page counted them all.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME, TABLE = "ix_webhook_message_posted", "webhook_message"


def upgrade() -> None:
    where = sa.text("delivered_at IS NOT NULL")
    op.create_index(NAME, TABLE, ["delivered_at"], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    op.drop_index(NAME, table_name=TABLE)

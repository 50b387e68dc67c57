"""The webhook outbox finds the messages still to post without walking the ones posted: its
due index holds only those, in the order they are posted (by id: a receiver gets events in
the order they happened).

A message is kept once posted, one per lesson per endpoint. With 2.2 million of them and a
backlog of a few thousand, PostgreSQL took each run's ten messages by walking the primary key
from the oldest: 335-450 ms a claim, every five seconds.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME, TABLE = "ix_webhook_message_due", "webhook_message"
STILL_TO_POST = "delivered_at IS NULL AND gave_up_at IS NULL"


def upgrade() -> None:
    op.drop_index(NAME, table_name=TABLE)
    where = sa.text(STILL_TO_POST)
    op.create_index(NAME, TABLE, ["id"], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    op.drop_index(NAME, table_name=TABLE)
    op.create_index(NAME, TABLE, ["delivered_at", "next_attempt_at"])

"""The webhook outbox's due index by endpoint, so each endpoint's messages still to post are
found apart: with one index of every endpoint's, the claim walked past a paused endpoint's
backlog (a receiver down over a weekend: a million lessons) on every run, every five seconds.

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

NAME, TABLE = "ix_webhook_message_due", "webhook_message"
STILL_TO_POST = "delivered_at IS NULL AND gave_up_at IS NULL"


def _due_index(columns: list[str]) -> None:
    op.drop_index(NAME, table_name=TABLE)
    where = sa.text(STILL_TO_POST)
    op.create_index(NAME, TABLE, columns, postgresql_where=where, sqlite_where=where)


def upgrade() -> None:
    _due_index(["endpoint_id", "id"])


def downgrade() -> None:
    _due_index(["id"])

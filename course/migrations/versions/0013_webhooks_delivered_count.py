"""Each webhook endpoint counts its posts that went through, as they go: the messages are now
deleted after COURSE_WEBHOOK_KEEP_DAYS, and counting them on every view of the Webhooks page
read the whole outbox. The count starts from the posted messages still kept.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# On SQLite adding a column is a plain ALTER TABLE; dropping one (downgrade) rebuilds the table
# from what it reflects, which does not carry AUTOINCREMENT: said again. (The rebuilt table's
# counter then starts from the highest id left, as with every downgrade that drops a column.)
NO_REUSE = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoint", table_kwargs=NO_REUSE) as table:
        table.add_column(sa.Column("delivered", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE webhook_endpoint SET delivered = (SELECT count(*) FROM webhook_message AS m"
        " WHERE m.endpoint_id = webhook_endpoint.id AND m.delivered_at IS NOT NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoint", table_kwargs=NO_REUSE) as table:
        table.drop_column("delivered")

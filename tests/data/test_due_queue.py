"""The due queue (enrollment_due) across an upgrade: readers due under the previous release get
their lesson after it, also after a downgrade and an upgrade again; and the claim past readers
held by another transaction.

Every other test checks the queue against the readers when it ends (tests/conftest.py): these
check the migration that builds it from a database in use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import bindparam, select, text
from sqlmodel import col

from course.authoring import load_sequence, publish
from course.clock import ManualClock
from course.db import alembic_config, engine_for, session_scope, upgrade
from course.models import Delivery, DeliveryKind, Enrollment, Subscriber
from course.sending import tick
from course.settings import Settings
from tests.support import FIXTURES, active_readers, due_queue_drift, postgres_database

BEFORE = "0013"


@pytest.fixture
def private_url(db_url: str, tmp_path) -> Iterator[str]:
    """An empty database of the same kind as `db_url`, this test's alone (it migrates it down
    and up, which the shared one must never see)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    with postgres_database(f"homeward_test_queue_{os.getpid()}") as url:
        yield url


def _claimed_readers(url: str, settings: Settings, clock: ManualClock, seen: set[int]) -> list[str]:
    """The addresses whose lesson the tick claims now (not those it hands out again: nothing
    sends them here, so their leases run out)."""
    ids = {i for batch in tick(engine_for(url), settings, clock) for i in batch} - seen
    seen |= ids
    with engine_for(url).connect() as conn:
        return list(
            conn.execute(
                select(col(Subscriber.email))
                .join(Enrollment, col(Enrollment.subscriber_id) == col(Subscriber.id))
                .join(Delivery, col(Delivery.enrollment_id) == col(Enrollment.id))
                .where(col(Delivery.id).in_(ids), col(Delivery.kind) == DeliveryKind.LESSON)
                .order_by(col(Subscriber.email))
            ).scalars()
        )


def test_readers_due_before_the_upgrade_get_their_lesson_after_it(private_url, settings, clock):
    settings = settings.model_copy(update={"database_url": private_url})
    upgrade(private_url)
    with session_scope(engine_for(private_url)) as session:
        publish(session, load_sequence(FIXTURES / "mini-course"), clock)
    first, later, gone = active_readers(settings, clock, 3)

    # The previous release's schema, and what it did to readers: no queue to keep.
    command.downgrade(alembic_config(private_url), BEFORE)
    engine_for(private_url).dispose()
    tomorrow = clock.now() + timedelta(days=1)
    with engine_for(private_url).begin() as conn:
        conn.execute(
            text(
                "UPDATE enrollment SET next_due_at = :at WHERE subscriber_id ="
                " (SELECT id FROM subscriber WHERE email = :email)"
            ),
            {"at": tomorrow, "email": later},
        )
        conn.execute(
            text(
                "UPDATE enrollment SET status = 'unsubscribed', next_due_at = NULL"
                " WHERE subscriber_id = (SELECT id FROM subscriber WHERE email = :email)"
            ),
            {"email": gone},
        )
    engine_for(private_url).dispose()

    upgrade(private_url)
    assert due_queue_drift(private_url) == []
    seen: set[int] = set()
    clock.advance(minutes=1)
    assert _claimed_readers(private_url, settings, clock, seen) == [first]
    clock.advance(days=1)
    assert _claimed_readers(private_url, settings, clock, seen) == [later]
    # Nothing left for the one who left, and the queue is still kept as readers move on.
    clock.advance(days=30)
    assert _claimed_readers(private_url, settings, clock, seen) == []
    assert due_queue_drift(private_url) == []


# Another transaction holds the oldest due readers: a reader saving a preference locks their
# row; a publish moving every reader of a course writes each of them.
SAVING = "SELECT e.id FROM enrollment e JOIN subscriber s ON s.id = e.subscriber_id" + (
    " WHERE s.email IN :emails FOR UPDATE OF e"
)
PUBLISHING = "UPDATE enrollment SET pace_days = pace_days WHERE subscriber_id IN" + (
    " (SELECT id FROM subscriber WHERE email IN :emails)"
)


@pytest.mark.parametrize(
    ("holding", "held"),
    [(SAVING, 2), (PUBLISHING, 4)],
    ids=["a preference being saved", "a publish moving readers"],
)
def test_a_claim_takes_the_next_due_readers_past_those_held_elsewhere(
    settings, clock, mini_course, holding, held
):
    """The claim skips readers another transaction holds and takes the next due ones, as many
    as its batch, instead of coming back with nothing while the oldest are held (and, with
    them, the beat's every tick)."""
    engine = engine_for(settings.database_url)
    if engine.dialect.name != "postgresql":
        pytest.skip(
            "SQLite locks the whole database for a write, never single rows: there is nothing"
            " held to skip past"
        )
    readers = active_readers(settings, clock, held + 2)
    with engine.begin() as conn:
        # Due an hour, two hours ... apart, the first the oldest.
        for hours, email in enumerate(readers):
            conn.execute(
                text(
                    "UPDATE enrollment SET next_due_at = :at WHERE subscriber_id ="
                    " (SELECT id FROM subscriber WHERE email = :email)"
                ),
                {"at": clock.now() - timedelta(hours=len(readers) - hours), "email": email},
            )
    settings.claim_batch = 2
    holder = engine.connect()
    try:
        holder.execute(
            text(holding).bindparams(bindparam("emails", expanding=True)),
            {"emails": readers[:held]},
        )
        seen: set[int] = set()
        assert _claimed_readers(settings.database_url, settings, clock, seen) == readers[held:]
        holder.rollback()
        assert _claimed_readers(settings.database_url, settings, clock, seen) == readers[:held]
    finally:
        holder.close()

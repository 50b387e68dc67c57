"""The tick's UPDATEs, and those that name their emails, find their rows by primary key (or by
reader) whatever PostgreSQL's statistics say.

With a thousand rows due out of ten or a hundred thousand, the planner once answered the claim's
`UPDATE enrollment ... WHERE id IN (SELECT ... LIMIT 1000 FOR UPDATE SKIP LOCKED)` by hashing
the thousand ids and reading every enrollment; the lease renewal of lost deliveries had the same
shape. Each test plans the statement the tick really sends, against a table whose fresh
statistics say many rows are due: the ones that tempted the planner into the full scan.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlmodel import Session

from course.clock import ManualClock
from course.db import engine_for, upgrade
from course.models import EnrollmentStatus
from course.outbound import forget_posted, post_due
from course.readers.preferences import replan_waiting
from course.sending import tick
from course.sending.dispatch import release_expired
from course.sending.lease import renew
from course.settings import Settings
from course.staff.webhooks import everything
from course.suppression import stop_everything
from tests.support import executed, plan_nodes

ROWS = 20_000


def _sent_by(engine: Engine, action: Callable[[], object], marker: str) -> Any:
    """The statement (and its parameters) `action` sends whose text holds `marker`."""
    [found] = [(s, p) for s, p in executed(engine, action) if marker in s]
    return found


def _sent_by_tick(engine: Engine, settings: Settings, clock: ManualClock, marker: str) -> Any:
    """The statement (and its parameters) the tick sends whose text holds `marker`."""
    return _sent_by(engine, lambda: tick(engine, settings, clock), marker)


def _plan(conn: Connection, statement: str, parameters: Any) -> list[dict[str, Any]]:
    [[raw]] = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).all()
    document = json.loads(raw) if isinstance(raw, str) else raw
    return list(plan_nodes(document[0]["Plan"]))


def _update_scans(nodes: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    """What the UPDATE of `table` reads its target rows with (its subquery reads the same table,
    under another alias)."""
    [target] = [n for n in nodes if n["Node Type"] == "ModifyTable" and n["Operation"] == "Update"]
    assert target["Relation Name"] == table
    below = [n for child in target.get("Plans", []) for n in plan_nodes(child)]
    return [n for n in below if n.get("Relation Name") == table and n["Alias"] == target["Alias"]]


_ANALYZE = (
    "ANALYZE subscriber, enrollment, enrollment_due, delivery, webhook_message, signup_request"
)


def _planned_under_tempting_statistics(
    engine: Engine, fill: list[str], statement: str, parameters: Any, *, since: str = ""
) -> list[dict[str, Any]]:
    """The plan after `fill`, a fresh ANALYZE and then `since` (what the statistics have not
    seen), all in a transaction rolled back after: the rows and the statistics go with it, and
    the next test meets neither."""
    with engine.connect() as conn:
        try:
            for step in fill:
                conn.execute(text(step), {"rows": ROWS})
            conn.exec_driver_sql(_ANALYZE)
            if since:
                conn.execute(text(since))
            return _plan(conn, statement, parameters)
        finally:
            conn.rollback()
            # ANALYZE wrote the row counts in place (they outlive the rollback): count again.
            conn.exec_driver_sql(_ANALYZE)
            conn.commit()


READERS = """
INSERT INTO subscriber (email, first_name, time_zone, send_hour, relationship, substance,
                        created_at, discreet, soft_bounces)
SELECT 'plan' || n || '@example.org', '', 'UTC', 9, 'parent', 'opioids',
       TIMESTAMPTZ '2026-01-01', false, 0
FROM generate_series(1, :rows) AS n
"""

# Every reader active, and {due} of each four of their lessons already due when the tick runs.
ENROLLMENTS = """
INSERT INTO enrollment (link_key, subscriber_id, sequence_slug, version_id, status,
                        next_position, next_due_at, created_at, reordered, replan,
                        consent_source, consent_wording, consent_note)
SELECT md5(s.id::text), s.id, v.slug, v.id, 'active', 1,
       CASE WHEN s.id % 4 < {due} THEN TIMESTAMPTZ '2026-01-02' ELSE TIMESTAMPTZ '2027-01-01' END,
       TIMESTAMPTZ '2026-01-01', false, false, 'form', 'abc', ''
FROM subscriber AS s, (SELECT id, slug FROM sequence_version LIMIT 1) AS v
"""


@pytest.fixture
def postgres(settings: Settings) -> Engine:
    engine = engine_for(settings.database_url)
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL query plan: SQLite plans these statements its own way")
    return engine


@pytest.mark.parametrize("due", [1, 4], ids=["a quarter due", "all due"])
def test_the_claim_finds_the_enrollments_it_updates_by_primary_key(
    postgres, settings, clock, mini_course, due
):
    statement, parameters = _sent_by_tick(postgres, settings, clock, "UPDATE enrollment")
    nodes = _planned_under_tempting_statistics(
        postgres, [READERS, ENROLLMENTS.format(due=due)], statement, parameters
    )
    scans = [
        f"{n['Node Type']} on {n.get('Relation Name')}" for n in nodes if "Scan" in n["Node Type"]
    ]
    assert not [
        n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "enrollment"
    ], scans
    assert [n.get("Index Name") for n in _update_scans(nodes, "enrollment")] == [
        "enrollment_pkey"
    ], scans
    # The oldest due are read from the front of the due queue's index, not the whole queue.
    queue = [n for n in nodes if n.get("Relation Name") == "enrollment_due"]
    assert [(n["Node Type"], n.get("Index Name")) for n in queue] == [
        ("Index Scan", "ix_enrollment_due_at")
    ], scans


# Every {every}th delivery pending, its lease until {lease}; the others sent (no lease).
DELIVERIES = """
INSERT INTO delivery (enrollment_id, kind, version_id, position, message_id, status,
                      attempts, lease_until, created_at)
SELECT e.id, 'lesson', e.version_id, 1, '<plan.' || e.id || '@homeward.test>',
       CASE WHEN e.id % {every} = 0 THEN 'pending' ELSE 'sent' END, 1,
       CASE WHEN e.id % {every} = 0 THEN TIMESTAMPTZ '{lease}' END, TIMESTAMPTZ '2026-01-01'
FROM enrollment AS e
"""


@pytest.mark.parametrize(
    ("every", "lease"),
    # Half lost, their lease run out: more than the renewal's limit. Or a tenth in flight,
    # none lost: the statistics then count the sent rows as "no lease", and the planner read
    # the whole table for the first ten thousand of them, finding none.
    [(2, "2026-01-02"), (10, "2099-01-01")],
    ids=["half lost", "a tenth in flight"],
)
def test_lost_deliveries_are_leased_again_by_primary_key(
    postgres, settings, clock, mini_course, every, lease
):
    # The tick re-leases up to ten batches at once: a limit far below the rows that match, as
    # with ten million emails.
    settings.claim_batch = 10
    statement, parameters = _sent_by(
        postgres,
        lambda: release_expired(postgres, settings, clock, limit=settings.claim_batch * 10),
        "UPDATE delivery",
    )
    deliveries = DELIVERIES.format(every=every, lease=lease)
    nodes = _planned_under_tempting_statistics(
        postgres, [READERS, ENROLLMENTS.format(due=0), deliveries], statement, parameters
    )
    scans = [
        f"{n['Node Type']} on {n.get('Relation Name')}" for n in nodes if "Scan" in n["Node Type"]
    ]
    assert not [
        n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "delivery"
    ], scans
    assert [n.get("Index Name") for n in _update_scans(nodes, "delivery")] == ["delivery_pkey"], (
        scans
    )


def test_readers_waiting_to_be_planned_again_are_found_without_reading_every_reader(
    settings, clock, mini_course
):
    """Every tick looks for readers to plan again, among the lessons in flight, which the due
    index leaves out: without an index of its own the look is a full scan of enrollment, about
    100 ms a tick with a million readers."""
    engine = engine_for(settings.database_url)
    statement, parameters = _sent_by(
        engine,
        lambda: replan_waiting(engine, settings, clock, limit=settings.claim_batch),
        "enrollment.replan",
    )
    if engine.dialect.name == "postgresql":
        nodes = _planned_under_tempting_statistics(
            engine, [READERS, ENROLLMENTS.format(due=0)], statement, parameters
        )
        reads = [(n["Node Type"], n.get("Index Name")) for n in nodes if n.get("Relation Name")]
        assert ("Index Scan", "ix_enrollment_replan") in reads, reads
        assert not [
            n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] == "enrollment"
        ], reads
    else:
        with engine.connect() as conn:
            plan = [
                row[-1]
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            ]
        assert any("enrollment USING INDEX ix_enrollment_replan" in step for step in plan), plan


def test_the_tick_asks_what_waits_without_reading_a_table_whole(
    postgres, settings, clock, mini_course
):
    """Every tick first asks whether anything was lost, signed up or left to plan again, in
    one statement. The statistics last saw half the emails lost, every reader to be planned
    again and a burst of sign-ups; all were dealt with since. Reading a table to find the first
    such row would then read all of it, on every tick: each must be a look into an index."""
    statement, parameters = _sent_by_tick(postgres, settings, clock, "signup_request")
    waiting = """
    UPDATE enrollment SET replan = true;
    INSERT INTO signup_request (created_at, email, fields)
    SELECT TIMESTAMPTZ '2026-01-01', 'burst' || n || '@example.org', '{}'
    FROM generate_series(1, :rows) AS n
    """
    nodes = _planned_under_tempting_statistics(
        postgres,
        [READERS, ENROLLMENTS.format(due=0), DELIVERIES.format(every=2, lease="2026-01-02")]
        + waiting.split(";"),
        statement,
        parameters,
        since="UPDATE delivery SET status = 'sent', lease_until = NULL;"
        " UPDATE enrollment SET replan = false; DELETE FROM signup_request",
    )
    reads = [(n["Node Type"], n.get("Relation Name")) for n in nodes if n.get("Relation Name")]
    assert {r for r in reads if r[0] == "Seq Scan"} == set(), reads
    assert {table for _, table in reads} == {"delivery", "signup_request", "enrollment"}, reads


def test_on_sqlite_the_tick_asks_what_waits_without_taking_the_write_lock(clock, tmp_path):
    """Every sending worker's "sent" write waits for SQLite's one write lock: a tick with
    nothing lost, signed up or to plan again reads, and begins no transaction that writes.
    (PostgreSQL asks in one statement, in autocommit: there is no lock to take.)"""
    url = f"sqlite:///{tmp_path / 'tick.db'}"
    upgrade(url)
    settings = Settings(database_url=url)
    engine = engine_for(url)
    sent = [s for s, _ in executed(engine, lambda: tick(engine, settings, clock))]
    asked = next(i for i, s in enumerate(sent) if "signup_request" in s)
    assert sent[asked - 1] == "BEGIN", sent[: asked + 1]
    assert "BEGIN IMMEDIATE" not in sent[:asked], sent[: asked + 1]


def _renew(engine: Engine, clock: ManualClock) -> None:
    renew(engine, ids=[1, 2, 3], owner="worker-1", clock=clock, seconds=60)


def _unsubscribe(engine: Engine, clock: ManualClock) -> None:
    with engine.begin() as conn:
        stop_everything(
            conn, subscriber_id=1, now=clock.now(), status=EnrollmentStatus.UNSUBSCRIBED
        )


@pytest.mark.parametrize(
    "action", [_renew, _unsubscribe], ids=["a lease renewed", "a reader unsubscribed"]
)
def test_emails_named_by_id_or_reader_are_not_looked_for_among_every_pending_one(
    postgres, settings, clock, mini_course, action
):
    """The statistics last saw every email sent; a backlog of 10,000 has arrived since. The
    statements that name their emails must find them by those names, not by walking the
    backlog through the pending index (0.1-0.5 s each at 200,000 pending)."""
    statement, parameters = _sent_by(postgres, lambda: action(postgres, clock), "UPDATE delivery")
    nodes = _planned_under_tempting_statistics(
        postgres,
        [READERS, ENROLLMENTS.format(due=0), DELIVERIES.format(every=ROWS * 2, lease="2099-01-01")],
        statement,
        parameters,
        since="UPDATE delivery SET status = 'pending' WHERE enrollment_id % 2 = 0",
    )
    reads = [(n["Node Type"], n.get("Index Name")) for n in nodes if n.get("Relation Name")]
    assert not [r for r in reads if r[1] == "ix_delivery_pending" or r[0] == "Seq Scan"], reads


ENDPOINT = """
INSERT INTO webhook_endpoint (url, events, secret, created_at, created_by, paused_at,
                              paused_reason, failures, last_error)
VALUES ('https://receiver.example.org/{name}', ',lesson.sent,', 'secret',
        TIMESTAMPTZ '2026-01-01', '', {paused}, '', 0, '')
"""

# For each endpoint, :rows messages posted and a tenth as many waiting behind them.
POSTED = """
INSERT INTO webhook_message (endpoint_id, event, about, payload, created_at, next_attempt_at,
                             attempts, delivered_at, last_error)
SELECT e.id, 'lesson.sent', 'delivery:' || n, '{}', TIMESTAMPTZ '2026-01-01',
       TIMESTAMPTZ '2026-01-01', 1, CASE WHEN n <= :rows THEN TIMESTAMPTZ '2026-01-01' END, ''
FROM generate_series(1, :rows + :rows / 10) AS n, webhook_endpoint AS e
"""


def _endpoint(engine: Engine, name: str, *, paused: bool = False) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                ENDPOINT.format(name=name, paused="TIMESTAMPTZ '2026-01-02'" if paused else "NULL")
            )
        )


def test_webhook_messages_still_to_post_are_found_without_walking_the_posted_ones(postgres, clock):
    """One message a lesson an endpoint, kept once posted: with 20,000 posted and a backlog of
    2,000 behind them, the claim of each run's ten walked the primary key past every posted
    one (335-450 ms a claim at 2.2 million, every five seconds)."""
    _endpoint(postgres, "crm")
    statement, parameters = _sent_by(
        postgres, lambda: post_due(postgres, clock), "FROM webhook_message"
    )
    nodes = _planned_under_tempting_statistics(postgres, [POSTED], statement, parameters)
    reads = [(n["Node Type"], n.get("Index Name")) for n in nodes if n.get("Relation Name")]
    assert ("Index Scan", "ix_webhook_message_due") in reads, reads
    assert ("Index Scan", "webhook_message_pkey") not in reads, reads


def test_a_paused_endpoints_backlog_is_not_walked_to_find_another_endpoints_messages(
    postgres, clock
):
    """A receiver down over a weekend is paused with a million lessons waiting. Looked for
    among every endpoint's messages, the working endpoint's few were found by walking past
    that backlog on every run, every five seconds; each endpoint's are now found apart."""
    _endpoint(postgres, "paused", paused=True)
    _endpoint(postgres, "working")
    statement, parameters = _sent_by(
        postgres, lambda: post_due(postgres, clock), "FROM webhook_message"
    )
    nodes = _planned_under_tempting_statistics(postgres, [POSTED], statement, parameters)
    [scan] = [n for n in nodes if n.get("Relation Name") == "webhook_message"]
    assert scan.get("Index Name") == "ix_webhook_message_due", scan
    assert "endpoint_id" in scan.get("Index Cond", ""), scan


def test_posted_webhook_messages_are_forgotten_by_when_without_reading_the_outbox(postgres, clock):
    """The hourly task deletes what was posted more than COURSE_WEBHOOK_KEEP_DAYS ago, a
    thousand at a time: found through the posted index, not by reading every message."""
    statement, parameters = _sent_by(
        postgres, lambda: forget_posted(postgres, clock, days=30), "FROM webhook_message"
    )
    _endpoint(postgres, "crm")
    nodes = _planned_under_tempting_statistics(postgres, [POSTED], statement, parameters)
    reads = [(n["Node Type"], n.get("Index Name")) for n in nodes if n.get("Relation Name")]
    assert reads and all(index == "ix_webhook_message_posted" for _, index in reads), reads


def test_the_webhooks_page_counts_what_waits_without_reading_what_was_posted(postgres):
    """Every view of the Webhooks page counted every message per endpoint: a month of posted
    ones is millions. What waits is counted in the due index; what went through, by the
    endpoint as it goes."""
    _endpoint(postgres, "crm")

    def view() -> None:
        with Session(postgres) as session:
            everything(session)

    statement, parameters = _sent_by(postgres, view, "FROM webhook_message")
    # A month of posts kept and a few hundred waiting, as a working endpoint has.
    month = POSTED.replace(":rows + :rows / 10", ":rows + :rows / 100")
    nodes = _planned_under_tempting_statistics(postgres, [month], statement, parameters)
    reads = [n for n in nodes if n["Node Type"] == "Seq Scan" or "Index Name" in n]
    assert [n.get("Index Name") for n in reads] == ["ix_webhook_message_due"], reads

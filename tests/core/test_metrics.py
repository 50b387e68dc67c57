"""Prometheus metrics: the counters the send loop feeds, the backlog measured against a real
database, the web app's /metrics behind its token, a worker's own port, and several processes
added up through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text
from sqlmodel import col

from course import backlog, metrics
from course.cli.embedded_redis import free_port
from course.db import engine_for
from course.models import Delivery, DeliveryKind, DeliveryStatus, Enrollment, EnrollmentStatus
from course.settings import PROJECT_ROOT
from course.web import create_app
from tests.support import active_readers

TOKEN = "metrics-test-token-0123456789"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


# --- what the send loop records ----------------------------------------------------------------


def test_the_kinds_are_the_kinds_of_email():
    assert set(metrics.KINDS) == {k.value for k in DeliveryKind}


def test_each_recording_moves_its_metric():
    before = {
        name: sample(name, kind="lesson")
        for name in (
            "homeward_emails_sent_total",
            "homeward_emails_failed_total",
            "homeward_emails_retried_total",
            "homeward_emails_bounced_total",
        )
    }
    metrics.sent("lesson", 3)
    metrics.failed("lesson")
    metrics.retried("lesson", 2)
    metrics.bounced("lesson")
    assert (
        sample("homeward_emails_sent_total", kind="lesson")
        == before["homeward_emails_sent_total"] + 3
    )
    assert (
        sample("homeward_emails_failed_total", kind="lesson")
        == before["homeward_emails_failed_total"] + 1
    )
    assert (
        sample("homeward_emails_retried_total", kind="lesson")
        == before["homeward_emails_retried_total"] + 2
    )
    assert (
        sample("homeward_emails_bounced_total", kind="lesson")
        == before["homeward_emails_bounced_total"] + 1
    )

    other = sample("homeward_emails_sent_total", kind="other")
    metrics.sent("no-such-kind")
    assert sample("homeward_emails_sent_total", kind="other") == other + 1
    assert REGISTRY.get_sample_value("homeward_emails_sent_total", {"kind": "no-such-kind"}) is None

    waits, waited = (
        sample("homeward_rate_limit_waits_total"),
        sample("homeward_rate_limit_wait_seconds_total"),
    )
    metrics.rate_wait(0.25)
    metrics.rate_wait(0.5)
    assert sample("homeward_rate_limit_waits_total") == waits + 2
    assert sample("homeward_rate_limit_wait_seconds_total") == pytest.approx(waited + 0.75)

    open_now = sample("homeward_smtp_connections_open")
    metrics.connection_opened()
    metrics.connection_opened()
    metrics.connection_closed()
    assert sample("homeward_smtp_connections_open") == open_now + 1
    metrics.connection_closed()

    metrics.breaker(True)
    assert sample("homeward_relay_paused") == 1
    metrics.breaker(False)
    assert sample("homeward_relay_paused") == 0


def test_lag_lands_in_buckets_from_seconds_to_hours():
    count = sample("homeward_delivery_lag_seconds_count")
    under_a_minute = sample("homeward_delivery_lag_seconds_bucket", le="60.0")
    under_two_hours = sample("homeward_delivery_lag_seconds_bucket", le="7200.0")
    metrics.lag(12)
    metrics.lag(3 * 3600)
    metrics.lag(-2)  # clocks a little apart: on time
    assert sample("homeward_delivery_lag_seconds_count") == count + 3
    assert sample("homeward_delivery_lag_seconds_bucket", le="60.0") == under_a_minute + 2
    assert sample("homeward_delivery_lag_seconds_bucket", le="7200.0") == under_two_hours + 2


# --- the backlog, in a real database -------------------------------------------------------------


def _expected(settings, now):
    engine = engine_for(settings.database_url)
    with engine.connect() as conn:
        due = conn.scalar(
            select(func.count())
            .select_from(Enrollment)
            .where(
                col(Enrollment.status) == EnrollmentStatus.ACTIVE,
                col(Enrollment.next_due_at) <= now,
            )
        )
        pending = conn.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(col(Delivery.status) == DeliveryStatus.PENDING)
        )
    return due, pending


def test_the_backlog_counts_due_lessons_and_pending_emails(settings, clock, mini_course):
    engine = engine_for(settings.database_url)
    assert backlog.measure(engine, clock.now()) == metrics.Backlog(0, 0, None)

    active_readers(settings, clock, 3)
    clock.advance(days=2)
    now = clock.now()
    found = backlog.measure(engine, now)
    due, pending = _expected(settings, now)
    assert (found.due, found.pending) == (due, pending)
    assert found.due == 3 and found.pending == 3  # three first lessons; three confirmations
    assert found.oldest_due is not None and found.oldest_due <= now
    assert found.oldest_due.utcoffset() == timedelta(0)

    # Nothing is due yet an hour before the first of them.
    before = backlog.measure(engine, found.oldest_due - timedelta(hours=1))
    assert (before.due, before.oldest_due) == (0, None)


def test_the_backlog_query_reads_only_indexes(settings, clock):
    engine = engine_for(settings.database_url)
    statement = backlog.backlog_statement(clock.now())
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " ".join(
                str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            )
            assert "SCAN enrollment" not in plan and "SCAN delivery" not in plan, plan
        else:
            # An empty table is scanned whatever the indexes; forbid that to see which index
            # the statement can use (at scale the planner chooses it for the same reason).
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(row[0] for row in conn.execute(text(f"EXPLAIN {compiled}")))
            conn.exec_driver_sql("RESET enable_seqscan")
        assert "ix_enrollment_due_at" in plan, plan
        assert "ix_delivery_pending" in plan, plan


def test_the_collector_measures_at_most_once_per_ttl_and_survives_a_failure(clock, caplog):
    calls = []

    def measure():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database away")
        return metrics.Backlog(due=5, pending=2, oldest_due=clock.now() - timedelta(minutes=3))

    collector = metrics.BacklogCollector(measure, clock.now, ttl_seconds=60)
    first = {s.name + str(s.labels): s.value for f in collector.collect() for s in f.samples}
    assert first == {
        "homeward_due_backlog{'state': 'due'}": 5,
        "homeward_due_backlog{'state': 'pending'}": 2,
        "homeward_oldest_due_seconds{}": 180,
    }
    list(collector.collect())
    assert len(calls) == 1, "a second scrape within the TTL reads the cached figure"

    failing = metrics.BacklogCollector(measure, clock.now, ttl_seconds=0)
    assert list(failing.collect()) == [], "the failed measurement is left out"
    assert "could not be measured" in caplog.text


# --- the web app's /metrics ----------------------------------------------------------------------


def _app(settings, clock, token: str):
    app = create_app(
        settings.model_copy(update={"metrics_token": token}),
        clock,
        enqueue=lambda _: None,
        kick=lambda: None,
    )
    return TestClient(app, raise_server_exceptions=False)


def test_metrics_are_off_without_a_token(settings, clock):
    with _app(settings, clock, "") as client:
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 404
        unknown = client.get("/no-such-page")
        assert answer.text == unknown.text.replace("/no-such-page", "/metrics")


def test_metrics_answer_only_the_scraper_with_the_token(settings, clock, mini_course):
    active_readers(settings, clock, 2)
    clock.advance(days=2)
    metrics.sent("confirm")
    with _app(settings, clock, TOKEN) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        basic = client.get("/metrics", auth=("prometheus", TOKEN))
        assert basic.status_code == 401

        answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        found = scraped(answer.text)
        assert found[("homeward_due_backlog", (("state", "due"),))] == 2
        assert found[("homeward_due_backlog", (("state", "pending"),))] == 2
        assert found[("homeward_oldest_due_seconds", ())] > 0
        assert found[("homeward_emails_sent_total", (("kind", "confirm"),))] >= 1
        assert ("homeward_delivery_lag_seconds_bucket", (("le", "3600.0"),)) in found

        # Prometheus asks for OpenMetrics when it can: it gets it.
        open_metrics = client.get(
            "/metrics",
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Accept": "application/openmetrics-text; version=1.0.0",
            },
        )
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert open_metrics.text.rstrip().endswith("# EOF")
        assert "/metrics" not in client.get("/api/openapi.json").text


# --- a worker's port ---------------------------------------------------------------------------


def test_a_worker_serves_its_metrics_on_its_own_port():
    assert metrics.serve_worker_metrics(0) is None, "0 is off"
    port = free_port()
    server = metrics.serve_worker_metrics(port)
    assert server is not None
    try:
        metrics.sent("lesson")
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert answer.status_code == 200
        found = scraped(answer.text)
        assert found[("homeward_emails_sent_total", (("kind", "lesson"),))] == sample(
            "homeward_emails_sent_total", kind="lesson"
        )
        assert ("homeward_smtp_connections_open", ()) in found
    finally:
        server.shutdown()
        server.server_close()


# --- several processes --------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os
    from course import metrics
    metrics.sent("lesson", 2)
    metrics.connection_opened()
    print(os.getpid())
    """
)
SCRAPE = textwrap.dedent(
    """
    import sys
    from course import metrics
    body, _ = metrics.exposition(None)
    sys.stdout.write(body.decode())
    """
)


def test_processes_add_up_through_the_multiprocess_folder(tmp_path, monkeypatch):
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path)}

    def run(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = int(run(CHILD))
    run(CHILD)
    found = scraped(run(SCRAPE))
    assert found[("homeward_emails_sent_total", (("kind", "lesson"),))] == 4
    # Both children have ended, but only what says so forgets their open connections.
    assert found[("homeward_smtp_connections_open", ())] == 2
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    metrics.process_exited(first)
    found = scraped(run(SCRAPE))
    assert found[("homeward_smtp_connections_open", ())] == 1
    assert found[("homeward_emails_sent_total", (("kind", "lesson"),))] == 4, "counts stay"

    env_without = {k: v for k, v in env.items() if k != metrics.MULTIPROC_ENV}
    fresh = subprocess.run(
        [sys.executable, "-c", SCRAPE],
        env=env_without,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert scraped(fresh.stdout)[("homeward_emails_sent_total", (("kind", "lesson"),))] == 0

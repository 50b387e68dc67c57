"""Fixtures: real parts for every test: Redis, an SMTP server, SQLite and PostgreSQL.

PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are used when they answer; otherwise the
suite says so and falls back to SQLite only and an embedded redis-server. Set
COURSE_TEST_REDIS=embedded to force the embedded Redis (COURSE_TEST_REDIS_DB=N picks the db
number on the shared one, 11 unless set), COURSE_TEST_DATABASES=sqlite to use SQLite
only, and COURSE_TEST_REQUIRE_POSTGRES=1 (CI) to fail instead of skipping when PostgreSQL is away.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller

from course.authoring import load_sequence, publish
from course.cli.embedded_redis import EmbeddedRedis, free_port
from course.clock import ManualClock
from course.db import engine_for, session_scope, upgrade
from course.settings import PROJECT_ROOT, Settings
from tests.support import FIXTURES, SmtpSink, due_queue_drift, postgres_database, truncate

# Two runs at once (CI on a clone, and a developer) each take their own db number.
TEST_REDIS_DB = int(os.environ.get("COURSE_TEST_REDIS_DB", "11"))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _note(message: str) -> None:
    sys.stderr.write(f"\n[homeward tests] {message}\n")


def pytest_report_header() -> list[str]:
    """Say up front which real services this run talks to, and what it fell back to."""
    if os.environ.get("COURSE_TEST_REDIS") != "embedded" and _port_open(6379):
        redis_line = f"redis: 127.0.0.1:6379 db {TEST_REDIS_DB}"
    else:
        redis_line = "redis: none on 127.0.0.1:6379 (or COURSE_TEST_REDIS=embedded): an embedded redis-server"
    kinds = _database_kinds()
    if "postgresql" in kinds and not _port_open(5432):
        db_line = "databases: SQLite only: PostgreSQL is not running on 127.0.0.1:5432, its tests are skipped"
    else:
        db_line = f"databases: {', '.join(kinds)}"
    return [f"homeward {redis_line}", f"homeward {db_line}"]


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    import redis

    embedded = None
    if os.environ.get("COURSE_TEST_REDIS") != "embedded" and _port_open(6379):
        url = f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
    else:
        _note(
            "Redis is not running on 127.0.0.1:6379 (or COURSE_TEST_REDIS=embedded): using an embedded redis-server"
        )
        embedded = EmbeddedRedis().start()
        url = embedded.url
    client = redis.Redis.from_url(url)
    client.flushdb()
    from course.queue import app

    app.conf.update(broker_url=url)
    yield url
    client.flushdb()
    if embedded:
        embedded.stop()


# --- databases -------------------------------------------------------------------------------


def _database_kinds() -> list[str]:
    wanted = os.environ.get("COURSE_TEST_DATABASES", "sqlite,postgresql")
    return [k.strip() for k in wanted.split(",") if k.strip()]


@pytest.fixture(scope="session")
def _postgres_url() -> Iterator[str | None]:
    if not _port_open(5432):
        if os.environ.get("COURSE_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(
                "PostgreSQL is required (COURSE_TEST_REQUIRE_POSTGRES=1) but 127.0.0.1:5432 does not answer"
            )
        _note(
            "PostgreSQL is not running on 127.0.0.1:5432: PostgreSQL tests are skipped, SQLite runs"
        )
        yield None
        return
    with postgres_database(f"homeward_test_{os.getpid()}") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def _sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'homeward-test.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=_database_kinds())
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "postgresql":
        url = request.getfixturevalue("_postgres_url")
        if url is None:
            pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    else:
        url = request.getfixturevalue("_sqlite_url")
    truncate(url)
    yield url
    drift = due_queue_drift(url)
    truncate(url)
    assert not drift, "the due queue drifted from the readers' due times:\n" + "\n".join(drift[:20])


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


# --- settings, clock, a published course ------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_rate_limits(redis_url: str) -> None:
    """Each test starts with no requests counted against the rate limits (course.ratelimit)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter("LIMITS*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def _empty_catalog() -> None:
    """Each test reads its sequence versions afresh: none depends on what an earlier one read."""
    from course import catalog

    catalog.forget()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(db_url: str, redis_url: str, smtp: SmtpSink) -> Settings:
    return Settings(
        database_url=db_url,
        redis_url=redis_url,
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        base_url="https://homeward.test",
        secret_key="test-secret-key-" + uuid.uuid4().hex,
        COURSE_FROM="Homeward <lessons@homeward.test>",
        postal_address="Homeward, 1 Test Street, Springfield",
        lessons_dir=PROJECT_ROOT / "lessons",
        default_sequence="mini-course",
        unsubscribe_mailto="unsubscribe@homeward.test",
    )


@pytest.fixture
def mini_course(settings: Settings, clock: ManualClock) -> str:
    sequence = load_sequence(FIXTURES / "mini-course")
    with session_scope(engine_for(settings.database_url)) as session:
        publish(session, sequence, clock)
    return sequence.slug


@pytest.fixture
def family_guides(settings: Settings, clock: ManualClock) -> dict[str, str]:
    """The shipped English and Spanish courses, published: locale -> slug."""
    slugs = {}
    with session_scope(engine_for(settings.database_url)) as session:
        for folder in ("family-guide", "family-guide-es"):
            sequence = load_sequence(settings.lessons_dir / folder)
            publish(session, sequence, clock)
            slugs[sequence.locale] = sequence.slug
    return slugs


@pytest.fixture
def bilingual(settings, clock, family_guides, queued):
    """The web app with the shipped English and Spanish courses published."""
    from fastapi.testclient import TestClient

    from course.web import create_app

    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def queued() -> list[list[int]]:
    """Batches the web app handed to the queue; `deliver` sends them as a worker would."""
    return []


@pytest.fixture
def intake(settings: Settings, clock: ManualClock, queued: list[list[int]]):
    """Take in the sign-ups the web app queued, as the next tick would, handing their
    confirmation emails to the queue (without sending them yet)."""
    from course.readers.intake import take_in

    def run() -> None:
        queued.append(take_in(engine_for(settings.database_url), settings, clock, limit=1000))

    return run


@pytest.fixture
def deliver(settings: Settings, clock: ManualClock, queued: list[list[int]]):
    """Run what beat + workers do, in-process: tick, then send every batch. Returns sent ids."""
    from course.sending import Composer, Mailer, SmtpTarget, send_batch, tick

    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    composer = Composer(settings, clock)  # kept for the whole test, as a worker keeps one
    engine = engine_for(settings.database_url)

    def run() -> list[int]:
        sent: list[int] = []
        handed = [b for b in queued if b]
        queued.clear()
        for batch in handed + tick(engine, settings, clock):
            result = send_batch(
                engine, settings, clock, mailer=mailer, ids=batch, composer=composer
            )
            sent.extend(result.sent)
        return sent

    yield run
    mailer.close()

"""Large PostgreSQL databases for the benchmarks, built inside the server.

A million readers go in with one `INSERT ... SELECT FROM generate_series` per table: row by row
from Python the same load takes many minutes, and what is measured is the query, not the load.
Each benchmark names a database of its own on the local server; it is made anew and dropped at
the end, so no two benchmarks (nor a test run) ever share one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

# Every reader: a subscriber and an enrollment at some stage. Stages by n % 20: 0-1 pending,
# 2-3 unsubscribed, 4 bounced, 5-9 completed, the rest active (some in aftercare), their next
# lesson due in the coming week (none due now).
READERS = """
INSERT INTO subscriber (id, email, first_name, time_zone, send_hour, relationship, substance,
                        created_at, discreet, soft_bounces)
SELECT n, 'reader' || n || '@bench.example', '', 'UTC', 9, 'parent', 'opioids',
       :now - (n % 60) * interval '1 day', false, 0
FROM generate_series(1, :readers) AS n;

INSERT INTO enrollment (id, link_key, subscriber_id, sequence_slug, version_id, status,
                        next_position, next_due_at, created_at, confirmed_at, ended_at,
                        started_treatment_at, treatment_after, reordered, replan,
                        consent_at, consent_source, consent_wording, consent_note)
SELECT n, md5(n::text), n, :slug, :version,
       CASE WHEN n % 20 < 2 THEN 'pending' WHEN n % 20 < 4 THEN 'unsubscribed'
            WHEN n % 20 = 4 THEN 'bounced' WHEN n % 20 < 10 THEN 'completed' ELSE 'active' END,
       CASE WHEN n % 20 < 2 THEN 1 ELSE 1 + n % 16 END,
       CASE WHEN n % 20 >= 10 THEN :now + (1 + n % 7) * interval '1 day' END,
       :now - (n % 60) * interval '1 day',
       CASE WHEN n % 20 >= 2 THEN :now - (n % 60) * interval '1 day' END,
       CASE WHEN n % 20 BETWEEN 2 AND 9 THEN :now END,
       CASE WHEN n % 97 = 0 THEN :now END,
       CASE WHEN n % 97 = 0 THEN n % 16 END,
       false, false, :now, 'form', 'abc', ''
FROM generate_series(1, :readers) AS n;

SELECT setval('enrollment_id_seq', :readers);
SELECT setval('subscriber_id_seq', :readers)
"""


# Each reader's `per` deliveries, and feedback per lesson (the readers: READERS).
EMAILS = """
INSERT INTO delivery (enrollment_id, kind, version_id, position, message_id, status, attempts,
                      created_at, sent_at)
SELECT e, 'lesson', :version, p, '<bench.' || e || '.' || p || '@bench.example>',
       CASE WHEN (e + p) % 5000 = 0 THEN 'failed' ELSE 'sent' END, 1,
       :now - ((e % 60) * interval '1 day') + p * interval '1 day',
       :now - ((e % 60) * interval '1 day') + p * interval '1 day' + (e % 30) * interval '1 second'
FROM generate_series(1, :readers) AS e, generate_series(1, :per) AS p;

INSERT INTO lesson_feedback (version_id, position, helpful, not_helpful)
SELECT :version, p, 100 * p, 7 * p FROM generate_series(1, 16) AS p;
"""


@contextmanager
def scratch_database(name: str) -> Iterator[Engine]:
    """A database of the current schema, named `name`, dropped on the way out."""
    from course.db import engine_for, upgrade

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        upgrade(url)
        engine = engine_for(url)
        yield engine
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def publish_course(engine: Engine, course: str = "family-guide") -> tuple[str, int]:
    """A shipped course (the English one unless `course` names another folder of lessons/),
    published: its slug and version id."""
    from course.authoring import load_sequence, publish
    from course.clock import SystemClock
    from course.db import session_scope

    with session_scope(engine) as session:
        published, _ = publish(session, load_sequence(ROOT / "lessons" / course), SystemClock())
        assert published.id is not None
        return published.slug, published.id


def run_script(engine: Engine, script: str, values: dict[str, object]) -> None:
    """Statements separated by `;` and a line end, in one transaction."""
    with engine.begin() as conn:
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(text(statement), values)


def load_readers(engine: Engine, *, readers: int, now: datetime, slug: str, version: int) -> None:
    """`readers` subscribers with an enrollment each (READERS), ids 1 to `readers`."""
    values = {"now": now, "slug": slug, "version": version, "readers": readers}
    run_script(engine, READERS, values)


def vacuum_analyze(engine: Engine) -> None:
    """Fresh statistics and a visibility map, as autovacuum leaves a table that has settled."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def build(
    engine: Engine,
    *,
    readers: int,
    per: int,
    now: datetime,
    then: Callable[[Engine], object] = lambda _engine: None,
) -> str:
    """The English course published, `readers` readers with `per` emails each (READERS and
    EMAILS), `then` (a benchmark's own touch), fresh statistics: with a progress bar, since a
    million readers take minutes. Returns the course's slug."""
    from tqdm import tqdm

    with tqdm(total=4, desc="building", unit="step", file=sys.stderr) as bar:
        slug, version = publish_course(engine)
        bar.update()
        load_readers(engine, readers=readers, now=now, slug=slug, version=version)
        bar.update()
        run_script(engine, EMAILS, {"now": now, "version": version, "readers": readers, "per": per})
        then(engine)
        bar.update()
        vacuum_analyze(engine)
        bar.update()
    return slug

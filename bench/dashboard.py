#!/usr/bin/env python3
"""How long a course's dashboard takes with a million readers and ten million emails.

    .venv/bin/python bench/dashboard.py                          # 1,000,000 readers, 10 emails each
    .venv/bin/python bench/dashboard.py --readers 20000          # what CI runs

Builds the data in a PostgreSQL database of its own (`homeward_bench_dashboard` on the local
server, made anew and dropped at the end), set-based with generate_series: readers spread over
the last 60 days at every stage of the 16-lesson family guide (active, completed, unsubscribed,
bounced, pending; some switched to aftercare), ten deliveries each, feedback per lesson. Then
times `course.stats.dashboard` (what the page and the API call) several times and prints the
median and the slowest next to the target. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 1.0
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NAME = "homeward_bench_dashboard"

# Every reader: a subscriber, an enrollment at some stage, and `per` deliveries. Stages by n % 20:
# 0-1 pending, 2-3 unsubscribed, 4 bounced, 5-9 completed, the rest active (some in aftercare).
FILL = """
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
       CASE WHEN n % 20 >= 10 THEN :now + (n % 7) * interval '1 day' END,
       :now - (n % 60) * interval '1 day',
       CASE WHEN n % 20 >= 2 THEN :now - (n % 60) * interval '1 day' END,
       CASE WHEN n % 20 BETWEEN 2 AND 9 THEN :now END,
       CASE WHEN n % 97 = 0 THEN :now END,
       CASE WHEN n % 97 = 0 THEN n % 16 END,
       false, false, :now, 'form', 'abc', ''
FROM generate_series(1, :readers) AS n;

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--per", type=int, default=10, help="emails per reader (default 10)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from sqlalchemy import create_engine, text
    from tqdm import tqdm

    from course.authoring import load_sequence, publish
    from course.clock import SystemClock
    from course.db import engine_for, session_scope, upgrade
    from course.stats import dashboard

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{NAME}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {NAME}"))
    try:
        with tqdm(total=4, desc="building", unit="step", file=sys.stderr) as bar:
            upgrade(url)
            engine = engine_for(url)
            with session_scope(engine) as session:
                published, _ = publish(
                    session, load_sequence(ROOT / "lessons" / "family-guide"), SystemClock()
                )
                slug, version = published.slug, published.id
            bar.update()
            now = datetime.now(UTC)
            with engine.begin() as conn:
                values = {
                    "now": now,
                    "slug": slug,
                    "version": version,
                    "readers": args.readers,
                    "per": args.per,
                }
                for statement in FILL.split(";\n"):
                    if statement.strip():
                        conn.execute(text(statement), values)
                        bar.update() if "INSERT INTO delivery" in statement else None
                conn.execute(text("SELECT setval('enrollment_id_seq', :n)"), {"n": args.readers})
                conn.execute(text("SELECT setval('subscriber_id_seq', :n)"), {"n": args.readers})
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
            bar.update(2)
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            figures = dashboard(engine, slug, now=now)
            timings.append(time.perf_counter() - started)
        assert figures is not None
        median, slowest = statistics.median(timings), max(timings)
        print(
            f"dashboard, {args.readers:,} readers, {args.readers * args.per:,} emails, "
            f"PostgreSQL: median {median:.3f} s, slowest {slowest:.3f} s over {args.runs} runs"
            f" (target: under {TARGET_SECONDS:.1f} s){'' if slowest < TARGET_SECONDS else '  MISSED'}"
        )
        print(
            f"  {figures.total:,} signed up, {figures.confirmed:,} confirmed, lesson 1 reached by"
            f" {figures.lessons[0].reached:,}, lag p50 {figures.lag_p50:.0f} s, p95"
            f" {figures.lag_p95:.0f} s, {figures.failed_waiting:,} failed waiting"
        )
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

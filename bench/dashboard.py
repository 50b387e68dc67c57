#!/usr/bin/env python3
"""How long a course's dashboard takes with a million readers and ten million emails.

    .venv/bin/python bench/dashboard.py                          # 1,000,000 readers, 10 emails each
    .venv/bin/python bench/dashboard.py --readers 20000          # what CI runs

Builds the data in a PostgreSQL database of its own (`homeward_bench_dashboard` on the local
server, made anew and dropped at the end), set-based with generate_series: readers spread over
the last 60 days at every stage of the 16-lesson family guide (active, completed, unsubscribed,
bounced, pending; some switched to aftercare), ten deliveries each, feedback per lesson. Then
times `course.stats.dashboard` (what the page and the API call) several times and prints the
median and the slowest next to the target; then the same for a small course beside it (SMALL
readers of the Spanish guide). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 1.0
NAME = "homeward_bench_dashboard"
SMALL = 500  # readers of the small course beside the big one

# A small course beside the big one (the Spanish guide): SMALL active readers, `per` lessons
# sent each. Its lessons are fewer than the dashboard's sample of lessons sent last, so looking
# for them among every email, newest first, reads every email.
SMALL_COURSE = """
INSERT INTO subscriber (id, email, first_name, time_zone, send_hour, relationship, substance,
                        created_at, discreet, soft_bounces)
SELECT :first + n, 'small' || n || '@bench.example', '', 'UTC', 9, 'parent', 'opioids',
       :now - interval '60 days', false, 0
FROM generate_series(1, :small) AS n;

INSERT INTO enrollment (id, link_key, subscriber_id, sequence_slug, version_id, status,
                        next_position, next_due_at, created_at, confirmed_at, reordered, replan,
                        consent_at, consent_source, consent_wording, consent_note)
SELECT :first + n, md5('small' || n), :first + n, :slug, :version, 'active', 1 + :per,
       :now + interval '1 day', :now - interval '60 days', :now - interval '60 days', false,
       false, :now, 'form', 'abc', ''
FROM generate_series(1, :small) AS n;

SELECT setval('enrollment_id_seq', :first + :small);
SELECT setval('subscriber_id_seq', :first + :small);

INSERT INTO delivery (enrollment_id, kind, version_id, position, message_id, status, attempts,
                      created_at, sent_at)
SELECT :first + e, 'lesson', :version, p, '<small.' || e || '.' || p || '@bench.example>',
       'sent', 1, :now - interval '60 days' + p * interval '1 day',
       :now - interval '60 days' + p * interval '1 day' + e * interval '1 second'
FROM generate_series(1, :small) AS e, generate_series(1, :per) AS p
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--per", type=int, default=10, help="emails per reader (default 10)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from bench.bulk import build, publish_course, run_script, scratch_database
    from course.stats import dashboard

    with scratch_database(NAME) as engine:
        now = datetime.now(UTC)
        small: list[str] = []

        def small_course(engine: Engine) -> None:
            slug, version = publish_course(engine, "family-guide-es")
            values = {"first": args.readers, "small": SMALL, "per": args.per}
            run_script(
                engine, SMALL_COURSE, {**values, "now": now, "slug": slug, "version": version}
            )
            small.append(slug)

        slug = build(engine, readers=args.readers, per=args.per, now=now, then=small_course)
        emails = f"{(args.readers + SMALL) * args.per:,} emails"
        for course, readers in [(slug, args.readers), (small[0], SMALL)]:
            timings = []
            for _ in range(args.runs):
                started = time.perf_counter()
                figures = dashboard(engine, course, now=now)
                timings.append(time.perf_counter() - started)
            assert figures is not None
            median, slowest = statistics.median(timings), max(timings)
            print(
                f"dashboard of a course of {readers:,} readers among {emails}, PostgreSQL:"
                f" median {median:.3f} s, slowest {slowest:.3f} s over {args.runs} runs (target:"
                f" under {TARGET_SECONDS:.1f} s){'' if slowest < TARGET_SECONDS else '  MISSED'}"
            )
            print(
                f"  {figures.total:,} signed up, {figures.confirmed:,} confirmed, lesson 1"
                f" reached by {figures.lessons[0].reached:,}, lag p50 {figures.lag_p50:.0f} s,"
                f" p95 {figures.lag_p95:.0f} s, {figures.failed_waiting:,} failed waiting"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
NAME = "homeward_bench_dashboard"

# Each reader's `per` deliveries, and feedback per lesson (the readers: bench.bulk.READERS).
FILL = """
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

    from tqdm import tqdm

    from bench.bulk import (
        load_readers,
        publish_family_guide,
        run_script,
        scratch_database,
        vacuum_analyze,
    )
    from course.stats import dashboard

    with scratch_database(NAME) as engine:
        with tqdm(total=4, desc="building", unit="step", file=sys.stderr) as bar:
            slug, version = publish_family_guide(engine)
            bar.update()
            now = datetime.now(UTC)
            load_readers(engine, readers=args.readers, now=now, slug=slug, version=version)
            bar.update()
            values = {"now": now, "version": version, "readers": args.readers, "per": args.per}
            run_script(engine, FILL, values)
            bar.update()
            vacuum_analyze(engine)
            bar.update()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

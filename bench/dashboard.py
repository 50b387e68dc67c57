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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--per", type=int, default=10, help="emails per reader (default 10)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from bench.bulk import build, scratch_database
    from course.stats import dashboard

    with scratch_database(NAME) as engine:
        now = datetime.now(UTC)
        slug = build(engine, readers=args.readers, per=args.per, now=now)
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

#!/usr/bin/env python3
"""How long the hourly purge of unconfirmed sign-ups takes with a million readers.

    .venv/bin/python bench/purge.py                    # 1,000,000 readers
    .venv/bin/python bench/purge.py --readers 20000    # what CI runs

A PostgreSQL database of its own (`homeward_bench_purge` on the local server, made anew and
dropped at the end) with that many readers at every stage (bench.bulk: a tenth of them never
confirmed, signed up at every hour of the last 60 days) and ten emails each. The first purge
deletes the backlog of old sign-ups; then the purge is timed as the beat runs it, once an hour,
each run finding the sign-ups that came of age in that hour. A benchmark, not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 1.0  # of the hourly beat: far less than the hour between two
NAME = "homeward_bench_purge"
DAYS = 7  # COURSE_UNCONFIRMED_DAYS' default


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--per", type=int, default=10, help="emails per reader (default 10)")
    parser.add_argument("--runs", type=int, default=5, help="hourly purges timed")
    args = parser.parse_args()

    from sqlalchemy import Engine, text

    from bench.bulk import build, scratch_database, vacuum_analyze
    from course.clock import ManualClock
    from course.readers.personal_data import purge_unconfirmed

    print(f"machine: {_load()} on {os.cpu_count()} CPUs")
    with scratch_database(NAME) as engine:
        built = time.perf_counter()
        now = datetime.now(UTC).replace(microsecond=0)

        def consented_at_sign_up(engine: Engine) -> None:
            """Over the last 60 days (READERS puts reader n on day n % 60), at every hour."""
            spread = "created_at + (id / 60 % 24) * interval '1 hour'"
            with engine.begin() as conn:
                conn.execute(text(f"UPDATE enrollment SET consent_at = {spread}"))

        build(engine, readers=args.readers, per=args.per, now=now, then=consented_at_sign_up)
        print(
            f"{args.readers:,} readers, {args.readers * args.per:,} emails: built in"
            f" {time.perf_counter() - built:.0f} s"
        )
        clock = ManualClock(now)
        started = time.perf_counter()
        backlog = purge_unconfirmed(engine, clock, days=DAYS)
        print(
            f"first purge: {backlog:,} sign-ups older than {DAYS} days in"
            f" {time.perf_counter() - started:.1f} s"
        )
        vacuum_analyze(engine)
        timings, purged = [], 0
        # An hour at a time from when yesterday's sign-ups start to come of age: each purge
        # finds that hour's (a 24th of a day's unconfirmed sign-ups), as the beat's do.
        clock.advance(days=DAYS - 1)
        for _ in range(args.runs):
            clock.advance(hours=1)
            started = time.perf_counter()
            purged += purge_unconfirmed(engine, clock, days=DAYS)
            timings.append(time.perf_counter() - started)
        median, slowest = statistics.median(timings), max(timings)
        print(
            f"purge, {args.readers:,} readers, {args.readers * args.per:,} emails, PostgreSQL:"
            f" median {median:.3f} s, slowest {slowest:.3f} s over {args.runs} hourly runs,"
            f" {purged / args.runs:,.0f} sign-ups purged each (target: each < {TARGET_SECONDS:.0f}"
            f" s){'' if slowest < TARGET_SECONDS else '  MISSED'}"
        )
        print(f"  the machine, just after the runs: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""How long the beat's tick takes with 10,000, 100,000 and 1,000,000 enrollments, 1,000 due.

    .venv/bin/python bench/tick.py                    # 10,000, 100,000 and 1,000,000
    .venv/bin/python bench/tick.py --sizes 10000      # what CI runs

For each size: a PostgreSQL database of its own (`homeward_bench_tick` on the local server, made
anew and dropped at the end) with that many readers at every stage (bench.bulk), 1,000 of the
active ones due now, scattered over the table, and fresh statistics. Then one
`course.sending.dispatch.tick` is timed several times, the claimed lessons put back between runs
(their delivery rows deleted, their due time restored), and the median and the slowest are
printed next to the target, with the plan PostgreSQL chose for the claim's UPDATE and the load
average around the runs. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 0.050
NAME = "homeward_bench_tick"
DUE = 1_000

# DUE active readers, due a minute ago, scattered over the table (md5 of the id) as readers who
# signed up at all times are.
MAKE_DUE = """
UPDATE enrollment SET next_due_at = :due_at
WHERE id IN (SELECT id FROM enrollment WHERE status = 'active' ORDER BY md5(id::text) LIMIT :n)
RETURNING id
"""


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} CPUs"
    )


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _claim_plan(conn: Connection, statement: str, parameters: Any) -> str:
    """What the claim's UPDATE reads its rows with (its subquery reads the same table under
    another alias), as PostgreSQL plans it now."""
    [[raw]] = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).all()
    plan = json.loads(raw) if isinstance(raw, str) else raw
    [update] = [n for n in _nodes(plan[0]["Plan"]) if n.get("Operation") == "Update"]
    [target] = [
        n
        for child in update.get("Plans", [])
        for n in _nodes(child)
        if n.get("Relation Name") == "enrollment" and n.get("Alias") == update["Alias"]
    ]
    how = target["Node Type"] + (f" using {target['Index Name']}" if "Index Name" in target else "")
    return f"Update on enrollment <- {how} (estimated {target['Plan Rows']:,} rows)"


def bench(size: int, runs: int) -> float:
    """The median tick, in seconds, with `size` enrollments of which DUE are due."""
    from sqlalchemy import event, text

    from bench.bulk import load_readers, publish_course, scratch_database, vacuum_analyze
    from course.clock import ManualClock
    from course.sending.dispatch import tick
    from course.settings import Settings

    with scratch_database(NAME) as engine:
        built = time.perf_counter()
        slug, version = publish_course(engine)
        now = datetime.now(UTC).replace(microsecond=0)
        load_readers(engine, readers=size, now=now, slug=slug, version=version)
        due_at = now - timedelta(minutes=1)
        with engine.begin() as conn:
            due = list(conn.execute(text(MAKE_DUE), {"due_at": due_at, "n": DUE}).scalars())
        vacuum_analyze(engine)
        print(
            f"{size:,} enrollments, {len(due):,} due: built in {time.perf_counter() - built:.0f} s"
        )

        settings = Settings(database_url=engine.url.render_as_string(hide_password=False))
        clock = ManualClock(now)

        def put_back() -> None:
            """The claimed lessons due again, as if the tick had never run."""
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM delivery WHERE created_at = :now"), {"now": now})
                conn.execute(
                    text("UPDATE enrollment SET next_due_at = :due_at WHERE id = ANY(:ids)"),
                    {"due_at": due_at, "ids": due},
                )

        # A first tick, not timed (the beat ticks every few seconds: its pages are in memory),
        # sends the claim statement that is then explained.
        seen: list[tuple[str, Any]] = []

        def record(*event_args: Any) -> None:  # conn, cursor, statement, parameters, ...
            seen.append((event_args[2], event_args[3]))

        event.listen(engine, "before_cursor_execute", record)
        try:
            claimed = sum(len(b) for b in tick(engine, settings, clock))
        finally:
            event.remove(engine, "before_cursor_execute", record)
        put_back()
        statement, parameters = next((s, p) for s, p in seen if "UPDATE enrollment" in s)
        with engine.connect() as conn:
            plan = _claim_plan(conn, statement, parameters)
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            claimed = sum(len(b) for b in tick(engine, settings, clock))
            timings.append(time.perf_counter() - started)
            put_back()
        # The fastest says what the tick costs when the machine leaves it alone; the median is
        # the target's figure.
        fastest, median, slowest = min(timings), statistics.median(timings), max(timings)
        print(
            f"tick, {size:,} enrollments, {DUE:,} due, PostgreSQL: median"
            f" {median * 1000:.1f} ms (fastest {fastest * 1000:.1f}, slowest"
            f" {slowest * 1000:.1f}) over {runs} runs,"
            f" {claimed:,} lessons claimed each (target: <= {TARGET_SECONDS * 1000:.0f} ms at"
            f" 10k, 100k and 1M alike){'' if median <= TARGET_SECONDS else '  MISSED'}"
        )
        print(f"  claim plan: {plan}")
        print(f"  the machine, just after the runs: {_load()}")
        return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=lambda v: [int(n) for n in v.split(",")],
        default=[10_000, 100_000, 1_000_000],
        help="enrollment counts, comma-separated (default 10000,100000,1000000)",
    )
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {_load()}")
    for size in args.sizes:
        bench(size, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

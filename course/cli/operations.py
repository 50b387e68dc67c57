"""`course stats`, `course export` and `course deliveries`: what the service is doing, each
course lesson by lesson, a course's readers as CSV, and failed deliveries an operator can send
on once the cause is fixed."""

from __future__ import annotations

import argparse
import sys

from course.cli.table import print_table
from course.clock import SystemClock
from course.settings import Settings


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from course import stats
    from course.db import engine_for

    engine = engine_for(settings.database_url)
    enrollments, deliveries = stats.by_status(engine)
    print_table([[s, str(n)] for s, n in enrollments], ["enrollments", "count"])
    print()
    print_table([[s, str(n)] for s, n in deliveries], ["deliveries", "count"])
    for slug in [args.course] if args.course else stats.courses(engine):
        figures = stats.dashboard(engine, slug, now=SystemClock().now())
        if figures is None:
            print(f"course: no published course is called {slug}", file=sys.stderr)
            return 1
        share = f"{figures.confirmed_share:.0%}" if figures.confirmed_share is not None else "-"
        lag = (
            f"lag p50 {figures.lag_p50:.0f} s, p95 {figures.lag_p95:.0f} s"
            if figures.lag_p50 is not None and figures.lag_p95 is not None
            else "no lesson sent yet"
        )
        print(
            f"\n{slug} (version {figures.version}): {figures.total} signed up, {share} confirmed,"
            f" {lag}, {figures.failed_waiting} failed waiting"
        )
        print_table(
            [
                [
                    f"{line.position}. {line.key}",
                    *(
                        str(n)
                        for n in (
                            line.reached,
                            line.left,
                            line.bounced,
                            line.treatment,
                            line.helpful,
                            line.not_helpful,
                        )
                    ),
                ]
                for line in figures.lessons
            ],
            ["lesson", "reached", "left", "bounced", "treatment", "helpful", "not helpful"],
        )
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """A course's readers or emails as CSV, to a file or standard output, with a progress bar."""
    import csv

    from tqdm import tqdm

    from course import catalog
    from course.db import engine_for, session_scope
    from course.staff import audit, export
    from course.staff.accounts import CLI

    engine = engine_for(settings.database_url)
    with session_scope(engine) as session:
        if catalog.newest_version(session, args.course) is None:
            print(f"course: no published course is called {args.course}", file=sys.stderr)
            return 1
        audit.record(
            session, SystemClock(), CLI, action=f"course.export.{args.kind}", target=args.course
        )
    total = export.count(engine, args.kind, args.course)
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        writer = csv.writer(out)
        rows = export.rows(engine, args.kind, args.course)
        writer.writerow(next(rows))
        with tqdm(
            total=total,
            unit="row",
            unit_scale=True,
            file=sys.stderr,
            disable=args.quiet or None,  # None: only on a terminal
            desc=f"{args.course} {args.kind}",
        ) as bar:
            for row in rows:
                writer.writerow(row)
                bar.update()
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"{total} rows written to {args.out}", file=sys.stderr)
    return 0


def cmd_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    from course import failures
    from course.db import engine_for

    engine = engine_for(settings.database_url)
    if args.action == "retry":
        count = failures.retry_failed(engine)
        print(f"{count} failed deliveries are back in the queue; the next tick sends them.")
        return 0
    reasons = failures.failed_reasons(engine)
    if not reasons:
        print("No failed deliveries are waiting.")
        return 0
    print_table([[str(n), reason] for reason, n in reasons], ["failed", "last error"])
    print("\nFix the cause, then run: course deliveries retry")
    return 0

"""`course stats` and `course deliveries`: what the service is doing, and failed deliveries
an operator can send on once the cause is fixed."""

from __future__ import annotations

import argparse

from course.cli.table import print_table
from course.settings import Settings


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from course import stats
    from course.db import engine_for

    enrollments, deliveries = stats.by_status(engine_for(settings.database_url))
    print_table([[s, str(n)] for s, n in enrollments], ["enrollments", "count"])
    print()
    print_table([[s, str(n)] for s, n in deliveries], ["deliveries", "count"])
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

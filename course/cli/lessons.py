"""`course lessons`: check sequence folders, publish them, list what is published."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from course.cli.table import print_table

if TYPE_CHECKING:  # the checker is imported when a command needs it
    from course.authoring import LessonReport, SequenceSpec
from course.errors import LessonInvalid
from course.render import Layout
from course.settings import Settings


def _checked(path: str, settings: Settings) -> tuple[SequenceSpec, list[LessonReport]] | None:
    """`course lessons check` on one folder; None, with every problem on stderr, if invalid."""
    from course.authoring import check

    try:
        return check(
            Path(path),
            Layout.load(settings.lessons_dir / "_layout"),
            settings.lessons_dir / "_language",
        )
    except LessonInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_lessons_check(args: argparse.Namespace, settings: Settings) -> int:
    from course.authoring import readability

    failed = False
    for path in args.paths:
        checked = _checked(path, settings)
        if checked is None:
            failed = True
            continue
        sequence, reports = checked
        scale = readability.scale(sequence.locale)
        day = 0
        rows = []
        for report in reports:
            day += report.lesson.delay_days
            rows.append(
                [
                    report.lesson.path.name,
                    report.lesson.subject,
                    str(day),
                    f"{report.reading:.1f}",
                    str(report.words),
                    "; ".join(
                        (["never skipped"] if report.lesson.never_skip else []) + report.warnings
                    ),
                ]
            )
        hardest = scale.hardest([r.reading for r in reports])
        print(
            f"{sequence.slug}: {sequence.title} ({len(reports)} lessons; reading scored as "
            f"{scale.name}: hardest {hardest:.1f}, limit {sequence.reading_limit:g})"
        )
        column = "ease" if scale.higher_is_easier else "grade"
        print_table(rows, ["lesson", "subject", "day", column, "words", "notes"])
        print()
    if failed:
        print("Not valid: fix the lines above and run the check again.", file=sys.stderr)
        return 1
    print("All lessons are valid.")
    return 0


def cmd_lessons_publish(args: argparse.Namespace, settings: Settings) -> int:
    from course.authoring import publish
    from course.clock import SystemClock
    from course.db import engine_for, session_scope

    engine = engine_for(settings.database_url)
    status = 0
    for path in args.paths:
        checked = _checked(path, settings)
        if checked is None:
            print(f"{path}: not published; nothing was changed.", file=sys.stderr)
            status = 1
            continue
        sequence, _ = checked
        with session_scope(engine) as session:
            version, created = publish(session, sequence, SystemClock())
        word = "Published" if created else "Unchanged, still"
        print(
            f"{word} {sequence.slug} version {version.version} ({len(sequence.lessons)} lessons)."
        )
    return status


def cmd_lessons_list(args: argparse.Namespace, settings: Settings) -> int:
    from course.catalog import published
    from course.db import engine_for, session_scope

    with session_scope(engine_for(settings.database_url)) as session:
        rows = [
            [
                v.slug,
                str(v.version),
                str(n),
                v.locale,
                v.title,
                v.published_at.strftime("%Y-%m-%d %H:%M"),
            ]
            for v, n in published(session)
        ]
    if not rows:
        print("No sequences are published yet. Run: course lessons publish lessons/family-guide")
        return 0
    print_table(rows, ["sequence", "version", "lessons", "locale", "title", "published"])
    return 0

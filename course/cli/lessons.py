"""`course lessons`: start, preview, check and publish sequence folders; list what is published."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from course.cli.table import print_table

if TYPE_CHECKING:  # the checker is imported when a command needs it
    from course.authoring import LessonReport, SequenceSpec
from course.errors import CourseError, LessonInvalid
from course.render import PERSONA_VALUES, Layout
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
                o.version.slug,
                str(o.version.version),
                str(o.lessons),
                o.version.locale,
                o.version.title,
                o.version.published_at.strftime("%Y-%m-%d %H:%M"),
            ]
            for o in published(session)
        ]
    if not rows:
        from course.cli.database import course_command

        print(
            "No sequences are published yet. Run: "
            f"{course_command()} lessons publish lessons/family-guide"
        )
        return 0
    print_table(rows, ["sequence", "version", "lessons", "locale", "title", "published"])
    return 0


def cmd_lessons_new(args: argparse.Namespace, settings: Settings) -> int:
    """A new sequence folder with two example lessons, every line explained, that pass the check."""
    from course.authoring import wording
    from course.authoring.load import LOCALES, SLUG_RE
    from course.cli.database import course_command, shown_path
    from course.cli.scaffold import write_sequence

    slug: str = args.slug
    if not SLUG_RE.match(slug):
        raise CourseError(
            f"{slug!r} cannot name a course folder: use lower-case letters, digits and dashes, "
            "like family-guide"
        )
    if args.locale not in LOCALES:
        raise CourseError(f"unknown locale {args.locale!r}; choose one of: {', '.join(LOCALES)}")
    parent = Path(args.into) if args.into else settings.lessons_dir
    if not parent.is_dir():
        raise CourseError(f"the folder {shown_path(parent)} does not exist; nothing was made")
    folder = parent / slug
    if folder.exists():
        raise CourseError(
            f"{shown_path(folder)} already exists, and nothing in it was changed: choose another "
            "name, or move that folder away first"
        )
    title = (args.title if args.title is not None else slug.replace("-", " ").capitalize()).strip()
    if not title or "\n" in title or "\r" in title:
        raise CourseError("the title (--title) must be one line of text")
    # Refused now rather than by the first check: the title is the one thing the counsellor
    # typed, and it shows in inboxes.
    reveal = wording.load_reveal_list(
        wording.reveal_list_path(settings.lessons_dir / "_language", args.locale)
    )
    if found := wording.revealing(title, reveal):
        raise CourseError(
            f"the title {title!r} says {', '.join(repr(w) for w in found)}, and the title shows "
            "in inboxes and on lock screens: give a neutral one with --title (each lesson's "
            "heading, inside the email, may say more); nothing was made"
        )
    course = course_command()
    shown = shown_path(folder)
    written = write_sequence(folder, title=title, locale=args.locale, course=course, shown_as=shown)
    print(f"Made {shown}: a sequence.toml and two example lessons.")
    for path in written:
        print(f"  {shown_path(path)}")
    print("The notes in each file (the lines that start with #) say what every line means. Next:")
    print(f"  {course} lessons check {shown}")
    print(f"  {course} lessons preview {shown} --lesson welcome")
    print(f"  {course} lessons publish {shown}")
    if folder.parent.resolve() == settings.lessons_dir.resolve():
        print("course dev also publishes it each time it starts, once it passes the check.")
    return 0


def cmd_lessons_preview(args: argparse.Namespace, settings: Settings) -> int:
    """One lesson's email, HTML and text, rendered as the check renders it, written to files."""
    from course.authoring import SAMPLE_LINKS, load_sequence
    from course.authoring.check import NO_STAGE_LINKS
    from course.cli.database import course_command, shown_path
    from course.render import Persona, render_email

    for name, values in PERSONA_VALUES.items():
        if getattr(args, name) not in values:
            raise CourseError(
                f"unknown {name} {getattr(args, name)!r}; choose one of: {', '.join(values)}"
            )
    persona = Persona(
        first_name=args.first_name.strip(),
        relationship=args.relationship,
        substance=args.substance,
    )
    try:
        sequence = load_sequence(Path(args.path))
    except LessonInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("Nothing was previewed: fix the lines above first.", file=sys.stderr)
        return 1
    wanted: str = args.lesson
    lesson = next(
        (each for each in sequence.lessons if wanted in (each.key, each.path.name, each.path.stem)),
        None,
    )
    if lesson is None:
        raise CourseError(
            f"no lesson {wanted!r} in {args.path}; its lessons are: "
            + ", ".join(each.key for each in sequence.lessons)
        )
    # As the check renders it: only lessons before aftercare carry the "started treatment" link.
    links = SAMPLE_LINKS if lesson.module in ("recognize", "act") else NO_STAGE_LINKS
    try:
        email = render_email(
            lesson.content(sequence),
            persona,
            links,
            layout=Layout.load(settings.lessons_dir / "_layout"),
        )
    except Exception as exc:  # a template can fail in any way at run time
        raise CourseError(
            f"{lesson.path} does not render for {persona}: {exc} "
            f"(`{course_command()} lessons check {args.path}` names the line)"
        ) from exc

    name = f"{sequence.slug}-{lesson.key}-{persona.relationship}-{persona.substance}.html"
    html_path = Path(args.out) if args.out else Path(".dev") / "previews" / name
    if html_path.is_dir():
        html_path = html_path / name
    elif html_path.suffix.lower() not in (".html", ".htm"):
        html_path = html_path.with_name(html_path.name + ".html")
    text_path = html_path.with_suffix(".txt")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(email.html, encoding="utf-8")
    text_path.write_text(email.text, encoding="utf-8")
    print(f"Subject:   {email.subject}")
    print(f"Preheader: {email.preheader}")
    print(
        f"Written for: first name {persona.first_name or '(none given)'}, relationship "
        f"{persona.relationship}, substance {persona.substance}. Its links are samples "
        "(example.org)."
    )
    print(f"HTML: {shown_path(html_path)}")
    print(f"Text: {shown_path(text_path)}")
    print(f"Open: {html_path.absolute().as_uri()}")
    return 0

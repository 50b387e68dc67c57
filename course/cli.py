"""`course`: run the service, manage lessons and the database, and answer data requests."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from course.errors import ConfigurationError, CourseError, LessonInvalid
from course.settings import PROJECT_ROOT, Settings, get_settings


def _settings() -> Settings:
    return get_settings()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from course.db import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    print("Database is up to date.")
    return 0


def _layout(settings: Settings):  # type: ignore[no-untyped-def]
    from course.render import Layout

    return Layout.load(settings.lessons_dir / "_layout")


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_lessons_check(args: argparse.Namespace) -> int:
    from course.lessons import check

    settings = _settings()
    failed = False
    for path in args.paths:
        try:
            sequence, reports = check(
                Path(path), _layout(settings), settings.lessons_dir / "_language"
            )
        except LessonInvalid as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            continue
        from course import readability

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


def cmd_lessons_publish(args: argparse.Namespace) -> int:
    from course.clock import SystemClock
    from course.db import engine_for, session_scope
    from course.lessons import check, publish

    settings = _settings()
    engine = engine_for(settings.database_url)
    status = 0
    for path in args.paths:
        try:
            sequence, _ = check(Path(path), _layout(settings), settings.lessons_dir / "_language")
        except LessonInvalid as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{path}: not published; nothing was changed.", file=sys.stderr)
            status = 1
            continue
        with session_scope(engine) as session:
            version, created = publish(session, sequence, SystemClock())
        word = "Published" if created else "Unchanged, still"
        print(
            f"{word} {sequence.slug} version {version.version} ({len(sequence.lessons)} lessons)."
        )
    return status


def cmd_lessons_list(args: argparse.Namespace) -> int:
    from course.db import engine_for, session_scope
    from course.lessons import published

    settings = _settings()
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


def cmd_stats(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from course.db import engine_for, session_scope
    from course.models import Delivery, Enrollment

    settings = _settings()
    with session_scope(engine_for(settings.database_url)) as session:
        enrollments = session.execute(
            select(Enrollment.status, func.count()).group_by(Enrollment.status)
        ).all()
        deliveries = session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        ).all()
    print_table([[s, str(n)] for s, n in enrollments], ["enrollments", "count"])
    print()
    print_table([[s, str(n)] for s, n in deliveries], ["deliveries", "count"])
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    from course import failures
    from course.db import engine_for

    engine = engine_for(_settings().database_url)
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


def cmd_subscriber(args: argparse.Namespace) -> int:
    from course import enrollment as verbs
    from course.db import engine_for, session_scope

    settings = _settings()
    with session_scope(engine_for(settings.database_url)) as session:
        if args.action == "export":
            data = verbs.export(session, args.email)
            if data is None:
                print(f"No data is stored for {args.email}.", file=sys.stderr)
                return 1
            print(json.dumps(data, indent=2, ensure_ascii=False))
            return 0
        if verbs.erase(session, args.email):
            print(f"Erased everything stored for {args.email}.")
        else:
            print(f"No data is stored for {args.email}.")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from course.web import create_app

    settings = _settings()
    if settings.dev:
        print(
            "COURSE_DEV is set: development mode. The safety checks are off and /dev/mailbox"
            " shows every email sent, links included: never run like this where others can"
            " reach it.",
            file=sys.stderr,
        )
    else:
        settings.require_production_ready()
    uvicorn.run(create_app(settings), host=args.host, port=args.port, proxy_headers=True)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Everything on embedded defaults: SQLite, a private Redis, a mail catcher, web, worker, beat."""
    from course.devsmtp import start_catcher
    from course.embedded_redis import EmbeddedRedis, free_port
    from course.shutdown import Shutdown

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin
    shutdown = Shutdown().install()
    dev_dir = PROJECT_ROOT / ".dev"
    dev_dir.mkdir(exist_ok=True)
    redis: EmbeddedRedis | None = None
    catcher = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        if not os.environ.get("COURSE_REDIS_URL"):
            redis = EmbeddedRedis()
            with shutdown.starting():
                redis.start()
            os.environ["COURSE_REDIS_URL"] = redis.url
        smtp_port = free_port()
        base_url = f"http://{args.host}:{args.port}"
        defaults = {
            "COURSE_DEV": "1",
            "COURSE_DATABASE_URL": f"sqlite:///{dev_dir / 'homeward.db'}",
            "COURSE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "COURSE_BASE_URL": base_url,
            "COURSE_POSTAL_ADDRESS": "Homeward (development), 1 Example Street, Springfield",
            "COURSE_DAY_SECONDS": "60",
            "COURSE_TICK_SECONDS": "2",
            "COURSE_DEV_MAILBOX": str(dev_dir / "mailbox"),
        }
        for key, value in defaults.items():
            os.environ.setdefault(key, value)
        get_settings.cache_clear()
        settings = get_settings()
        catcher = start_catcher(settings.dev_mailbox, port=smtp_port)

        from course.clock import SystemClock
        from course.db import engine_for, session_scope, upgrade
        from course.lessons import check, publish

        upgrade(settings.database_url)
        for folder in sorted(p.parent for p in settings.lessons_dir.glob("*/sequence.toml")):
            try:
                sequence, _ = check(folder, _layout(settings), settings.lessons_dir / "_language")
            except LessonInvalid as exc:
                print(
                    f"Skipping {folder.name}: it does not pass the check:",
                    *exc.problems,
                    sep="\n  ",
                )
                continue
            with session_scope(engine_for(settings.database_url)) as session:
                version, _ = publish(session, sequence, SystemClock())
            print(f"Published {sequence.slug} version {version.version}.")

        # No banners: they would scroll the URLs printed below off the screen.
        celery = [sys.executable, "-m", "celery", "-A", "worker", "--quiet"]
        beat_schedule = str(dev_dir / "beat-schedule")
        for command in (
            [*celery, "worker", "--loglevel=WARNING", "--concurrency=2"],
            [*celery, "beat", "--loglevel=WARNING", "--schedule", beat_schedule],
        ):
            with shutdown.starting():
                children.append(subprocess.Popen(command, cwd=PROJECT_ROOT))
        print(
            "\nHomeward is running (a course day lasts "
            f"{settings.day_seconds:g} seconds in dev mode).\n"
            f"  Sign up:      {base_url}/\n"
            f"  Dev mailbox:  {base_url}/dev/mailbox\n"
            f"  Health:       {base_url}/health\n"
            "Press Ctrl+C to stop.\n",
            flush=True,
        )
        import uvicorn

        from course.web import create_app

        # A request that hangs must not keep everything running after a signal.
        config = uvicorn.Config(
            create_app(settings),
            host=args.host,
            port=args.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        shutdown.serve(server)
        if not server.started:  # uvicorn has logged why (a port in use, say)
            raise CourseError(f"the web app could not start on {args.host}:{args.port}")
    finally:
        shutdown.cleaning_up()
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if catcher:
            catcher.stop()
        if redis:
            redis.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course", description="Homeward: an email course for families."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run everything locally on embedded defaults")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=cmd_dev)

    web = sub.add_parser("web", help="run the web app")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.set_defaults(func=cmd_web)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    lessons = sub.add_parser("lessons", help="check, publish and list lesson sequences")
    lsub = lessons.add_subparsers(dest="action", required=True)
    for name, func, text in (
        ("check", cmd_lessons_check, "validate sequence folders"),
        ("publish", cmd_lessons_publish, "store a new version in the database"),
    ):
        p = lsub.add_parser(name, help=text)
        p.add_argument("paths", nargs="+", metavar="PATH")
        p.set_defaults(func=func)
    lsub.add_parser("list", help="show published sequences").set_defaults(func=cmd_lessons_list)

    sub.add_parser("stats", help="enrollments and deliveries by status").set_defaults(
        func=cmd_stats
    )

    deliveries = sub.add_parser(
        "deliveries", help="deliveries that gave up after repeated errors: list or retry"
    )
    deliveries.add_argument("action", choices=["failed", "retry"])
    deliveries.set_defaults(func=cmd_deliveries)

    subscriber = sub.add_parser("subscriber", help="a person's data: export or erase")
    subscriber.add_argument("action", choices=["export", "erase"])
    subscriber.add_argument("email")
    subscriber.set_defaults(func=cmd_subscriber)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigurationError as exc:
        print(f"course: cannot start: {exc.message}", file=sys.stderr)
        return 2
    except CourseError as exc:
        print(f"course: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

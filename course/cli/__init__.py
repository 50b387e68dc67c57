"""`course`: run the service, manage lessons and the database, and answer data requests.

Each group of commands is a module of its own; this one builds the parser and runs a command
with the settings.
"""

from __future__ import annotations

import argparse
import logging
import sys

from course import logs
from course.cli import bounces, lessons, operations, readers, serve, staff
from course.cli.database import announce, check_reachable, with_current_schema
from course.errors import ConfigurationError, CourseError
from course.render import PERSONA_VALUES
from course.settings import Settings, get_settings


def _settings() -> Settings:
    return get_settings()


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from course.db import upgrade

    announce(settings)
    check_reachable(settings)
    upgrade(settings.database_url)
    print("Database is up to date.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course", description="Homeward: an email course for families."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run everything locally on embedded defaults")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=serve.cmd_dev)

    web = sub.add_parser("web", help="run the web app")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument(
        "--workers",
        type=serve.workers_arg,
        default=None,
        help=f"web processes (default: one per CPU core, here {serve.cpu_count()})",
    )
    web.add_argument(
        "--access-log", action="store_true", help="log a line for every request (off by default)"
    )
    web.set_defaults(func=serve.cmd_web)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    lessons_group = sub.add_parser(
        "lessons", help="start, preview, check, publish and list lesson sequences"
    )
    lsub = lessons_group.add_subparsers(dest="action", required=True)
    for name, func, text in (
        ("check", lessons.cmd_lessons_check, "validate sequence folders"),
        (
            "publish",
            with_current_schema(lessons.cmd_lessons_publish),
            "store a new version in the database",
        ),
    ):
        p = lsub.add_parser(name, help=text)
        p.add_argument("paths", nargs="+", metavar="PATH")
        p.set_defaults(func=func)
    lsub.add_parser("list", help="show published sequences").set_defaults(
        func=with_current_schema(lessons.cmd_lessons_list)
    )
    new = lsub.add_parser("new", help="start a new sequence folder, with two example lessons")
    new.add_argument("slug", metavar="SLUG", help="the folder's name: a-z, 0-9 and dashes")
    new.add_argument("--title", help="the course's title, shown in inboxes")
    new.add_argument("--locale", default="en", help="en or es (default: en)")
    new.add_argument(
        "--into", metavar="DIR", help="the folder to create SLUG in (default: the lessons folder)"
    )
    new.set_defaults(func=lessons.cmd_lessons_new)
    preview = lsub.add_parser("preview", help="render one lesson's email to files, to open")
    preview.add_argument("path", metavar="PATH", help="the sequence folder")
    preview.add_argument(
        "--lesson", required=True, metavar="KEY", help="the lesson's key, or its file name"
    )
    for name, default in (("relationship", "other"), ("substance", "unsure")):
        # Not argparse choices: a wrong value gets one line naming them, and exit 1.
        preview.add_argument(
            f"--{name}",
            default=default,
            metavar=name[0].upper(),
            help=f"{', '.join(PERSONA_VALUES[name])} (default: {default})",
        )
    preview.add_argument("--first-name", default="", metavar="N", help="default: none given")
    preview.add_argument(
        "--out", metavar="FILE", help="the HTML file to write (default: under .dev/previews/)"
    )
    preview.set_defaults(func=lessons.cmd_lessons_preview)

    stats_cmd = sub.add_parser(
        "stats", help="enrollments and deliveries by status, and each course lesson by lesson"
    )
    stats_cmd.add_argument("--course", metavar="SLUG", help="only this course")
    stats_cmd.set_defaults(func=with_current_schema(operations.cmd_stats))

    export_cmd = sub.add_parser("export", help="a course's readers or emails as CSV")
    export_cmd.add_argument("kind", choices=["enrollments", "deliveries"])
    export_cmd.add_argument("course", metavar="SLUG")
    export_cmd.add_argument("--out", metavar="FILE", help="default: standard output")
    export_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    export_cmd.set_defaults(func=with_current_schema(operations.cmd_export))

    deliveries = sub.add_parser(
        "deliveries", help="deliveries that gave up after repeated errors: list or retry"
    )
    deliveries.add_argument("action", choices=["failed", "retry"])
    deliveries.set_defaults(func=with_current_schema(operations.cmd_deliveries))

    bounces_group = sub.add_parser("bounces", help="bounces and complaints in a bounce mailbox")
    bounces_read = bounces_group.add_subparsers(dest="action", required=True).add_parser(
        "read", help="take in every new message of a Maildir and mark it read"
    )
    bounces_read.add_argument("--maildir", required=True, metavar="PATH")
    bounces_read.add_argument("--quiet", action="store_true", help="no progress bar")
    bounces_read.set_defaults(func=with_current_schema(bounces.cmd_bounces))

    subscriber = sub.add_parser("subscriber", help="a person's data: export or erase")
    subscriber.add_argument("action", choices=["export", "erase"])
    subscriber.add_argument("email")
    subscriber.set_defaults(func=with_current_schema(readers.cmd_subscriber))
    staff.add_parsers(sub, with_current_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings()
        # What runs for long says what it does; a one-off command's output is its own prints.
        level = logging.INFO if args.command in ("web", "dev") else logging.WARNING
        logs.configure(json=logs.wants_json(settings.log_format), level=level)
        return int(args.func(args, settings) or 0)
    except ConfigurationError as exc:
        print(f"course: cannot start: {exc.message}", file=sys.stderr)
        return 2
    except CourseError as exc:
        print(f"course: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

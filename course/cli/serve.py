"""`course web` and `course dev`: the web app alone, or everything on embedded defaults."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from typing import Any

from course.errors import CourseError, LessonInvalid
from course.render import Layout
from course.settings import DEV_DATABASE, PROJECT_ROOT, Settings, get_settings


def cpu_count() -> int:
    """The cores this process may run on (a container or taskset may allow fewer than the
    machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def workers_arg(text: str) -> int:
    """`--workers`: a whole number of processes, at least one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from course import logs
    from course.cli.database import announce
    from course.web import serving_app

    # No schema check: until it is migrated the app answers 503 and /health says what to run.
    announce(settings)
    if settings.dev:
        print(
            "COURSE_DEV is set: development mode. The safety checks are off and /dev/mailbox"
            " shows every email sent, links included: never run like this where others can"
            " reach it.",
            file=sys.stderr,
        )
    else:
        settings.require_production_ready()
    workers = args.workers or cpu_count()
    # Off unless asked for: a line per request is a tenth of what a sign-up costs, and a proxy in
    # front usually logs every request already.
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "proxy_headers": True,
        "access_log": args.access_log,
        # Every process's lines through the redacting filter, as JSON off a terminal.
        "log_config": logs.dict_config(logs.wants_json(settings.log_format)),
    }
    if workers == 1:
        uvicorn.run(serving_app(settings), **common)
    else:
        # One process runs Python one request at a time, whatever the threads: a process per
        # core. Each builds its own app from the same environment (serving_app() reads
        # get_settings()), with its own database pool and catalogue (course.catalog.shelf).
        uvicorn.run("course.web.app:serving_app", factory=True, workers=workers, **common)
    return 0


DEV_STAFF = "admin@example.org"


def _dev_staff_link(settings: Settings, base_url: str) -> str:
    """The dev admin's account (made once) and a one-time link that signs it in."""
    from course.clock import SystemClock
    from course.db import engine_for, session_scope
    from course.staff import accounts, sign_in

    with session_scope(engine_for(settings.database_url)) as session:
        if accounts.find(session, DEV_STAFF) is None:
            accounts.add(session, SystemClock(), email=DEV_STAFF, role="admin", name="Dev admin")
        issued = sign_in.request_link(session, SystemClock(), email=DEV_STAFF)
    assert issued is not None  # the account was just made or found
    return f"{base_url}/staff/sign-in/{issued[1]}"


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """Everything on embedded defaults: SQLite, a private Redis, a mail catcher, web, worker, beat."""
    from course.cli.database import DEV, FROM_ENVIRONMENT, announce
    from course.cli.devsmtp import start_catcher
    from course.cli.embedded_redis import EmbeddedRedis, free_port
    from course.cli.shutdown import Shutdown

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
        chosen = FROM_ENVIRONMENT if os.environ.get("COURSE_DATABASE_URL") else DEV
        defaults = {
            "COURSE_DEV": "1",
            # The commands typed beside it find this file (course.settings.default_database_url).
            "COURSE_DATABASE_URL": f"sqlite:///{PROJECT_ROOT / DEV_DATABASE}",
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
        announce(settings, chosen)

        from course.authoring import check, publish
        from course.clock import SystemClock
        from course.db import engine_for, session_scope, upgrade

        upgrade(settings.database_url)
        for folder in sorted(p.parent for p in settings.lessons_dir.glob("*/sequence.toml")):
            try:
                sequence, _ = check(
                    folder,
                    Layout.load(settings.lessons_dir / "_layout"),
                    settings.lessons_dir / "_language",
                )
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

        staff_link = _dev_staff_link(settings, base_url)

        # No banners: they would scroll the URLs printed below off the screen.
        celery = [sys.executable, "-m", "celery", "-A", "worker", "--quiet"]
        beat_schedule = str(dev_dir / "beat-schedule")
        for command in (
            # A few sending threads: the dev mail catcher is next door.
            [*celery, "worker", "--loglevel=WARNING", "--concurrency=4"],
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
            f"  Staff:        {staff_link}\n"
            f"                (signs in {DEV_STAFF}, an admin, once, within 20 minutes; after\n"
            f"                that ask at {base_url}/staff/sign-in and open the email in the\n"
            "                dev mailbox)\n"
            "Press Ctrl+C to stop.\n",
            flush=True,
        )
        import uvicorn

        from course.web import serving_app

        # A request that hangs must not keep everything running after a signal.
        config = uvicorn.Config(
            serving_app(settings),
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

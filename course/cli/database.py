"""Which database a command works on, said in one line on stderr, and a database that is missing,
unmigrated or newer than this code refused with the command to run, never a traceback.

The line goes to stderr so that what a command prints on stdout (a JSON export, say) stays clean.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from course.errors import CourseError
from course.settings import FALLBACK_DATABASE_URL, Settings, default_database_url

Command = Callable[[argparse.Namespace, Settings], int]

# How the database was chosen, for announce().
FROM_ENVIRONMENT = "COURSE_DATABASE_URL"
DEV = "course dev"
FALLBACK = "fallback"


def course_command() -> str:
    """How to type `course` in a message: `course` when it is on the PATH; otherwise the script
    beside this Python (`.venv/bin/course` for someone who followed the quick start, which never
    puts it on the PATH)."""
    if shutil.which("course"):
        return "course"
    beside = Path(sys.executable).parent / "course"
    return shown_path(beside) if beside.exists() else "course"


def shown_path(path: Path) -> str:
    """`path` as short as it can be said: relative to the current folder when inside it."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database, or SQLite in memory)."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def shown(url: str) -> str:
    """The database as a person would name it: a file's path, or the URL without its password."""
    file = sqlite_file(url)
    if file is not None:
        return shown_path(file)
    return _parse(url).render_as_string(hide_password=True)


def origin(settings: Settings) -> str:
    """How `settings.database_url` was chosen: FROM_ENVIRONMENT, DEV or FALLBACK."""
    default = default_database_url()
    if settings.database_url != default:
        return FROM_ENVIRONMENT
    return FALLBACK if default == FALLBACK_DATABASE_URL else DEV


def announce(settings: Settings, how: str | None = None) -> None:
    """One line on stderr: the database this command uses, and how to choose another."""
    where = shown(settings.database_url)
    how = how or origin(settings)
    if how == FROM_ENVIRONMENT:
        line = f"Database: {where} (set by COURSE_DATABASE_URL; change it to use another)."
    elif how == DEV:
        line = (
            f"Database: {where}, the one course dev uses (to use another, set COURSE_DATABASE_URL)."
        )
    else:
        line = (
            f"Database: {where} (course dev has made no .dev/homeward.db here; to use another, "
            "set COURSE_DATABASE_URL)."
        )
    print(line, file=sys.stderr, flush=True)


def check_reachable(settings: Settings) -> None:
    """Refuse, in one line, a database that cannot be opened or that a newer release migrated;
    an SQLite file that does not exist yet is fine (`course db upgrade` creates it)."""
    file = sqlite_file(settings.database_url)
    if file is not None and not file.parent.is_dir():
        raise CourseError(
            f"the database {shown(settings.database_url)} cannot be made: the folder "
            f"{shown_path(file.parent)} does not exist (create it, or set COURSE_DATABASE_URL)"
        )
    if file is None or file.exists():
        _refuse_unless(settings, {"current", "behind"})


def require_current_schema(settings: Settings) -> None:
    """Refuse, in one line naming the database and what to run, a database this code cannot use
    as it is: missing, never migrated, behind or ahead."""
    where = shown(settings.database_url)
    upgrade = f"{course_command()} db upgrade"
    file = sqlite_file(settings.database_url)
    # Opening a missing SQLite file would create an empty one: say so instead.
    if file is not None and not file.exists():
        raise CourseError(
            f"the database {where} does not exist yet: run `{upgrade}` to create it, or set "
            "COURSE_DATABASE_URL to the database you mean"
        )
    _refuse_unless(settings, {"current"})


def with_current_schema(func: Command) -> Command:
    """`func`, run after announce() and require_current_schema(): for every command that reads
    or writes the database."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        announce(settings)
        require_current_schema(settings)
        return func(args, settings)

    run.__doc__ = func.__doc__
    return run


def _refuse_unless(settings: Settings, allowed: set[str]) -> None:
    from course.db import engine_for, schema_state

    where = shown(settings.database_url)
    upgrade = f"{course_command()} db upgrade"
    try:
        with engine_for(settings.database_url).connect() as conn:
            state = schema_state(conn)
            empty = state == "behind" and not inspect(conn).has_table("alembic_version")
    except (SQLAlchemyError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CourseError(f"cannot open the database {where}: {reason}") from exc
    if state in allowed:
        return
    if state == "ahead":
        raise CourseError(
            f"the database {where} was set up by a newer version of Homeward than this one: "
            "update this copy, or set COURSE_DATABASE_URL to another database"
        )
    if empty:
        raise CourseError(f"the database {where} has no tables yet: run `{upgrade}` first")
    raise CourseError(
        f"the database {where} was set up by an older version of Homeward: run `{upgrade}` to "
        "bring it up to date"
    )


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise CourseError(f"COURSE_DATABASE_URL is not a database address: {url!r}") from exc

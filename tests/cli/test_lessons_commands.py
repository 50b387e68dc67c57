"""The `course` commands a counsellor types beside `course dev`, run as real processes from a
folder of their own: which database they use and say, what an unmigrated one answers, and
`course lessons new` and `preview`."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command

from course.db import alembic_config, upgrade
from course.settings import PROJECT_ROOT
from tests.support import FIXTURES

DEV_LINE = (
    "Database: .dev/homeward.db, the one course dev uses (to use another, set COURSE_DATABASE_URL)."
)


def course(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`course ARGS` typed in `cwd` by someone who has set no COURSE_* variable (but `env`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    return subprocess.run(
        [sys.executable, "-m", "course.cli", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def published(database: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT slug, version FROM sequence_version ORDER BY id").fetchall()


@pytest.fixture
def mini_course(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "mini-course", tmp_path / "mini-course"))


@pytest.fixture
def dev_database(tmp_path: Path) -> Path:
    """What `course dev` leaves in a project folder: .dev/homeward.db, migrated."""
    database = tmp_path / ".dev" / "homeward.db"
    database.parent.mkdir()
    upgrade(f"sqlite:///{database}")
    return database


def test_publish_beside_course_dev_goes_into_its_database_and_says_so(
    tmp_path: Path, dev_database: Path, mini_course: Path
) -> None:
    done = course("lessons", "publish", "mini-course", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [DEV_LINE]
    assert done.stdout.splitlines() == ["Published mini-course version 1 (3 lessons)."]
    assert published(dev_database) == [("mini-course", 1)]
    assert not (tmp_path / "homeward.db").exists(), "nothing went to a second database"


def test_a_command_typed_in_a_subfolder_finds_the_dev_database_above_it(
    tmp_path: Path, dev_database: Path, mini_course: Path
) -> None:
    assert course("lessons", "publish", "mini-course", cwd=tmp_path).returncode == 0

    done = course("lessons", "list", cwd=mini_course)

    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"Database: {dev_database}, the one course dev uses (to use another, set "
        "COURSE_DATABASE_URL)."
    ]
    assert "mini-course" in done.stdout
    assert not (mini_course / "homeward.db").exists()


def test_course_database_url_wins_over_the_dev_database(
    tmp_path: Path, dev_database: Path, mini_course: Path
) -> None:
    other = tmp_path / "other.db"
    upgrade(f"sqlite:///{other}")

    done = course(
        "lessons",
        "publish",
        "mini-course",
        cwd=tmp_path,
        env={"COURSE_DATABASE_URL": f"sqlite:///{other}"},
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "Database: other.db (set by COURSE_DATABASE_URL; change it to use another)."
    ]
    assert published(other) == [("mini-course", 1)]
    assert published(dev_database) == []


def test_without_a_dev_database_commands_use_homeward_db_here_and_say_so(
    tmp_path: Path, mini_course: Path
) -> None:
    assert course("db", "upgrade", cwd=tmp_path).returncode == 0

    done = course("lessons", "publish", "mini-course", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "Database: homeward.db (course dev has made no .dev/homeward.db here; to use another, "
        "set COURSE_DATABASE_URL)."
    ]
    assert published(tmp_path / "homeward.db") == [("mini-course", 1)]


@pytest.mark.parametrize(
    "args",
    [
        ["lessons", "publish", "mini-course"],
        ["lessons", "list"],
        ["stats"],
        ["deliveries", "failed"],
        ["subscriber", "export", "reader@example.org"],
        ["bounces", "read", "--maildir", "bounces"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_database_with_no_tables_gets_one_line_naming_it_and_what_to_run(
    tmp_path: Path, mini_course: Path, args: list[str]
) -> None:
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "bounces" / sub).mkdir(parents=True)
    empty = tmp_path / ".dev" / "homeward.db"  # a dev service that never got as far as migrating
    empty.parent.mkdir()
    empty.touch()

    done = course(*args, cwd=tmp_path)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    announced, refused = done.stderr.splitlines()
    assert announced == DEV_LINE
    assert refused.startswith("course: the database .dev/homeward.db has no tables yet: run `")
    assert refused.endswith(" db upgrade` first")
    assert done.stdout == ""


def test_a_database_behind_the_code_says_to_upgrade_it(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    command.upgrade(alembic_config(f"sqlite:///{old}"), "0001")
    env = {"COURSE_DATABASE_URL": f"sqlite:///{old}"}

    done = course("stats", cwd=tmp_path, env=env)

    assert done.returncode == 1
    [_, refused] = done.stderr.splitlines()
    assert refused.startswith(
        "course: the database old.db was set up by an older version of Homeward: run `"
    )
    assert refused.endswith(" db upgrade` to bring it up to date")
    assert course("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    assert course("stats", cwd=tmp_path, env=env).returncode == 0


def test_a_missing_database_file_is_named_and_not_created(tmp_path: Path) -> None:
    done = course("lessons", "list", cwd=tmp_path)

    assert done.returncode == 1
    [_, refused] = done.stderr.splitlines()
    assert refused.startswith("course: the database homeward.db does not exist yet: run `")
    assert " db upgrade` to create it" in refused
    assert not (tmp_path / "homeward.db").exists()


@pytest.mark.parametrize("locale", ["en", "es"])
def test_a_new_sequence_passes_the_check_as_it_is(tmp_path: Path, locale: str) -> None:
    made = course("lessons", "new", "family-notes", "--locale", locale, "--into", ".", cwd=tmp_path)

    assert made.returncode == 0, made.stderr
    folder = tmp_path / "family-notes"
    assert sorted(p.name for p in folder.iterdir()) == [
        "01-welcome.md",
        "02-words-that-help.md",
        "sequence.toml",
    ]
    lines = made.stdout.splitlines()
    assert lines[0] == "Made family-notes: a sequence.toml and two example lessons."
    assert any(line.endswith(" lessons check family-notes") for line in lines)
    assert f'locale = "{locale}"' in (folder / "sequence.toml").read_text()
    notes = (folder / "01-welcome.md").read_text()
    for name in ("first_name", "relationship", "substance", "sibling", "stimulants"):
        assert name in notes, f"the notes name {name}"
    assert "lessons/_layout" in notes, "the notes say where the crisis footer comes from"

    checked = course("lessons", "check", "family-notes", cwd=tmp_path)

    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[-1] == "All lessons are valid."


def test_a_new_sequence_goes_into_the_lessons_folder_by_default(tmp_path: Path) -> None:
    lessons = tmp_path / "lessons"
    for shared in ("_layout", "_language"):
        shutil.copytree(PROJECT_ROOT / "lessons" / shared, lessons / shared)

    made = course(
        "lessons",
        "new",
        "evening-notes",
        "--title",
        'Notes for "quiet" evenings',
        cwd=tmp_path,
        env={"COURSE_LESSONS_DIR": str(lessons)},
    )

    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[0] == (
        "Made lessons/evening-notes: a sequence.toml and two example lessons."
    )
    assert (
        'title = "Notes for \\"quiet\\" evenings"'
        in (lessons / "evening-notes" / "sequence.toml").read_text()
    )
    checked = course("lessons", "check", "lessons/evening-notes", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert 'evening-notes: Notes for "quiet" evenings' in checked.stdout


def test_a_new_sequence_never_overwrites_a_folder(tmp_path: Path) -> None:
    assert course("lessons", "new", "family-notes", "--into", ".", cwd=tmp_path).returncode == 0
    lesson = tmp_path / "family-notes" / "01-welcome.md"
    lesson.write_text("my own words\n")

    again = course("lessons", "new", "family-notes", "--into", ".", cwd=tmp_path)

    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        "course: family-notes already exists, and nothing in it was changed: choose another "
        "name, or move that folder away first"
    ]
    assert lesson.read_text() == "my own words\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["Family_Notes"], "'Family_Notes' cannot name a course folder: use lower-case letters"),
        (["family-notes", "--locale", "fr"], "unknown locale 'fr'; choose one of: en, es"),
        (["opioid-help"], "the title 'Opioid help' says 'Opioid', and the title shows in inboxes"),
    ],
    ids=["folder name", "locale", "revealing title"],
)
def test_a_new_sequence_that_cannot_be_made_is_refused_in_one_line(
    tmp_path: Path, args: list[str], said: str
) -> None:
    done = course("lessons", "new", *args, "--into", ".", cwd=tmp_path)

    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"course: {said}")
    assert list(tmp_path.iterdir()) == []


def test_preview_writes_the_email_with_its_heading_and_the_crisis_footer(tmp_path: Path) -> None:
    done = course(
        "lessons",
        "preview",
        str(PROJECT_ROOT / "lessons" / "family-guide"),
        "--lesson",
        "welcome",
        "--relationship",
        "parent",
        "--first-name",
        "Ana",
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    html = tmp_path / ".dev" / "previews" / "family-guide-welcome-parent-unsure.html"
    text = html.with_suffix(".txt")
    lines = done.stdout.splitlines()
    assert lines[0] == "Subject:   You are not alone in this"
    assert f"HTML: {html.relative_to(tmp_path)}" in lines
    assert f"Text: {text.relative_to(tmp_path)}" in lines
    assert f"Open: {html.as_uri()}" in lines
    page = html.read_text(encoding="utf-8")
    assert "Welcome: what this course is, and three numbers to save</h1>" in page
    assert "If someone is in danger right now" in page and 'href="tel:988"' in page
    assert "Hi Ana," in page and "Watching your child struggle" in page
    plain = text.read_text(encoding="utf-8")
    assert "IF SOMEONE IS IN DANGER RIGHT NOW" in plain and "1-800-662-4357" in plain


def test_preview_of_a_new_sequence_to_a_named_file(tmp_path: Path) -> None:
    assert course("lessons", "new", "family-notes", "--into", ".", cwd=tmp_path).returncode == 0

    done = course(
        "lessons",
        "preview",
        "family-notes",
        "--lesson",
        "02-words-that-help",
        "--substance",
        "alcohol",
        "--out",
        "look/words",
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    page = (tmp_path / "look" / "words.html").read_text(encoding="utf-8")
    assert "Words that help: putting the person first</h1>" in page
    assert "The same goes for drinking." in page
    # The text part: its preview line first (what an inbox shows), then the heading.
    text = (tmp_path / "look" / "words.txt").read_text(encoding="utf-8").splitlines()
    assert text[0] == "One small idea for this week, and an easy way to try it."
    assert text[2] == "Words that help: putting the person first"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--lesson", "nope"],
            "course: no lesson 'nope' in {course}; its lessons are: hello, middle, last",
        ),
        (
            ["--lesson", "hello", "--relationship", "mum"],
            "course: unknown relationship 'mum'; choose one of: parent, partner, child, "
            "sibling, friend, other",
        ),
        (
            ["--lesson", "hello", "--substance", "coffee"],
            "course: unknown substance 'coffee'; choose one of: opioids, alcohol, stimulants, "
            "several, unsure",
        ),
    ],
    ids=["lesson", "relationship", "substance"],
)
def test_preview_of_an_unknown_lesson_or_reader_names_the_choices(
    tmp_path: Path, mini_course: Path, args: list[str], said: str
) -> None:
    done = course("lessons", "preview", "mini-course", *args, cwd=tmp_path)

    assert done.returncode == 1
    assert done.stderr.splitlines() == [said.format(course="mini-course")]
    assert not (tmp_path / ".dev").exists(), "nothing was written"

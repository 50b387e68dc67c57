"""Staff-authored sequences: `course lessons check` refuses bad ones with file:line, and
`course lessons publish` stores versions."""

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlmodel import col, select

from course.authoring import check, load_sequence, publish
from course.cli import main
from course.db import engine_for, session_scope
from course.errors import LessonInvalid
from course.models import Lesson, SequenceVersion
from course.render import Layout, markdown_parser, markdown_to_text
from course.settings import PROJECT_ROOT
from tests.support import FIXTURES

FIXTURE = FIXTURES / "mini-course"
LAYOUT = Layout.load(PROJECT_ROOT / "lessons" / "_layout")


@pytest.fixture
def course_dir(tmp_path: Path) -> Path:
    target = tmp_path / "mini-course"
    shutil.copytree(FIXTURE, target)
    return target


def problems_of(path: Path) -> list[str]:
    with pytest.raises(LessonInvalid) as info:
        check(path, LAYOUT)
    return info.value.problems


def test_a_valid_sequence_loads_in_file_order(course_dir: Path):
    sequence, reports = check(course_dir, LAYOUT)
    assert [lesson.key for lesson in sequence.lessons] == ["hello", "middle", "last"]
    assert [lesson.delay_days for lesson in sequence.lessons] == [0, 2, 3]
    assert all(report.samples for report in reports)


def test_a_template_syntax_error_names_file_and_line(course_dir: Path):
    lesson = course_dir / "02-middle.md"
    lines = lesson.read_text().splitlines()
    lines.append("{% if first_name %}unclosed")
    lesson.write_text("\n".join(lines) + "\n")
    [problem] = problems_of(course_dir)
    assert problem.startswith(f"{lesson}:{len(lines)}:")
    assert "template error" in problem


def test_an_unknown_variable_names_file_and_line(course_dir: Path):
    lesson = course_dir / "03-last.md"
    text = lesson.read_text() + "\nHello {{ frist_name }}.\n"
    lesson.write_text(text)
    [problem] = problems_of(course_dir)
    line = text.splitlines().index("Hello {{ frist_name }}.") + 1
    assert problem.startswith(f"{lesson}:{line}:")
    assert "unknown name 'frist_name'" in problem


def test_an_unknown_variable_in_the_subject_is_refused(course_dir: Path):
    lesson = course_dir / "01-hello.md"
    lesson.write_text(
        lesson.read_text().replace("subject: Welcome", "subject: Hi {{ name }} welcome")
    )
    [problem] = problems_of(course_dir)
    assert problem.startswith(f"{lesson}:3:") and "'name'" in problem


def test_broken_front_matter_is_reported_with_its_line(course_dir: Path):
    lesson = course_dir / "02-middle.md"
    lesson.write_text(lesson.read_text().replace("delay_days: 2", "delay_days: [2"))
    [problem] = problems_of(course_dir)
    assert problem.startswith(f"{lesson}:")
    assert "not valid YAML" in problem


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("delay_days: 2", "delay_days: two", "delay_days must be a whole number"),
        ("preheader: The second lesson.", "preheader: ''", "preheader is missing"),
        ("subject: Lesson two of the mini course", "subject: " + "x" * 71, "keep it to 70"),
        ("subject: Lesson two of the mini course", "subject: READ THIS NOW", "all capitals"),
        (
            "    url: https://nida.nih.gov/",
            "    url: http://nida.nih.gov/",
            "must start with https://",
        ),
        (
            "sources:\n  - title: NIDA\n    url: https://nida.nih.gov/\n",
            "sources: []\n",
            "at least one source",
        ),
        ("module: act", "module: acting", "module must be one of"),
        ("delay_days: 2", "delay_days: 2\ndealy_days: 3", "unknown field 'dealy_days'"),
        ("key: middle", "key: other", "does not match the file name"),
    ],
)
def test_front_matter_mistakes_are_refused(course_dir: Path, old: str, new: str, message: str):
    lesson = course_dir / "02-middle.md"
    text = lesson.read_text()
    assert old in text
    lesson.write_text(text.replace(old, new))
    problems = problems_of(course_dir)
    assert any(message in p and p.startswith(str(lesson)) for p in problems), problems


def test_every_problem_is_reported_at_once(course_dir: Path):
    (course_dir / "01-hello.md").write_text("no front matter here\n")
    (course_dir / "notes.md").write_text("---\nkey: notes\n---\n")
    problems = problems_of(course_dir)
    assert any("01-hello.md:1: a lesson must start" in p for p in problems)
    assert any("notes.md:1: lesson files are named NN-key.md" in p for p in problems)


def test_check_command_prints_a_table_or_file_line_errors(course_dir: Path, capsys):
    assert main(["lessons", "check", str(course_dir)]) == 0
    out = capsys.readouterr().out
    assert (
        "01-hello.md" in out
        and "Lesson two of the mini course" in out
        and "All lessons are valid" in out
    )
    (course_dir / "03-last.md").write_text((course_dir / "03-last.md").read_text() + "{{ oops }}\n")
    assert main(["lessons", "check", str(course_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{course_dir / '03-last.md'}:" in err and "'oops'" in err


def test_check_command_exits_1_as_a_real_process(course_dir: Path):
    (course_dir / "sequence.toml").write_text('title = "Mini"\nlocale = "fr"\nsender_name = "X"\n')
    result = subprocess.run(
        [sys.executable, "-m", "course.cli", "lessons", "check", str(course_dir)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 1
    assert "sequence.toml:1: locale must be one of en, es" in result.stderr


def test_shipped_sequences_pass_the_check():
    for folder in sorted((PROJECT_ROOT / "lessons").glob("*/sequence.toml")):
        sequence, _ = check(folder.parent, LAYOUT)
        assert len(sequence.lessons) >= 3


def test_publishing_stores_versions_and_skips_unchanged_content(
    db_url: str, clock, course_dir: Path
):
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        first, created = publish(session, load_sequence(course_dir), clock)
        assert created and first.version == 1
    with session_scope(engine) as session:
        again, created = publish(session, load_sequence(course_dir), clock)
        assert not created and again.id == first.id
    lesson = course_dir / "03-last.md"
    lesson.write_text(lesson.read_text().replace("That is all.", "That is all for now."))
    with session_scope(engine) as session:
        second, created = publish(session, load_sequence(course_dir), clock)
        assert created and second.version == 2
    with session_scope(engine) as session:
        versions = session.exec(
            select(SequenceVersion).order_by(col(SequenceVersion.version))
        ).all()
        assert [v.version for v in versions] == [1, 2]
        bodies = session.exec(
            select(Lesson.body).where(Lesson.version_id == second.id, Lesson.position == 3)
        ).all()
        assert "That is all for now." in bodies[0]


def test_a_lesson_that_changes_the_first_name_is_refused_with_its_line(course_dir: Path):
    """A worker renders each lesson once and fills each reader's name in: a filter on the name
    would leave it unfillable, and the lesson would fail for every reader at send time."""
    lesson = course_dir / "02-middle.md"
    text = lesson.read_text() + "\n{% if first_name %}Dear {{ first_name|upper }},{% endif %}\n"
    lesson.write_text(text)
    [problem] = problems_of(course_dir)
    line = text.splitlines().index("{% if first_name %}Dear {{ first_name|upper }},{% endif %}")
    assert problem.startswith(f"{lesson}:{line + 1}:")
    assert "changes the reader's first name" in problem


def test_threads_rendering_at_once_each_get_a_whole_parser():
    # A worker's sending threads render their first lessons at the same moment. A shared
    # markdown-it parser builds its rule lists on first use, and a thread reading them half-built
    # failed the lesson ("none of the block rules matched"); so every thread has its own.
    lesson = (
        "# Today\n\nScared? Call 988 or [read this](https://example.org/a%20b).\n\n- Stay close\n"
    )
    start = threading.Barrier(8)
    parsers: list[object] = []
    texts: list[str] = []

    def render_one() -> None:
        start.wait()
        parsers.append(markdown_parser())
        texts.append(markdown_to_text(lesson))

    threads = [threading.Thread(target=render_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(parser) for parser in parsers}) == 8
    assert texts == [texts[0]] * 8 and "Call 988" in texts[0] and "Stay close" in texts[0]

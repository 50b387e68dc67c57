"""The lesson checker guards what readers get: plain words, person-first language, the crisis
footer and a way out in every email, honest links. Each refusal case has a broken fixture."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from course.cli import main
from course.errors import LessonInvalid
from course.lessons import SAMPLE_LINKS, check, personas
from course.render import Layout
from course.settings import PROJECT_ROOT

FIXTURE = Path(__file__).parent / "fixtures" / "mini-course"
LESSONS = PROJECT_ROOT / "lessons"
LAYOUT = Layout.load(LESSONS / "_layout")
SHIPPED = ["family-guide", "family-guide-es"]


@pytest.fixture
def course_dir(tmp_path: Path) -> Path:
    target = tmp_path / "mini-course"
    shutil.copytree(FIXTURE, target)
    return target


def problems_of(path: Path, layout: Layout = LAYOUT, language_dir: Path | None = None) -> list[str]:
    with pytest.raises(LessonInvalid) as info:
        check(path, layout, language_dir)
    return info.value.problems


def add_to_body(lesson: Path, text: str) -> int:
    """Append `text` to a lesson; return the line number it starts on."""
    before = lesson.read_text()
    if not before.endswith("\n"):
        before += "\n"
    lesson.write_text(before + "\n" + text + "\n")
    return before.count("\n") + 2


# --- the shipped courses ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict[str, tuple]:
    return {slug: check(LESSONS / slug, LAYOUT) for slug in SHIPPED}


@pytest.mark.parametrize("slug", SHIPPED)
def test_the_family_guides_read_at_grade_7_or_lower(shipped, slug: str):
    sequence, reports = shipped[slug]
    assert 14 <= len(sequence.lessons) <= 16
    assert sequence.max_grade == 7
    assert {lesson.module for lesson in sequence.lessons} == {"recognize", "act", "aftercare"}
    total_days = sum(lesson.delay_days for lesson in sequence.lessons)
    assert 35 <= total_days <= 49, "about six weeks"
    for report in reports:
        assert 0 < report.grade <= 7.0, (report.lesson.path.name, report.grade)
        assert 150 <= report.words <= 700, (report.lesson.path.name, report.words)


@pytest.mark.parametrize("slug", SHIPPED)
def test_every_lesson_for_every_persona_shows_footer_unsubscribe_and_sources(shipped, slug: str):
    _, reports = shipped[slug]
    crisis_url = SAMPLE_LINKS.base_url + "/crisis"
    for report in reports:
        assert len(report.samples) == len(personas()) == 60
        for sample in report.samples:
            page = html.unescape(sample.html)
            for part in (page, sample.text):
                for needle in ("911", "988", "1-800-662-4357", crisis_url):
                    assert needle in part
                assert SAMPLE_LINKS.unsubscribe_url in part
                assert SAMPLE_LINKS.postal_address in part
                for source in report.lesson.sources:
                    assert source["title"] in part
                    assert not source["url"] or source["url"] in part
            offers_switch = report.lesson.module in ("recognize", "act")
            assert (SAMPLE_LINKS.stage_url in page) is offers_switch
            assert (SAMPLE_LINKS.stage_url in sample.text) is offers_switch


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[^\W\d_]{4,}", text)}


@pytest.mark.parametrize("slug", SHIPPED)
def test_emails_do_not_look_like_spam(shipped, slug: str):
    """Simple HTML, text and HTML parts that say the same, no shouting, no hidden links."""
    _, reports = shipped[slug]
    for report in reports:
        for sample in report.samples[:: len(report.samples) // 6]:
            assert not sample.subject.isupper()
            assert "!!" not in sample.subject and "$" not in sample.subject
            assert "<img" not in sample.html and "<script" not in sample.html.lower()
            assert "http://" not in sample.html + sample.text
            assert len(sample.html.encode()) < 100_000, "Gmail clips messages over 102 KB"
            # The preheader is the inbox snippet, hidden in the body; everything else must match.
            hidden = r"<style.*?</style>|<title>.*?</title>|<span class=\"preheader\".*?</span>"
            visible = re.sub(hidden + r"|<[^>]+>", " ", sample.html, flags=re.S)
            only_text = _words(sample.text) - _words(html.unescape(sample.html))
            only_html = _words(html.unescape(visible)) - _words(sample.text)
            assert not only_text and not only_html, (report.lesson.path.name, only_text, only_html)


def test_stigmatizing_words_are_absent_from_shipped_lessons_and_word_lists_exist():
    for locale in ("en", "es"):
        listed = (LESSONS / "_language" / f"avoid.{locale}.txt").read_text(encoding="utf-8")
        assert re.search(r"^(addict|adicto) ->", listed, re.M)


# --- refusals ----------------------------------------------------------------------------------


def test_a_lesson_that_fails_for_one_persona_is_refused(course_dir: Path):
    lesson = course_dir / "02-middle.md"
    line = add_to_body(
        lesson,
        '{% if relationship == "sibling" and substance == "alcohol" %}{{ 1 // 0 }}{% endif %}',
    )
    [problem] = problems_of(course_dir)
    assert problem.startswith(f"{lesson}:{line}: fails to render for")
    assert "sibling" in problem and "alcohol" in problem


def test_hard_reading_is_refused_with_the_grade(course_dir: Path):
    lesson = course_dir / "02-middle.md"
    add_to_body(
        lesson,
        "Pharmacological interventions notwithstanding, comprehensive multidisciplinary "
        "rehabilitation necessitates individualized therapeutic considerations, "
        "interdisciplinary coordination and longitudinal psychosocial evaluation of "
        "comorbidities, consequently complicating administrative responsibilities.",
    )
    problems = problems_of(course_dir)
    assert any(
        p.startswith(f"{lesson}:") and "reading grade" in p and "above 8" in p for p in problems
    ), problems


def test_a_sequence_can_ask_for_plainer_reading_than_grade_8(course_dir: Path):
    toml = course_dir / "sequence.toml"
    toml.write_text(toml.read_text() + "max_grade = 1\n")
    problems = problems_of(course_dir)
    assert any("above 1;" in p for p in problems), problems
    toml.write_text(toml.read_text().replace("max_grade = 1", "max_grade = 9"))
    assert any(
        "max_grade must be a number above 0 and at most 8" in p for p in problems_of(course_dir)
    )


@pytest.mark.parametrize(
    ("sentence", "word"),
    [
        ("Your son is not just an addict.", "addict"),
        ("Junkies are people too.", "Junkies"),
        ("Her test came back dirty last week.", "came back dirty"),
        ("He has stayed   clean for a month.", "stayed   clean"),
        ("Substance abuse touches many homes.", "Substance abuse"),
        ("It is a substance-abuse program.", "substance-abuse"),
        ("She’s clean now, so relax.", "She’s clean"),
        ("Mark has been sober, he's dirty again.", "he's dirty"),
        ("They were clean for six months.", "clean for"),
        ("He has stayed clean for a month.", "stayed clean"),
        (
            "{% if first_name %}{{ first_name }}, your{% else %}Your{% endif %} alcoholic brother",
            "alcoholic",
        ),
    ],
)
def test_stigmatizing_words_are_refused_with_file_line_and_a_better_phrase(
    course_dir: Path, sentence: str, word: str
):
    lesson = course_dir / "03-last.md"
    line = add_to_body(lesson, sentence)
    [problem] = problems_of(course_dir)
    assert problem.startswith(f"{lesson}:{line}: {word!r} labels or shames people")
    assert "say '" in problem


def test_a_stigmatizing_word_in_the_subject_is_refused(course_dir: Path):
    lesson = course_dir / "03-last.md"
    lesson.write_text(
        lesson.read_text().replace("subject: The last lesson", "subject: Living with an addict")
    )
    [problem] = problems_of(course_dir)
    assert problem.startswith(f"{lesson}:3: 'addict'")


def test_marked_quotations_and_source_titles_may_use_the_words(course_dir: Path):
    lesson = course_dir / "03-last.md"
    add_to_body(
        lesson,
        textwrap.dedent(
            """\
            Some words hurt. People may hear {# quote #}"addict" or "junkie"{# end quote #} and feel
            judged. A neighbour once said:

            > "Once a junkie, always a junkie."

            That is not true. Recovery is common.
            """
        ),
    )
    lesson.write_text(
        lesson.read_text().replace(
            "  - title: CDC",
            "  - title: CDC\n  - title: Substance Abuse and Mental Health Services Administration",
        )
    )
    check(course_dir, LAYOUT)


def test_staff_can_extend_the_word_list(course_dir: Path, tmp_path: Path):
    language = tmp_path / "language"
    shutil.copytree(LESSONS / "_language", language)
    lesson = course_dir / "03-last.md"
    line = add_to_body(lesson, "Some people call it a nasty vice.")
    check(course_dir, LAYOUT, language)
    with (language / "avoid.en.txt").open("a") as words:
        words.write("nasty vice -> a health condition\n")
    [problem] = problems_of(course_dir, language_dir=language)
    assert problem.startswith(f"{lesson}:{line}: 'nasty vice'") and "a health condition" in problem


def test_a_malformed_word_list_names_its_line(course_dir: Path, tmp_path: Path):
    language = tmp_path / "language"
    language.mkdir()
    (language / "avoid.en.txt").write_text("# notes\naddict\n")
    [problem] = problems_of(course_dir, language_dir=language)
    assert problem.startswith(f"{language / 'avoid.en.txt'}:2: write the words to avoid")


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ("[the guide](http://example.org/guide)", "must start with https://"),
        ("[the guide](https://bit.ly/3abcd)", "link shortener"),
        ("[the file](ftp://example.org/guide.pdf)", "must start with https://"),
    ],
)
def test_links_must_be_https_and_not_shortened(course_dir: Path, link: str, message: str):
    lesson = course_dir / "02-middle.md"
    line = add_to_body(lesson, f"Read {link} when you can.")
    problems = problems_of(course_dir)
    assert any(p.startswith(f"{lesson}:{line}:") and message in p for p in problems), problems


def test_phone_and_https_links_are_fine(course_dir: Path):
    add_to_body(
        course_dir / "02-middle.md",
        "Call [988](tel:988) or read [the guide](https://www.samhsa.gov/find-help).",
    )
    check(course_dir, LAYOUT)


@pytest.mark.parametrize(
    ("cut", "missing"),
    [
        ("1-800-662-4357", "the crisis footer (SAMHSA National Helpline)"),
        ("{{ unsubscribe_url }}", "the unsubscribe link"),
        ("{{ base_url }}/crisis", "the link to the crisis page"),
    ],
)
def test_an_email_without_the_crisis_footer_or_unsubscribe_link_is_refused(
    course_dir: Path, tmp_path: Path, cut: str, missing: str
):
    layout_dir = tmp_path / "layout"
    shutil.copytree(LESSONS / "_layout", layout_dir)
    for name in ("email.html", "email.txt"):
        path = layout_dir / name
        assert cut in path.read_text()
        path.write_text(path.read_text().replace(cut, ""))
    problems = problems_of(course_dir, Layout.load(layout_dir))
    for part in ("HTML", "text"):
        assert any(f"the {part} part is missing {missing}" in p for p in problems), problems


def test_the_check_table_reports_grade_and_words(course_dir: Path, capsys):
    assert main(["lessons", "check", str(LESSONS / "family-guide")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("lesson"))
    assert header.split() == ["lesson", "subject", "day", "grade", "words", "warnings"]
    row = next(line for line in out.splitlines() if line.startswith("01-welcome.md"))
    assert re.search(r"\s\d\.\d\s+\d{3}\b", row), row
    assert "hardest reading grade" in out and "limit 7" in out


# --- readability works with no network -------------------------------------------------------

OFFLINE = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network is switched off for this test")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from course.readability import grade
en = grade("The cat sat on the mat. It was warm. We all went home for tea.", "en")
es = grade("El gato duerme en la casa. Hace calor. Todos vamos a comer.", "es")
hard = grade("Comprehensive multidisciplinary rehabilitation necessitates individualized considerations.", "en")
print(en, es, hard)
"""


def test_reading_grades_are_computed_with_the_network_switched_off(tmp_path: Path):
    env = {"HOME": str(tmp_path), "NLTK_DATA": str(tmp_path / "nltk"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    en, es, hard = (float(x) for x in result.stdout.split())
    assert en < 3 and es < 8 and hard > 12
    assert not (tmp_path / "nltk").exists()

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
from typing import Any

import pytest

from course.authoring import SAMPLE_LINKS, check, personas
from course.cli import main
from course.errors import LessonInvalid
from course.render import Layout
from course.settings import PROJECT_ROOT
from tests.support import FIXTURES

FIXTURE = FIXTURES / "mini-course"
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
def shipped() -> dict[str, tuple[Any, ...]]:
    return {slug: check(LESSONS / slug, LAYOUT) for slug in SHIPPED}


@pytest.mark.parametrize("slug", SHIPPED)
def test_the_family_guides_are_easy_to_read_by_their_languages_own_formula(shipped, slug: str):
    sequence, reports = shipped[slug]
    assert 14 <= len(sequence.lessons) <= 18
    assert {lesson.module for lesson in sequence.lessons} == {"recognize", "act", "aftercare"}
    total_days = sum(lesson.delay_days for lesson in sequence.lessons)
    assert 35 <= total_days <= 49, "about six weeks"
    for report in reports:
        where = (report.lesson.path.name, report.reading)
        if sequence.locale == "es":  # Szigriszt-Pazos on the INFLESZ scale: fairly easy
            assert sequence.min_ease == 65 and 65 <= report.reading <= 100, where
        else:  # Flesch-Kincaid
            assert sequence.max_grade == 7 and 0 < report.reading <= 7.0, where
        assert 150 <= report.words <= 700, (report.lesson.path.name, report.words)


@pytest.mark.parametrize("slug", SHIPPED)
def test_the_overdose_and_safety_lessons_are_never_skipped(shipped, slug: str):
    sequence, _ = shipped[slug]
    never = [lesson.key for lesson in sequence.lessons if lesson.never_skip]
    assert never == ["overdose-naloxone", "safety-first"]


@pytest.mark.parametrize("slug", SHIPPED)
def test_no_subject_or_preheader_of_a_shipped_lesson_gives_the_topic_away(shipped, slug: str):
    from course.authoring import wording

    sequence, reports = shipped[slug]
    assert not sequence.allow_revealing_subjects
    reveal = wording.load_reveal_list(
        wording.reveal_list_path(LESSONS / "_language", sequence.locale)
    )
    for report in reports:
        for sample in report.samples:
            for line in (sample.subject, sample.preheader):
                assert wording.revealing(line, reveal) == [], (report.lesson.path.name, line)


def inbox_preview(sample: Any, length: int = 200) -> tuple[str, str]:
    """What an inbox app shows under the subject, as they build it: the HTML part's text in
    order, invisible characters and all, cut at `length`; and a text-only app's first line."""
    body = re.sub(r".*?<body[^>]*>", "", sample.html, count=1, flags=re.S)
    shown = html.unescape(re.sub(r"<[^>]+>", " ", body))
    return shown[:length], sample.text.lstrip().splitlines()[0]


@pytest.mark.parametrize("slug", SHIPPED)
def test_the_inbox_preview_never_runs_on_into_the_heading(shipped, slug: str):
    # The heading may name an overdose or violence; after the preview line, a phone's lock screen
    # shows whatever text comes next unless blank space fills the rest of the preview.
    from course.authoring import wording

    sequence, reports = shipped[slug]
    reveal = wording.load_reveal_list(
        wording.reveal_list_path(LESSONS / "_language", sequence.locale)
    )
    for report in reports:
        sample = report.samples[0]
        html_preview, text_preview = inbox_preview(sample)
        assert wording.revealing(html_preview, reveal) == [], (
            report.lesson.path.name,
            html_preview,
        )
        heading = html.unescape(re.search(r"<h1[^>]*>(.*?)</h1>", sample.html, re.S).group(1))
        assert heading.strip() not in html_preview, (report.lesson.path.name, html_preview)
        assert text_preview in (sample.preheader, sample.subject), report.lesson.path.name


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
            assert SAMPLE_LINKS.stage_url is not None
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
        p.startswith(f"{lesson}:") and "Flesch-Kincaid grade" in p and "above 8" in p
        for p in problems
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
    problems = problems_of(course_dir)
    assert any(p.startswith(f"{lesson}:3: 'addict' labels or shames people") for p in problems)


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


@pytest.mark.parametrize(
    ("cut", "missing"),
    [
        (" y marque 2 para español", "the crisis footer (988: press 2 for Spanish)"),
        (", o envíe la palabra AYUDA por texto al", "the crisis footer (988: text AYUDA)"),
    ],
)
def test_a_spanish_email_without_988_in_spanish_is_refused(tmp_path: Path, cut: str, missing: str):
    layout_dir = tmp_path / "layout"
    shutil.copytree(LESSONS / "_layout", layout_dir)
    for name in ("email.html", "email.txt"):
        path = layout_dir / name
        assert cut in path.read_text()
        path.write_text(path.read_text().replace(cut, ""))
    problems = problems_of(LESSONS / "family-guide-es", Layout.load(layout_dir))
    assert any(f"missing {missing}" in p for p in problems), problems


def test_the_check_table_reports_grade_and_words(course_dir: Path, capsys):
    assert main(["lessons", "check", str(LESSONS / "family-guide")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("lesson"))
    assert header.split() == ["lesson", "subject", "day", "grade", "words", "notes"]
    row = next(line for line in out.splitlines() if line.startswith("01-welcome.md"))
    assert re.search(r"\s\d\.\d\s+\d{3}\b", row), row
    assert "Flesch-Kincaid grade: hardest" in out and "limit 7" in out
    overdose = next(line for line in out.splitlines() if line.startswith("05-"))
    assert "never skipped" in overdose


def test_the_spanish_table_reports_ease_on_the_inflesz_scale(capsys):
    assert main(["lessons", "check", str(LESSONS / "family-guide-es")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("lesson"))
    assert header.split() == ["lesson", "subject", "day", "ease", "words", "notes"]
    assert "Szigriszt-Pazos (INFLESZ): hardest" in out and "limit 65" in out


# --- readability works with no network -------------------------------------------------------

OFFLINE = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network is switched off for this test")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from course.authoring.readability import score
en = score("The cat sat on the mat. It was warm. We all went home for tea.", "en")
es = score("El gato duerme en la casa. Hace calor. Todos vamos a comer.", "es")
hard = score("Comprehensive multidisciplinary rehabilitation necessitates individualized considerations.", "en")
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
    assert en < 3 and es > 80 and hard > 12  # (Spanish: INFLESZ, higher is easier)
    assert not (tmp_path / "nltk").exists()


# --- discreet subjects, never-skip lessons, Spanish readability ---------------------------


@pytest.mark.parametrize(
    ("field", "value", "found"),
    [
        ("subject", "What to do in an overdose", "'overdose'"),
        ("subject", "Naloxone: get it this week", "'Naloxone'"),
        ("preheader", "If there is violence, threats or talk of suicide", "'violence', 'suicide'"),
        ("subject", "Relapsing is part of it", "'Relapsing'"),
        (
            "preheader",
            "{% if substance == 'alcohol' %}When drinking{% else %}When{% endif %} hurts",
            "'drinking'",
        ),
    ],
)
def test_a_subject_or_preheader_that_reveals_the_topic_is_refused(
    course_dir: Path, field: str, value: str, found: str
):
    lesson = course_dir / "02-middle.md"
    text = lesson.read_text()
    old = next(line for line in text.splitlines() if line.startswith(f"{field}:"))
    lesson.write_text(text.replace(old, f'{field}: "{value}"'))
    line = text.splitlines().index(old) + 1
    problems = problems_of(course_dir)
    assert any(
        p.startswith(f"{lesson}:{line}: the {field} says {found}") and "lock screen" in p
        for p in problems
    ), problems


def test_a_revealing_title_or_sender_name_is_refused_and_a_sequence_may_opt_out(
    course_dir: Path,
):
    toml = course_dir / "sequence.toml"
    toml.write_text(
        toml.read_text()
        .replace('title = "Mini course"', 'title = "Opioid help"')
        .replace('sender_name = "Homeward Test"', 'sender_name = "Addiction Support"')
    )
    problems = problems_of(course_dir)
    assert any(p.startswith(f"{toml}:1: the title says 'Opioid'") for p in problems), problems
    assert any("the sender_name says 'Addiction'" in p for p in problems), problems
    toml.write_text(toml.read_text() + "allow_revealing_subjects = true\n")
    check(course_dir, LAYOUT)  # a course meant to be open about its topic


def test_revealing_words_are_caught_without_their_accents_and_staff_can_add_some(
    course_dir: Path, tmp_path: Path
):
    language = tmp_path / "language"
    shutil.copytree(LESSONS / "_language", language)
    lesson = course_dir / "02-middle.md"
    lesson.write_text(lesson.read_text().replace("The second lesson.", "Our gardening club"))
    check(course_dir, LAYOUT, language)
    with (language / "reveal.en.txt").open("a") as words:
        words.write("garden*\n")
    [problem] = problems_of(course_dir, language_dir=language)
    assert "the preheader says 'gardening'" in problem
    from course.authoring import wording

    spanish = wording.load_reveal_list(wording.reveal_list_path(LESSONS / "_language", "es"))
    assert wording.revealing("Hablemos de la adiccion y la recaída", spanish) == [
        "adiccion",
        "recaída",
    ]


def test_never_skip_must_be_true_or_false_and_aftercare_lessons_come_last(course_dir: Path):
    hello = course_dir / "01-hello.md"
    hello.write_text(
        hello.read_text().replace("module: recognize", "module: recognize\nnever_skip: often")
    )
    problems = problems_of(course_dir)
    assert any("never_skip must be true or false" in p for p in problems), problems
    hello.write_text(hello.read_text().replace("never_skip: often", "never_skip: true"))
    check(course_dir, LAYOUT)
    (course_dir / "04-later.md").write_text(
        (course_dir / "02-middle.md").read_text().replace("key: middle", "key: later")
    )
    [problem] = problems_of(course_dir)
    assert (
        problem.startswith(f"{course_dir / '04-later.md'}:")
        and "keep aftercare lessons last" in problem
    )


def test_the_heading_inside_the_email_may_say_more_than_the_subject(course_dir: Path):
    lesson = course_dir / "02-middle.md"
    lesson.write_text(
        lesson.read_text().replace("module: act", "module: act\nheading: What to do in an overdose")
    )
    _, reports = check(course_dir, LAYOUT)
    sample = reports[1].samples[0]
    assert sample.subject == "Lesson two of the mini course"
    assert re.search(r"<h1[^>]*>What to do in an overdose</h1>", sample.html)
    # The text part's first line is what a plain-text inbox previews: the preheader, then the
    # heading that says more.
    assert sample.text.startswith("The second lesson.\n\nWhat to do in an overdose\n")


def test_spanish_is_scored_with_a_spanish_formula(course_dir: Path):
    toml = course_dir / "sequence.toml"
    toml.write_text(toml.read_text().replace('locale = "en"', 'locale = "es"'))
    for lesson in course_dir.glob("*.md"):  # a Spanish email must offer 988 in Spanish too
        lesson.write_text(lesson.read_text())
    hard = course_dir / "02-middle.md"
    add_to_body(
        hard,
        "La implementación multidisciplinaria de intervenciones farmacológicas individualizadas "
        "necesita consideraciones terapéuticas extraordinariamente complejas y administrativamente "
        "complicadísimas, particularmente considerando comorbilidades psiquiátricas "
        "concomitantes.",
    )
    problems = problems_of(course_dir)
    assert any(
        p.startswith(f"{hard}:") and "Szigriszt-Pazos (INFLESZ)" in p and "below 65" in p
        for p in problems
    ), problems
    assert not any("Flesch-Kincaid" in p for p in problems)
    toml.write_text(toml.read_text() + "max_grade = 7\n")
    assert any("a Spanish course sets min_ease instead" in p for p in problems_of(course_dir))


def test_phone_numbers_become_tap_to_call_links_that_never_wrap(course_dir: Path):
    add_to_body(course_dir / "02-middle.md", "Call 988, or the helpline at 1-800-662-4357.")
    _, reports = check(course_dir, LAYOUT)
    html_part = reports[1].samples[0].html
    for number, href in (("988", "tel:988"), ("1-800-662-4357", "tel:+18006624357")):
        assert re.search(
            rf'<a href="{re.escape(href)}" style="[^"]*white-space: nowrap[^"]*">{number}</a>',
            html_part,
        )
    assert "1-800-662-4357 (tel:" not in reports[1].samples[0].text


def test_a_name_that_uses_a_listed_word_is_fine_but_the_word_alone_is_not(course_dir: Path):
    lesson = course_dir / "03-last.md"
    add_to_body(lesson, "Groups such as Alcoholics Anonymous welcome families.")
    check(course_dir, LAYOUT)
    line = add_to_body(lesson, "Some alcoholics go to meetings.")
    [problem] = problems_of(course_dir)
    assert problem.startswith(f"{lesson}:{line}: 'alcoholics' labels or shames people")

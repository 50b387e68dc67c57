"""What `course lessons check` verifies of a sequence that loads: every lesson renders for every
persona, reads easily in its language, uses person-first words, keeps its subject and preheader
discreet, and every email carries the crisis footer, its sources and a way out.
"""

from __future__ import annotations

import html
import itertools
import re
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from jinja2.exceptions import SecurityError

from course.authoring import readability, wording
from course.authoring.load import (
    DEFAULT_LANGUAGE_DIR,
    LONG_LESSON_WORDS,
    LessonSpec,
    SequenceSpec,
    load_sequence,
)
from course.errors import LessonInvalid
from course.front_matter import field_line
from course.render import (
    LESSON_NAMES,
    NAME_STAND_IN,
    PERSONA_VALUES,
    Layout,
    Links,
    Persona,
    RenderedEmail,
    changes_the_name,
    markdown_to_text,
    render_email,
    render_template,
)


def personas() -> list[Persona]:
    """Every combination a lesson must render well for."""
    combos = itertools.product(
        ("", "Sam"), PERSONA_VALUES["relationship"], PERSONA_VALUES["substance"]
    )
    return [Persona(first_name=n, relationship=r, substance=s) for n, r, s in combos]


SAMPLE_LINKS = Links(
    unsubscribe_url="https://example.org/unsubscribe/sample",
    postal_address="Homeward, 1 Sample Street, Springfield",
    base_url="https://example.org",
    stage_url="https://example.org/stage/sample",
    preferences_url="https://example.org/preferences/sample",
    helpful_urls=(
        "https://example.org/helpful/sample/yes",
        "https://example.org/helpful/sample/no",
    ),
)


NO_STAGE_LINKS = replace(SAMPLE_LINKS, stage_url=None)


@dataclass
class LessonReport:
    lesson: LessonSpec
    samples: list[RenderedEmail]
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    # The hardest persona variant's score on its language's scale (course.authoring.readability).
    reading: float = 0.0
    words: int = 0  # the longest persona variant's body


def render_all(sequence: SequenceSpec, layout: Layout) -> list[LessonReport]:
    """Render each lesson for every persona; a runtime error is reported with its line."""
    reports = []
    for lesson in sequence.lessons:
        # Only lessons before aftercare carry the "my loved one has started treatment" link.
        links = SAMPLE_LINKS if lesson.module in ("recognize", "act") else NO_STAGE_LINKS
        samples: list[RenderedEmail] = []
        problems: list[str] = []
        for persona in personas():
            try:
                samples.append(
                    render_email(lesson.content(sequence), persona, links, layout=layout)
                )
                if persona.first_name:
                    # As a worker renders it: with a stand-in, the name filled in per reader.
                    stand_in = replace(persona, first_name=NAME_STAND_IN)
                    if changes_the_name(
                        render_email(lesson.content(sequence), stand_in, links, layout=layout)
                    ):
                        problems.append(
                            f"{lesson.path}:{_name_line(lesson)}: changes the reader's first "
                            f"name (a filter such as upper or title on first_name), for "
                            f"{persona}: write {{{{ first_name }}}} as it is"
                        )
                        break
            except SecurityError as exc:
                line = _template_line(exc, lesson)
                problems.append(
                    f"{lesson.path}:{line}: reaches inside the system ({exc}), which a lesson may "
                    f"not do: use only {', '.join(sorted(LESSON_NAMES))}"
                )
                break
            except Exception as exc:  # a template can fail in any way at run time
                line = _template_line(exc, lesson)
                problems.append(f"{lesson.path}:{line}: fails to render for {persona}: {exc}")
                break
        reports.append(LessonReport(lesson=lesson, samples=samples, problems=problems))
    return reports


def _name_line(lesson: LessonSpec) -> int:
    """The first line of the lesson file that does something to first_name, if one can be seen."""
    text = lesson.path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if re.search(r"first_name\s*[|.\[]", line):
            return number
    return lesson.body_line


def _template_line(exc: BaseException, lesson: LessonSpec) -> int:
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "<template>" and frame.lineno:
            return frame.lineno + lesson.body_line - 1
    return lesson.body_line


def check(
    path: Path, layout: Layout, language_dir: Path | None = None
) -> tuple[SequenceSpec, list[LessonReport]]:
    """Everything `course lessons check` verifies; raises LessonInvalid listing every problem.

    `language_dir` holds the lists of words to avoid and of words that reveal the topic
    (default: `lessons/_language`).
    """
    sequence = load_sequence(path)
    folder = language_dir or DEFAULT_LANGUAGE_DIR
    avoid = wording.load_avoid_list(wording.list_path(folder, sequence.locale))
    reveal = (
        ()
        if sequence.allow_revealing_subjects
        else wording.load_reveal_list(wording.reveal_list_path(folder, sequence.locale))
    )
    reports = render_all(sequence, layout)
    for report in reports:
        if not report.problems:
            review(report, sequence, avoid)
            report.problems.extend(p for p in _revealing_lines(report, reveal) if p)
    problems = [p for p in _revealing_names(sequence, reveal) if p]
    problems += [p for r in reports for p in r.problems]
    if problems:
        raise LessonInvalid(problems)
    return sequence, reports


_LOCK_SCREEN = (
    "shows on a lock screen and in a shared inbox; keep it neutral (the heading inside the "
    "email can say more), or set allow_revealing_subjects = true in sequence.toml"
)


def _revealing_lines(report: LessonReport, reveal: tuple[wording.Avoid, ...]) -> list[str]:
    """Subjects and preheaders that give the topic away, for any persona."""
    lesson = report.lesson
    return [
        _lock_screen_problem(lesson.path, name, values, reveal=reveal)
        for name in ("subject", "preheader")
        if (values := [getattr(sample, name) for sample in report.samples])
    ]


def _revealing_names(sequence: SequenceSpec, reveal: tuple[wording.Avoid, ...]) -> list[str]:
    """The title (the confirmation email's subject names it) and the sender name."""
    meta_path = sequence.path / "sequence.toml"
    return [
        _lock_screen_problem(meta_path, name, [value], reveal=reveal)
        for name, value in (("title", sequence.title), ("sender_name", sequence.sender_name))
    ]


def _lock_screen_problem(
    path: Path, name: str, values: list[str], *, reveal: tuple[wording.Avoid, ...]
) -> str:
    """The problem with field `name` of `path` if any of its `values` gives the topic away,
    naming each word once; "" if none does."""
    words: list[str] = []
    for value in values:
        for word in wording.revealing(value, reveal):
            if word.lower() not in (w.lower() for w in words):
                words.append(word)
    if not words:
        return ""
    line = field_line(path.read_text(encoding="utf-8"), name)
    listed = ", ".join(repr(w) for w in words)
    return f"{path}:{line}: the {name} says {listed}: it {_LOCK_SCREEN}"


# Link shorteners hide where a link goes; spam filters and wary readers distrust them.
SHORTENERS = frozenset(
    [
        "bit.ly",
        "tinyurl.com",
        "t.co",
        "goo.gl",
        "ow.ly",
        "is.gd",
        "buff.ly",
        "rebrand.ly",
        "cutt.ly",
        "shorturl.at",
        "tiny.cc",
        "t.ly",
        "rb.gy",
        "lnkd.in",
        "s.id",
        "bl.ink",
    ]
)
_HREF = re.compile(r'href="([^"]*)"')
_SCHEMES_OK = ("https://", "mailto:", "tel:", "sms:")
# What every email must show, whatever a layout edit does: the crisis footer and a way out.
REQUIRED = {
    SAMPLE_LINKS.preferences_url or "": "the link to pause or change the emails",
    "911": "the crisis footer (911)",
    "988": "the crisis footer (988 Suicide & Crisis Lifeline)",
    "1-800-662-4357": "the crisis footer (SAMHSA National Helpline)",
    SAMPLE_LINKS.base_url + "/crisis": "the link to the crisis page",
    SAMPLE_LINKS.unsubscribe_url: "the unsubscribe link",
}
# And in a language's own words: 988 answers in Spanish when the caller presses 2, or by text.
REQUIRED_IN = {
    "es": {
        "marque 2": "the crisis footer (988: press 2 for Spanish)",
        "AYUDA": "the crisis footer (988: text AYUDA)",
    },
}


def review(report: LessonReport, sequence: SequenceSpec, avoid: tuple[wording.Avoid, ...]) -> None:
    """The quality rules on a lesson that renders: words, reading grade, footer, links."""
    lesson = report.lesson
    source_text = lesson.path.read_text(encoding="utf-8")
    for finding in wording.find(_searchable(source_text, lesson.body_line), avoid):
        report.problems.append(
            f"{lesson.path}:{finding.line}: {finding.found!r} labels or shames people; "
            f"say {finding.instead!r} (or mark it as a quotation)"
        )

    scale = readability.scale(sequence.locale)
    scores, words = [], []
    for persona in personas():
        text = markdown_to_text(render_template(lesson.body, persona.as_context()))
        scores.append(readability.score(text, sequence.locale))
        words.append(readability.word_count(text))
    report.reading, report.words = scale.hardest(scores), max(words)
    limit = sequence.reading_limit
    if not scale.easier_than(report.reading, limit):
        report.problems.append(
            f"{lesson.path}:{lesson.body_line}: {scale.name} {report.reading:.1f} is "
            f"{'below' if scale.higher_is_easier else 'above'} {limit:g}; use shorter sentences "
            "and everyday words"
        )
    elif scale.higher_is_easier and report.reading < readability.AIM_EASE:
        report.warnings.append(
            f"{scale.name} {report.reading:.1f}: aim for {readability.AIM_EASE:g} or more"
        )
    elif not scale.higher_is_easier and report.reading > readability.AIM_GRADE:
        report.warnings.append(
            f"grade {report.reading:.1f}: aim for {readability.AIM_GRADE:g} or lower"
        )
    if report.words > LONG_LESSON_WORDS:
        report.warnings.append(f"{report.words} words: long to read on a phone")

    report.problems.extend(_email_problems(report, source_text, sequence.locale))


def _searchable(source_text: str, body_line: int) -> str:
    """The words a reader sees: subject, preheader and body. Source titles (official names such
    as the Substance Abuse and Mental Health Services Administration) are left out."""
    lines = source_text.split("\n")
    keep = ("subject:", "preheader:")
    return "\n".join(
        line if number >= body_line - 1 or line.startswith(keep) else ""
        for number, line in enumerate(lines)
    )


def _email_problems(report: LessonReport, source_text: str, locale: str) -> list[str]:
    lesson = report.lesson
    problems: list[str] = []
    required = {**REQUIRED, **REQUIRED_IN.get(locale, {})}
    for sample in report.samples:
        for needle, what in required.items():
            for part, content in (("HTML", sample.html), ("text", sample.text)):
                if needle not in content:
                    problems.append(f"{lesson.path}:1: the {part} part is missing {what}")
        for source in lesson.sources:
            title = source["title"]
            if title not in html.unescape(sample.html) or title not in sample.text:
                problems.append(f"{lesson.path}:1: the email does not show the source {title!r}")
        links = set(_HREF.findall(sample.html)) | set(re.findall(r"http://\S+", sample.text))
        for link in sorted(links):
            host = re.sub(r"^[a-z]+://", "", link).split("/")[0].lower()
            if not link.startswith(_SCHEMES_OK):
                problems.append(
                    f"{lesson.path}:{_line_of(source_text, link)}: link {link!r} must start "
                    "with https://"
                )
            elif host in SHORTENERS or host.removeprefix("www.") in SHORTENERS:
                problems.append(
                    f"{lesson.path}:{_line_of(source_text, link)}: link {link!r} uses a link "
                    "shortener; give the full address"
                )
        if problems:
            break  # one persona is enough to show a layout or link problem
    return list(dict.fromkeys(problems))


def _line_of(text: str, needle: str) -> int:
    index = text.find(needle)
    return text.count("\n", 0, index) + 1 if index >= 0 else 1

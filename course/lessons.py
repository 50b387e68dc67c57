"""Load and validate a lesson sequence folder, and publish it as a new version in the database.

Every problem is reported as `file:line: message`, all at once, so a counsellor can fix a
sequence in one pass. Nothing is written unless the whole sequence is valid.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import re
import tomllib
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError, meta, nodes
from sqlalchemy import func
from sqlmodel import Session, select

from course import readability, wording
from course.clock import Clock
from course.errors import LessonInvalid, UnknownSequence
from course.models import Lesson, SequenceVersion
from course.render import (
    LESSON_NAMES,
    NAME_STAND_IN,
    PERSONA_VALUES,
    Content,
    Layout,
    Links,
    Persona,
    RenderedEmail,
    _lesson_env,
    changes_the_name,
    compile_lesson,
    markdown_to_text,
    render_email,
    render_template,
)
from course.settings import PROJECT_ROOT

DEFAULT_LANGUAGE_DIR = PROJECT_ROOT / "lessons" / "_language"

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
FILE_RE = re.compile(r"^(\d{2,3})-([a-z0-9][a-z0-9-]*)\.md$")
LOCALES = ("en", "es")
MODULES = ("recognize", "act", "aftercare")
MAX_SUBJECT = 70
MAX_HEADING = 120
# How hard a lesson's plain text may be to read: see course.readability.
MAX_GRADE = readability.MAX_GRADE
LONG_LESSON_WORDS = 700
FRONT_MATTER_FIELDS = {
    "key",
    "subject",
    "heading",
    "preheader",
    "delay_days",
    "module",
    "never_skip",
    "sources",
}


@dataclass
class LessonSpec:
    path: Path
    position: int
    key: str
    subject: str
    preheader: str
    delay_days: int
    module: str
    body: str
    body_line: int  # line of the file where the body starts, for error messages
    sources: list[dict[str, str]] = field(default_factory=list)
    # Sent to everyone, whatever the reader switches to later (overdose, safety).
    never_skip: bool = False
    # The heading inside the email, which may say more than the subject; empty: the subject.
    heading: str = ""

    def content(self, sequence: SequenceSpec) -> Content:
        return Content(
            subject=self.subject,
            heading=self.heading,
            preheader=self.preheader,
            body=self.body,
            sources=self.sources,
            module=self.module,
            sender_name=sequence.sender_name,
            locale=sequence.locale,
        )


@dataclass
class SequenceSpec:
    path: Path
    slug: str
    title: str
    description: str
    locale: str
    sender_name: str
    lessons: list[LessonSpec]
    content_hash: str
    max_grade: float = MAX_GRADE  # English
    min_ease: float = readability.MIN_EASE  # Spanish
    # Whether subjects, preheaders, the title and the sender name may name the topic.
    allow_revealing_subjects: bool = False

    @property
    def reading_limit(self) -> float:
        return self.min_ease if readability.scale(self.locale).higher_is_easier else self.max_grade


def split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str, int]:
    """(front matter, body, line where the body starts) of a lesson file."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise LessonInvalid([f"{path}:1: a lesson must start with a '---' line, then front matter"])
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            raw = "".join(lines[1:index])
            body = "".join(lines[index + 1 :])
            break
    else:
        raise LessonInvalid([f"{path}:1: the front matter is never closed with a '---' line"])
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.MarkedYAMLError as exc:
        line = (exc.problem_mark.line + 2) if exc.problem_mark else 2
        raise LessonInvalid(
            [f"{path}:{line}: front matter is not valid YAML: {exc.problem}"]
        ) from exc
    if not isinstance(data, dict):
        raise LessonInvalid([f"{path}:2: front matter must be 'name: value' lines"])
    return data, body, index + 2


def _field_line(text: str, name: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(f"{name}:"):
            return number
    return 1


def load_lesson(path: Path, position: int, key_from_name: str) -> LessonSpec:
    text = path.read_text(encoding="utf-8")
    data, body, body_line = split_front_matter(text, path)
    problems: list[str] = []

    def where(name: str) -> str:
        return f"{path}:{_field_line(text, name)}"

    for unknown in sorted(set(data) - FRONT_MATTER_FIELDS):
        problems.append(
            f"{where(unknown)}: unknown field {unknown!r} "
            f"(expected: {', '.join(sorted(FRONT_MATTER_FIELDS))})"
        )
    key = data.get("key", key_from_name)
    if not isinstance(key, str) or not SLUG_RE.match(key):
        problems.append(f"{where('key')}: key must be lower-case letters, digits and dashes")
    elif key != key_from_name:
        problems.append(
            f"{where('key')}: key {key!r} does not match the file name ({key_from_name!r})"
        )
    subject = data.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        problems.append(f"{where('subject')}: subject is missing")
        subject = ""
    elif "\n" in subject or "\r" in subject:
        problems.append(f"{where('subject')}: subject must be one line")
    elif len(subject) > MAX_SUBJECT:
        problems.append(
            f"{where('subject')}: subject is {len(subject)} characters; keep it to {MAX_SUBJECT} "
            "so phones show it whole"
        )
    elif subject.isupper():
        problems.append(f"{where('subject')}: subject is all capitals; spam filters dislike that")
    heading = data.get("heading", "")
    if not isinstance(heading, str) or "\n" in heading or "\r" in heading:
        problems.append(f"{where('heading')}: heading must be one line of text")
        heading = ""
    elif len(heading) > MAX_HEADING:
        problems.append(
            f"{where('heading')}: heading is {len(heading)} characters; keep it to {MAX_HEADING}"
        )
    never_skip = data.get("never_skip", False)
    if not isinstance(never_skip, bool):
        problems.append(f"{where('never_skip')}: never_skip must be true or false")
        never_skip = False
    preheader = data.get("preheader")
    if not isinstance(preheader, str) or not preheader.strip():
        problems.append(
            f"{where('preheader')}: preheader is missing (the line inboxes show after the subject)"
        )
        preheader = ""
    delay = data.get("delay_days")
    if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
        problems.append(f"{where('delay_days')}: delay_days must be a whole number, 0 or more")
        delay = 0
    module = data.get("module", "")
    if module and module not in MODULES:
        problems.append(f"{where('module')}: module must be one of {', '.join(MODULES)}")
    sources = _sources(data.get("sources"), where("sources"), problems)
    for name, value in (("subject", subject), ("heading", heading), ("preheader", preheader)):
        problems.extend(_template_problems(value, str(path), _field_line(text, name) - 1))
    problems.extend(_template_problems(body, str(path), body_line - 1))
    if problems:
        raise LessonInvalid(problems)
    return LessonSpec(
        path=path,
        position=position,
        key=key,
        subject=subject,
        preheader=preheader,
        delay_days=delay,
        module=module or "",
        body=body,
        body_line=body_line,
        sources=sources,
        never_skip=never_skip,
        heading=heading.strip(),
    )


def _sources(raw: Any, where: str, problems: list[str]) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: sources must list at least one source (title, and url if any)")
        return []
    sources = []
    for item in raw:
        if isinstance(item, str):
            item = {"title": item}
        if not isinstance(item, dict) or not isinstance(item.get("title"), str):
            problems.append(f"{where}: each source needs a title")
            continue
        url = item.get("url")
        if url is not None and (not isinstance(url, str) or not url.startswith("https://")):
            problems.append(f"{where}: source link {url!r} must start with https://")
            continue
        sources.append({"title": item["title"], "url": url or ""})
    return sources


def _template_problems(source: str, where: str, line_offset: int) -> list[str]:
    """Syntax errors and names a lesson may not use, with the line they are on."""
    try:
        ast = _lesson_env.parse(source)
    except TemplateSyntaxError as exc:
        return [f"{where}:{(exc.lineno or 1) + line_offset}: template error: {exc.message}"]
    unknown = meta.find_undeclared_variables(ast) - LESSON_NAMES
    problems = []
    for name_node in ast.find_all(nodes.Name):
        if name_node.name in unknown and name_node.ctx == "load":
            problems.append(
                f"{where}:{name_node.lineno + line_offset}: unknown name {name_node.name!r} "
                f"(a lesson can use: {', '.join(sorted(LESSON_NAMES))})"
            )
            unknown.discard(name_node.name)
    return problems


def load_sequence(path: Path) -> SequenceSpec:
    """Read and validate a sequence folder; raise LessonInvalid listing every problem."""
    path = Path(path)
    if not path.is_dir():
        raise LessonInvalid([f"{path}: no such folder"])
    problems: list[str] = []
    slug = path.name
    if not SLUG_RE.match(slug):
        problems.append(f"{path}: folder name must be lower-case letters, digits and dashes")
    meta_path = path / "sequence.toml"
    info: dict[str, Any] = {}
    if not meta_path.is_file():
        problems.append(
            f"{meta_path}:1: missing sequence.toml (title, description, locale, sender_name)"
        )
    else:
        try:
            info = tomllib.loads(meta_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            line = re.search(r"line (\d+)", str(exc))
            problems.append(f"{meta_path}:{line.group(1) if line else 1}: {exc}")
    for name in ("title", "sender_name"):
        if info and not (isinstance(info.get(name), str) and info[name].strip()):
            problems.append(f"{meta_path}:1: {name} is missing")
    locale = info.get("locale", "en")
    if locale not in LOCALES:
        problems.append(f"{meta_path}:1: locale must be one of {', '.join(LOCALES)}")
    sender = str(info.get("sender_name", ""))
    if any(ch in sender for ch in '\r\n<>"') or len(sender) > 80:
        problems.append(f"{meta_path}:1: sender_name must be one short line without < > or quotes")

    meta_text = meta_path.read_text(encoding="utf-8") if meta_path.is_file() else ""

    def meta_line(name: str) -> str:
        return f"{meta_path}:{_field_line(meta_text, name)}"

    spanish = readability.scale(locale).higher_is_easier
    max_grade = info.get("max_grade", MAX_GRADE)
    if spanish and "max_grade" in info:
        problems.append(
            f"{meta_line('max_grade')}: max_grade is an English reading grade; a Spanish course "
            f"sets min_ease instead ({readability.INFLESZ.name}, {readability.MIN_EASE:g} or more)"
        )
    elif not _number(max_grade) or not 0 < max_grade <= MAX_GRADE:
        problems.append(
            f"{meta_line('max_grade')}: max_grade must be a number above 0 and at most "
            f"{MAX_GRADE:g}"
        )
        max_grade = MAX_GRADE
    min_ease = info.get("min_ease", readability.MIN_EASE)
    if not spanish and "min_ease" in info:
        problems.append(
            f"{meta_line('min_ease')}: min_ease is for Spanish courses; an English course sets "
            "max_grade instead"
        )
    elif not _number(min_ease) or not readability.MIN_EASE <= min_ease <= 100:
        problems.append(
            f"{meta_line('min_ease')}: min_ease must be a number from {readability.MIN_EASE:g} "
            "(fairly easy) to 100"
        )
        min_ease = readability.MIN_EASE
    allow_revealing = info.get("allow_revealing_subjects", False)
    if not isinstance(allow_revealing, bool):
        problems.append(f"{meta_line('allow_revealing_subjects')}: must be true or false")
        allow_revealing = False

    lessons: list[LessonSpec] = []
    files = sorted(p for p in path.glob("*.md") if not p.name.startswith("_"))
    if not files:
        problems.append(f"{path}: no lessons (files named like 01-welcome.md)")
    seen_keys: dict[str, Path] = {}
    for position, file in enumerate(files, start=1):
        match = FILE_RE.match(file.name)
        if not match:
            problems.append(f"{file}:1: lesson files are named NN-key.md, like 01-welcome.md")
            continue
        try:
            lesson = load_lesson(file, position, match.group(2))
        except LessonInvalid as exc:
            problems.extend(exc.problems)
            continue
        if lesson.key in seen_keys:
            problems.append(
                f"{file}:1: key {lesson.key!r} is already used by {seen_keys[lesson.key].name}"
            )
        seen_keys[lesson.key] = file
        lessons.append(lesson)
    problems.extend(_aftercare_last(lessons))
    if problems:
        raise LessonInvalid(problems)
    digest = hashlib.sha256()
    for file in [meta_path, *files]:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return SequenceSpec(
        path=path,
        slug=slug,
        title=info["title"].strip(),
        description=str(info.get("description", "")).strip(),
        locale=locale,
        sender_name=sender.strip(),
        lessons=lessons,
        content_hash=digest.hexdigest(),
        max_grade=float(max_grade),
        min_ease=float(min_ease),
        allow_revealing_subjects=allow_revealing,
    )


def _aftercare_last(lessons: list[LessonSpec]) -> list[str]:
    """A reader who says treatment has started jumps forward to the aftercare lessons, so
    nothing but aftercare may come after the first of them."""
    first = next((lesson for lesson in lessons if lesson.module == "aftercare"), None)
    if first is None:
        return []
    return [
        f"{lesson.path}:{_field_line(lesson.path.read_text(encoding='utf-8'), 'module')}: a "
        f"{lesson.module or 'lesson without a module'} comes after the aftercare lesson "
        f"{first.path.name}; keep aftercare lessons last, so the switch to aftercare only "
        "moves forward"
        for lesson in lessons[lessons.index(first) :]
        if lesson.module != "aftercare"
    ]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
)


NO_STAGE_LINKS = replace(SAMPLE_LINKS, stage_url=None)


@dataclass
class LessonReport:
    lesson: LessonSpec
    samples: list[RenderedEmail]
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    # The hardest persona variant's score on its language's scale (course.readability).
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
                samples.append(render_email(lesson.content(sequence), persona, links, layout))
                if persona.first_name:
                    # As a worker renders it: with a stand-in, the name filled in per reader.
                    stand_in = replace(persona, first_name=NAME_STAND_IN)
                    if changes_the_name(
                        render_email(lesson.content(sequence), stand_in, links, layout)
                    ):
                        problems.append(
                            f"{lesson.path}:{_name_line(lesson)}: changes the reader's first "
                            f"name (a filter such as upper or title on first_name), for "
                            f"{persona}: write {{{{ first_name }}}} as it is"
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
            report.problems.extend(_revealing_lines(report, reveal))
    problems = _revealing_names(sequence, reveal) + [p for r in reports for p in r.problems]
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
    text = lesson.path.read_text(encoding="utf-8")
    problems = []
    for name in ("subject", "preheader"):
        words: list[str] = []
        for sample in report.samples:
            for word in wording.revealing(getattr(sample, name), reveal):
                if word.lower() not in (w.lower() for w in words):
                    words.append(word)
        if words:
            listed = ", ".join(repr(w) for w in words)
            problems.append(
                f"{lesson.path}:{_field_line(text, name)}: the {name} says {listed}: it "
                + _LOCK_SCREEN
            )
    return problems


def _revealing_names(sequence: SequenceSpec, reveal: tuple[wording.Avoid, ...]) -> list[str]:
    """The title (the confirmation email's subject names it) and the sender name."""
    meta_path = sequence.path / "sequence.toml"
    text = meta_path.read_text(encoding="utf-8")
    problems = []
    for name, value in (("title", sequence.title), ("sender_name", sequence.sender_name)):
        words = wording.revealing(value, reveal)
        if words:
            listed = ", ".join(repr(w) for w in words)
            problems.append(
                f"{meta_path}:{_field_line(text, name)}: the {name} says {listed}: it "
                + _LOCK_SCREEN
            )
    return problems


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


def publish(session: Session, sequence: SequenceSpec, clock: Clock) -> tuple[SequenceVersion, bool]:
    """Store `sequence` as its next version; (version, created). Publishing unchanged content
    again returns the current version instead of making a copy."""
    latest = _newest(session, sequence.slug)
    if latest is not None and latest.content_hash == sequence.content_hash:
        return latest, False
    version = SequenceVersion(
        slug=sequence.slug,
        version=(latest.version + 1) if latest else 1,
        title=sequence.title,
        description=sequence.description,
        locale=sequence.locale,
        sender_name=sequence.sender_name,
        content_hash=sequence.content_hash,
        published_at=clock.now(),
    )
    session.add(version)
    session.flush()
    session.add_all(
        Lesson(
            version_id=version.id,
            position=lesson.position,
            key=lesson.key,
            subject=lesson.subject,
            preheader=lesson.preheader,
            delay_days=lesson.delay_days,
            module=lesson.module,
            never_skip=lesson.never_skip,
            heading=lesson.heading,
            body=lesson.body,
            sources=lesson.sources,
        )
        for lesson in sequence.lessons
    )
    for lesson in sequence.lessons:
        compile_lesson(lesson.body)  # fail now, not in a worker, if the template cannot compile
    return version, True


def _newest(session: Session, slug: str) -> SequenceVersion | None:
    return session.exec(
        select(SequenceVersion)
        .where(SequenceVersion.slug == slug)
        .order_by(SequenceVersion.version.desc())  # type: ignore[attr-defined]
        .limit(1)
    ).first()


def latest_version(session: Session, slug: str) -> SequenceVersion:
    version = _newest(session, slug)
    if version is None:
        raise UnknownSequence(f"There is no course called {slug!r}.")
    return version


def published(session: Session) -> list[tuple[SequenceVersion, int]]:
    """The newest version of every sequence with its number of lessons."""
    newest = (
        select(SequenceVersion.slug, func.max(SequenceVersion.version).label("v"))
        .group_by(SequenceVersion.slug)
        .subquery()
    )
    rows = session.exec(
        select(SequenceVersion, func.count(Lesson.id))  # type: ignore[arg-type]
        .join(
            newest,
            (newest.c.slug == SequenceVersion.slug) & (newest.c.v == SequenceVersion.version),
        )
        .join(Lesson, Lesson.version_id == SequenceVersion.id)
        .group_by(SequenceVersion.id)
        .order_by(SequenceVersion.slug)
    ).all()
    return [(v, n) for v, n in rows]

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
# Flesch-Kincaid grade of a lesson's plain text; a sequence may set a lower `max_grade`.
MAX_GRADE = 8.0
AIM_GRADE = 7.0
LONG_LESSON_WORDS = 700
FRONT_MATTER_FIELDS = {"key", "subject", "preheader", "delay_days", "module", "sources"}


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

    def content(self, sequence: SequenceSpec) -> Content:
        return Content(
            subject=self.subject,
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
    max_grade: float = MAX_GRADE


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
    for name, value in (("subject", subject), ("preheader", preheader)):
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

    max_grade = info.get("max_grade", MAX_GRADE)
    if (
        not isinstance(max_grade, int | float)
        or isinstance(max_grade, bool)
        or not 0 < max_grade <= MAX_GRADE
    ):
        problems.append(
            f"{meta_path}:{_field_line(meta_path.read_text(encoding='utf-8'), 'max_grade')}: "
            f"max_grade must be a number above 0 and at most {MAX_GRADE:g}"
        )
        max_grade = MAX_GRADE

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
)


NO_STAGE_LINKS = replace(SAMPLE_LINKS, stage_url=None)


@dataclass
class LessonReport:
    lesson: LessonSpec
    samples: list[RenderedEmail]
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    grade: float = 0.0  # the hardest persona variant's Flesch-Kincaid grade
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

    `language_dir` holds the lists of words to avoid (default: `_language` next to `_layout`).
    """
    sequence = load_sequence(path)
    avoid = wording.load_avoid_list(
        wording.list_path(language_dir or DEFAULT_LANGUAGE_DIR, sequence.locale)
    )
    reports = render_all(sequence, layout)
    for report in reports:
        if not report.problems:
            review(report, sequence, avoid)
    problems = [p for r in reports for p in r.problems]
    if problems:
        raise LessonInvalid(problems)
    return sequence, reports


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
_SCHEMES_OK = ("https://", "mailto:", "tel:")
# What every email must show, whatever a layout edit does: the crisis footer and a way out.
REQUIRED = {
    "911": "the crisis footer (911)",
    "988": "the crisis footer (988 Suicide & Crisis Lifeline)",
    "1-800-662-4357": "the crisis footer (SAMHSA National Helpline)",
    SAMPLE_LINKS.base_url + "/crisis": "the link to the crisis page",
    SAMPLE_LINKS.unsubscribe_url: "the unsubscribe link",
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

    grades, words = [], []
    for persona in personas():
        text = markdown_to_text(render_template(lesson.body, persona.as_context()))
        grades.append(readability.grade(text, sequence.locale))
        words.append(readability.word_count(text))
    report.grade, report.words = max(grades), max(words)
    if report.grade > sequence.max_grade:
        report.problems.append(
            f"{lesson.path}:{lesson.body_line}: reading grade {report.grade:.1f} is above "
            f"{sequence.max_grade:g}; use shorter sentences and everyday words"
        )
    elif report.grade > AIM_GRADE:
        report.warnings.append(f"grade {report.grade:.1f}: aim for {AIM_GRADE:g} or lower")
    if report.words > LONG_LESSON_WORDS:
        report.warnings.append(f"{report.words} words: long to read on a phone")

    report.problems.extend(_email_problems(report, source_text))


def _searchable(source_text: str, body_line: int) -> str:
    """The words a reader sees: subject, preheader and body. Source titles (official names such
    as the Substance Abuse and Mental Health Services Administration) are left out."""
    lines = source_text.split("\n")
    keep = ("subject:", "preheader:")
    return "\n".join(
        line if number >= body_line - 1 or line.startswith(keep) else ""
        for number, line in enumerate(lines)
    )


def _email_problems(report: LessonReport, source_text: str) -> list[str]:
    lesson = report.lesson
    problems: list[str] = []
    for sample in report.samples:
        for needle, what in REQUIRED.items():
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

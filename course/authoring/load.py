"""Read a lesson sequence folder (`sequence.toml` and one Markdown file per lesson) into specs,
refusing anything malformed.

Every problem is reported as `file:line: message`, all at once, so a counsellor can fix a
sequence in one pass.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes

from course.authoring import readability
from course.errors import LessonInvalid
from course.front_matter import field_line, split_front_matter
from course.plan import AFTER_CONVERSATION, ANCHORS, BEFORE_CONVERSATION
from course.render import LESSON_NAMES, Content, lesson_environment
from course.settings import PROJECT_ROOT

DEFAULT_LANGUAGE_DIR = PROJECT_ROOT / "lessons" / "_language"

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
FILE_RE = re.compile(r"^(\d{2,3})-([a-z0-9][a-z0-9-]*)\.md$")
LOCALES = ("en", "es")
MODULES = ("recognize", "act", "aftercare")
MAX_SUBJECT = 70
MAX_HEADING = 120
# How hard a lesson's plain text may be to read: see course.authoring.readability.
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
    "anchor",
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
    # How a date the reader sets moves this lesson: see course.plan.
    anchor: str = ""
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


def load_lesson(path: Path, position: int, key_from_name: str) -> LessonSpec:
    text = path.read_text(encoding="utf-8")
    data, body, body_line = split_front_matter(text, path)
    problems: list[str] = []

    def where(name: str) -> str:
        return f"{path}:{field_line(text, name)}"

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
    anchor = data.get("anchor", "")
    if anchor not in ANCHORS:
        problems.append(
            f"{where('anchor')}: anchor must be {BEFORE_CONVERSATION} (the lesson prepares for a "
            f"conversation the reader plans) or {AFTER_CONVERSATION} (a check-in the day after)"
        )
        anchor = ""
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
        problems.extend(_template_problems(value, str(path), field_line(text, name) - 1))
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
        anchor=anchor,
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
        ast = lesson_environment().parse(source)
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
        return f"{meta_path}:{field_line(meta_text, name)}"

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
    problems.extend(_one_check_in(lessons))
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
        f"{lesson.path}:{field_line(lesson.path.read_text(encoding='utf-8'), 'module')}: a "
        f"{lesson.module or 'lesson without a module'} comes after the aftercare lesson "
        f"{first.path.name}; keep aftercare lessons last, so the switch to aftercare only "
        "moves forward"
        for lesson in lessons[lessons.index(first) :]
        if lesson.module != "aftercare"
    ]


def _one_check_in(lessons: list[LessonSpec]) -> list[str]:
    """A check-in goes to readers who set a conversation date, the day after it: one at most,
    and not one everyone gets."""
    check_ins = [lesson for lesson in lessons if lesson.anchor == AFTER_CONVERSATION]
    problems = [
        f"{lesson.path}:1: a second check-in after the conversation (the first is "
        f"{check_ins[0].path.name}); keep one"
        for lesson in check_ins[1:]
    ]
    problems += [
        f"{lesson.path}:1: a check-in goes only to readers who set a date; it cannot also be "
        "never_skip"
        for lesson in check_ins
        if lesson.never_skip
    ]
    return problems


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

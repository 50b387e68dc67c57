"""A sequence as files, written out: the same folder `course lessons check` reads. Drafts
written in the browser are checked, previewed and exported this way, and any published
version can be exported too, so files stay first-class."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from course.authoring.load import SequenceSpec


@dataclass
class LessonFile:
    key: str
    subject: str
    preheader: str
    body: str
    delay_days: int = 0
    module: str = "recognize"
    heading: str = ""
    never_skip: bool = False
    anchor: str = ""
    sources: list[dict[str, str]] = field(default_factory=list)

    def front_matter(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "subject": self.subject}
        if self.heading:
            data["heading"] = self.heading
        data |= {
            "preheader": self.preheader,
            "delay_days": self.delay_days,
            "module": self.module,
        }
        if self.never_skip:
            data["never_skip"] = True
        if self.anchor:
            data["anchor"] = self.anchor
        data["sources"] = [
            {"title": s["title"], **({"url": s["url"]} if s.get("url") else {})}
            for s in self.sources
        ]
        return data


@dataclass
class SequenceFiles:
    slug: str
    title: str
    description: str
    locale: str
    sender_name: str
    lessons: list[LessonFile]
    # The checker's settings: max_grade (English), min_ease (Spanish), allow_revealing_subjects.
    options: dict[str, Any] = field(default_factory=dict)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string is JSON's


def write(parent: Path, sequence: SequenceFiles) -> Path:
    """Write the sequence into `parent/<slug>/` (made if missing) and return that folder."""
    folder = parent / sequence.slug
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.md"):
        old.unlink()
    meta = {
        "title": sequence.title,
        "description": sequence.description,
        "locale": sequence.locale,
        "sender_name": sequence.sender_name,
        **sequence.options,
    }
    (folder / "sequence.toml").write_text(
        "".join(f"{name} = {_toml_value(value)}\n" for name, value in meta.items()),
        encoding="utf-8",
    )
    digits = 3 if len(sequence.lessons) > 99 else 2
    for number, lesson in enumerate(sequence.lessons, start=1):
        front = yaml.safe_dump(
            lesson.front_matter(), sort_keys=False, allow_unicode=True, width=1000
        )
        body = lesson.body if lesson.body.endswith("\n") else lesson.body + "\n"
        (folder / f"{number:0{digits}d}-{lesson.key}.md").write_text(
            f"---\n{front}---\n{body}", encoding="utf-8"
        )
    return folder


def from_spec(spec: SequenceSpec) -> SequenceFiles:
    """What a checked folder says, as files to write again (an import, or a round trip)."""
    options: dict[str, Any] = {}
    if spec.locale == "es":
        options["min_ease"] = spec.min_ease
    else:
        options["max_grade"] = spec.max_grade
    if spec.allow_revealing_subjects:
        options["allow_revealing_subjects"] = True
    return SequenceFiles(
        slug=spec.slug,
        title=spec.title,
        description=spec.description,
        locale=spec.locale,
        sender_name=spec.sender_name,
        options=options,
        lessons=[
            LessonFile(
                key=lesson.key,
                subject=lesson.subject,
                preheader=lesson.preheader,
                heading=lesson.heading,
                body=lesson.body,
                delay_days=lesson.delay_days,
                module=lesson.module,
                never_skip=lesson.never_skip,
                anchor=lesson.anchor,
                sources=[dict(s) for s in lesson.sources],
            )
            for lesson in spec.lessons
        ],
    )

"""The YAML front matter of a lesson or service-email file: read it, and find a field's line.

YAML is imported on first use: the workers read front matter only for service emails (the
confirmation request, the data link), once per process, and importing them stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from course.errors import LessonInvalid


def split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str, int]:
    """(front matter, body, line where the body starts) of a lesson file."""
    import yaml

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
        at = (exc.problem_mark.line + 2) if exc.problem_mark else 2
        raise LessonInvalid(
            [f"{path}:{at}: front matter is not valid YAML: {exc.problem}"]
        ) from exc
    if not isinstance(data, dict):
        raise LessonInvalid([f"{path}:2: front matter must be 'name: value' lines"])
    return data, body, index + 2


def field_line(text: str, name: str) -> int:
    """The line of `text` where the field `name:` is set (1 if it is not there)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(f"{name}:"):
            return number
    return 1

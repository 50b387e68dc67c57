"""Person-first language: find stigmatizing words in a lesson, outside marked quotations.

The word lists live in `lessons/_language/avoid.<locale>.txt`, so staff can extend them without
touching code. A lesson may still quote such a word on purpose (to explain why it hurts) by
marking the quotation: a Markdown block quote (lines starting with `>`), or an inline span
between `{# quote #}` and `{# end quote #}` (Jinja comments, so readers never see the marks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from course.errors import LessonInvalid

_INLINE_QUOTE = re.compile(r"\{#-?\s*quote\s*-?#\}.*?\{#-?\s*end\s*quote\s*-?#\}", re.S | re.I)
_BLOCK_QUOTE = re.compile(r"^ {0,3}>.*$", re.M)


@dataclass(frozen=True)
class Avoid:
    phrase: str
    instead: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Finding:
    line: int  # 1-based, within the text that was searched
    found: str
    instead: str


def list_path(folder: Path, locale: str) -> Path:
    return folder / f"avoid.{locale}.txt"


def load_avoid_list(path: Path) -> tuple[Avoid, ...]:
    """Parse a word list; a malformed line is refused with its file and line."""
    return _load(str(path), path.stat().st_mtime_ns if path.exists() else 0)


@lru_cache(maxsize=16)
def _load(path_name: str, _mtime: int) -> tuple[Avoid, ...]:
    path = Path(path_name)
    if not path.is_file():
        raise LessonInvalid([f"{path}:1: the list of words to avoid is missing"])
    entries: list[Avoid] = []
    problems: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        phrase, arrow, instead = line.partition("->")
        words = phrase.split()
        if not arrow or not words or not instead.strip():
            problems.append(
                f"{path}:{number}: write the words to avoid, then '->', then what to say instead"
            )
            continue
        # Either apostrophe matches either: "she's" and "she’s".
        body = r"\s+".join(re.sub("['’]", "['’]", re.escape(w)) for w in words)
        entries.append(
            Avoid(
                phrase=" ".join(words),
                instead=instead.strip(),
                pattern=re.compile(rf"(?<!\w){body}(?!\w)", re.I),
            )
        )
    if problems:
        raise LessonInvalid(problems)
    return tuple(entries)


def blank_quotations(text: str) -> str:
    """`text` with marked quotations replaced by spaces, keeping every line where it was."""

    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match.group())

    return _BLOCK_QUOTE.sub(blank, _INLINE_QUOTE.sub(blank, text))


def find(text: str, avoid: tuple[Avoid, ...]) -> list[Finding]:
    """Every use of a listed phrase in `text` outside marked quotations, in reading order.

    Where listed phrases overlap ("stayed clean" and "clean for" in "stayed clean for a
    month"), the writer is told once, about the longest one.
    """
    searched = blank_quotations(text)
    spans = [
        (match.start(), match.end(), entry)
        for entry in avoid
        for match in entry.pattern.finditer(searched)
    ]
    spans.sort(key=lambda span: (span[0] - span[1], span[0]))  # longest first
    kept: list[tuple[int, int, Avoid]] = []
    for start, end, entry in spans:
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, entry))
    return [
        Finding(
            line=searched.count("\n", 0, start) + 1,
            found=searched[start:end],
            instead=entry.instead,
        )
        for start, end, entry in sorted(kept, key=lambda span: span[0])
    ]

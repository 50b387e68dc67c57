"""Person-first language: find stigmatizing words in a lesson, outside marked quotations.

The word lists live in `lessons/_language/avoid.<locale>.txt`, so staff can extend them without
touching code. A lesson may still quote such a word on purpose (to explain why it hurts) by
marking the quotation: a Markdown block quote (lines starting with `>`), or an inline span
between `{# quote #}` and `{# end quote #}` (Jinja comments, so readers never see the marks).
Names that happen to use a listed word ("Alcoholics Anonymous") are listed as `name:` lines.

The lists in `lessons/_language/reveal.<locale>.txt` hold the words a subject, preheader, title
or sender name must not use: they show on lock screens and in shared inboxes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
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
    # A name that uses a listed word and is fine as it is ("Alcoholics Anonymous"): a line
    # "name: ..." in the list. Its phrase is matched and passed over, never reported.
    is_name: bool = False


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


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a word list that is not blank or a note."""
    if not path.is_file():
        raise LessonInvalid([f"{path}:1: the list of {what} is missing"])
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def _phrase(words: list[str]) -> str:
    """A pattern for the words in order, any white space between them; either apostrophe
    matches either ("she's" and "she’s")."""
    return r"\s+".join(re.sub("['’]", "['’]", re.escape(w)) for w in words)


@lru_cache(maxsize=16)
def _load(path_name: str, _mtime: int) -> tuple[Avoid, ...]:
    path = Path(path_name)
    entries: list[Avoid] = []
    problems: list[str] = []
    for number, line in _lines(path, "words to avoid"):
        if line.lower().startswith("name:"):
            name = line[5:].split()
            if not name:
                problems.append(f"{path}:{number}: write the name after 'name:'")
                continue
            pattern = re.compile(rf"(?<!\w){_phrase(name)}(?!\w)", re.I)
            entries.append(Avoid(" ".join(name), "", pattern, is_name=True))
            continue
        phrase, arrow, instead = line.partition("->")
        words = phrase.split()
        if not arrow or not words or not instead.strip():
            problems.append(
                f"{path}:{number}: write the words to avoid, then '->', then what to say instead"
            )
            continue
        pattern = re.compile(rf"(?<!\w){_phrase(words)}(?!\w)", re.I)
        entries.append(Avoid(" ".join(words), instead.strip(), pattern))
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
    for entry in avoid:  # names of organisations ("Alcoholics Anonymous") are fine
        if entry.is_name:
            searched = entry.pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), searched)
    spans = [
        (match.start(), match.end(), entry)
        for entry in avoid
        if not entry.is_name
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


# --- words that give the topic away on a lock screen ------------------------------------------


def reveal_list_path(folder: Path, locale: str) -> Path:
    return folder / f"reveal.{locale}.txt"


def fold(text: str) -> str:
    """`text` without accents and in lower case, so "adiccion" is caught like "adicción"."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def load_reveal_list(path: Path) -> tuple[Avoid, ...]:
    """Parse a list of words a subject, preheader or sender name must not use; a malformed line
    is refused with its file and line. `instead` holds the line as written, for messages."""
    return _load_reveal(str(path), path.stat().st_mtime_ns if path.exists() else 0)


@lru_cache(maxsize=16)
def _load_reveal(path_name: str, _mtime: int) -> tuple[Avoid, ...]:
    path = Path(path_name)
    entries: list[Avoid] = []
    problems: list[str] = []
    for number, line in _lines(path, "words that reveal the topic"):
        words = line.split()
        if any("*" in w[:-1] for w in words) or "->" in line:
            problems.append(
                f"{path}:{number}: write one word or phrase per line; a '*' may only end it"
            )
            continue
        tail = r"\w*" if words[-1].endswith("*") else ""
        body = _phrase([fold(w.rstrip("*")) for w in words])
        entries.append(Avoid(line, line, re.compile(rf"(?<!\w){body}{tail}(?!\w)")))
    if problems:
        raise LessonInvalid(problems)
    return tuple(entries)


def revealing(text: str, reveal: tuple[Avoid, ...]) -> list[str]:
    """The words of `text` (as written) that the list says give the topic away."""
    folded = fold(text)
    if len(folded) != len(text):  # a character that folds to several: report the folded form
        text = folded
    found: list[str] = []
    for entry in reveal:
        for match in entry.pattern.finditer(folded):
            word = text[match.start() : match.end()]
            if word not in found:
                found.append(word)
    return found

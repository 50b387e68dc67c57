"""What `course lessons new` writes: a sequence.toml and two example lessons that pass
`course lessons check` as they are, with notes on every line for the counsellor who edits them.

The notes are English in both languages, like lessons/AUTHORING.md; the example words a reader
would see are in the course's language, so the check scores them as it will score the real ones.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from string import Template

from course.render import PERSONA_VALUES

# What a value means, where its name alone does not say.
_VALUE_NOTES = {
    "child": "an adult child of the person",
    "other": "the reader did not say",
    "several": "more than one",
    "unsure": "also when the reader did not say",
}

_SEQUENCE = Template(
    """\
# One course (a "sequence"). This file describes it; each lesson is a Markdown file beside it
# (01-welcome.md, 02-...). Lessons go out in the order of the numbers their names start with.
#
# Lines that start with # are notes for you: nobody else ever sees them. The full guide is
# lessons/AUTHORING.md.
#
# After a change:
#   $course lessons check $folder
#       finds every problem, with the file and line to fix
#   $course lessons preview $folder --lesson welcome
#       writes one email to a file you can open in a browser
#   $course lessons publish $folder
#       makes this the version new readers get (people already reading finish theirs)

# The name of the course. The email that confirms a sign-up names it, so it shows in inboxes
# and on lock screens. Like a subject line, it must not say what the course is about: someone
# else may see the reader's screen. The check refuses words that give the topic away.
title = $title

# One or two sentences for the sign-up page, under the title: who the course is for, and what
# it offers. The sign-up page may say what the course is about.
description = $description

# The language of the course: "en" (English) or "es" (Spanish). It picks the words of the
# footer every email gets, the lists of words to avoid, and how reading ease is scored.
locale = "$locale"

# The name readers see as the sender in their inbox. Keep it neutral, like the title.
sender_name = "Homeward"

$reading

# Only for a course that is meant to be open about its topic: it lets subjects, preheaders,
# the title and the sender name say it. Leave the # in front for every other course.
# allow_revealing_subjects = true
"""
)

_READING = {
    "en": """\
# How hard the lessons may be to read: the highest US school grade allowed (8 at most).
# The check warns above 7 and refuses above this number. Short sentences and everyday words
# bring the grade down.
max_grade = 7""",
    "es": """\
# How easy the lessons must be to read, on the INFLESZ scale that Spanish health services use:
# higher is easier, and 65 to 80 is "fairly easy". 65 is the lowest allowed; the check warns
# below 70. Short sentences and everyday words bring the score up.
min_ease = 65""",
}

# The front matter notes, shared by both lessons; $fields are the lesson's own values.
_FRONT_MATTER = Template(
    """\
---
# The lines between the two --- lines are this lesson's settings, one "name: value" a line.
# Lines that start with # are notes for you: readers never see them.

# A short name for the lesson: a-z, 0-9 and dashes. It must be the file's name without the
# number and .md (this file is $file, so the key is $key).
key: $key

# The subject line, 70 characters at most. It shows on lock screens and in shared inboxes,
# and a reader may share a phone with the person they worry about, or live with someone who
# hurts them. So keep it warm and neutral ("A plan for hard days"): never name a drug,
# overdose, treatment, recovery or the like. The check refuses the words listed in
# lessons/_language/reveal.$locale.txt.
subject: $subject

# The line an inbox shows after the subject. Neutral too, for the same reason.
preheader: $preheader

# Optional: the heading inside the email. It only shows once the email is open, so it may say
# what the lesson is about. Without it, the heading is the subject.
heading: $heading

# Days to wait after the previous lesson (0: send it straight away).
delay_days: $delay_days

# The part of the course the lesson belongs to: recognize (seeing what is going on), act
# (helping the person toward care) or aftercare (once care has started). Aftercare lessons come
# last in the folder.
module: $module

# Optional: true for a lesson everyone must get, even readers who skip ahead (safety lessons).
# never_skip: true

# Optional, for a reader who plans a talk with their loved one and gives its date:
# before:conversation for a lesson that prepares for it, after:conversation for the one short
# check-in the day after (see "A day that matters" in lessons/AUTHORING.md).
# anchor: before:conversation

# Where the facts come from: at least one, by its real title. A link is optional and must start
# with https://. Every email lists its sources at the bottom, so do not write them below.
sources:
$sources
---
"""
)

_BODY_NOTES = Template(
    """\
{#
  Notes between these curly-brace marks never reach readers.

  Everything below the second --- line is the email. Write it in plain Markdown: a blank line
  between paragraphs, "## " at the start of a line for a heading, "- " for a list, **two stars**
  around a few words to make them bold, and [words](https://...) for a link.

  You can fit the words to each reader with these names:
$names
  For example, {% if relationship == "parent" %}words for parents{% else %}words for everyone
  else{% endif %}, or {{ first_name }} for the reader's name. Every lesson is checked for every
  mix of these, so each version must read well on its own.

  Do not write the crisis numbers, the unsubscribe link, the postal address or the sources in
  a lesson: the shared layout in lessons/_layout adds them to every email, with the crisis
  footer (911, 988 and the SAMHSA National Helpline, 1-800-662-4357).
#}
"""
)


_SEE_FIRST = """\
{# How to write the email, and the names that fit it to each reader: see the notes at the top
   of the first lesson. #}
"""
_NAME_NOTES = {
    "relationship": "who the reader is to the person they worry about: ",
    "substance": "what the reader worries about: ",
}


@dataclass(frozen=True)
class _Lesson:
    file: str
    key: str
    subject: str
    preheader: str
    heading: str
    delay_days: int
    module: str
    sources: tuple[tuple[str, str], ...]
    body: str


_WELCOME_EN = _Lesson(
    file="01-welcome.md",
    key="welcome",
    subject="Glad you are here",
    preheader="What to expect from these emails, and one small step for today.",
    heading="Welcome: what these emails are, and how they can help",
    delay_days=0,
    module="recognize",
    sources=(("SAMHSA's National Helpline", "https://www.samhsa.gov/find-help/national-helpline"),),
    body="""\
{% if first_name %}Hi {{ first_name }},{% else %}Hello,{% endif %}

Thank you for being here. {% if relationship == "parent" %}Watching your child struggle is one \
of the hardest things a parent can face.{% elif relationship == "partner" %}When your partner \
is struggling, the whole home feels it.{% elif relationship == "child" %}It is hard to see your \
mom or dad struggle, at any age.{% elif relationship == "sibling" %}Worry about a brother or \
sister can weigh on the whole family.{% elif relationship == "friend" %}Your care for your \
friend says a lot about you.{% else %}Your care for this person says a lot about you.{% endif %}

## What to expect

- A short email every few days.
- One idea and one small step in each.
- Facts from trusted health sources, listed at the bottom.

## One step for today

Save the numbers at the bottom of this email in your phone. You may never need them. But it \
helps to know where they are.
""",
)

_WORDS_EN = _Lesson(
    file="02-words-that-help.md",
    key="words-that-help",
    subject="Words that open doors",
    preheader="One small idea for this week, and an easy way to try it.",
    heading="Words that help: putting the person first",
    delay_days=2,
    module="act",
    sources=(
        (
            "NIDA, Words Matter: Preferred Language for Talking About Addiction",
            "https://nida.nih.gov/research-topics/addiction-science/"
            "words-matter-preferred-language-talking-about-addiction",
        ),
    ),
    body="""\
{% if first_name %}Hi {{ first_name }},{% else %}Hello,{% endif %}

The words we use can open a door or close it. Today's idea is small, and it can help a lot.

## Put the person first

Health experts suggest words that put the person first. For example, say "a person who uses \
drugs". Labels can make a person feel judged. And feeling judged can make it harder to ask \
for help.

{# "substance" holds what the reader told us they worry about. A reader who did not say gets
   "unsure", so write that part to fit anyone. #}
{% if substance == "alcohol" %}The same goes for drinking. Talk about the person and what you \
see, not a label.{% elif substance == "unsure" %}You may not know what your loved one uses, or \
if they use at all. That is okay. Kind words help either way.{% else %}Kind words help, \
whatever your loved one uses.{% endif %}

## One step for today

Listen to the words you use this week, and the words people around you use. Try one small \
change.
""",
)

_WELCOME_ES = _Lesson(
    file="01-welcome.md",
    key="welcome",
    subject="Nos alegra que esté aquí",
    preheader="Qué esperar de estos correos, y un paso pequeño para hoy.",
    heading="Bienvenida: qué son estos correos y cómo le pueden ayudar",
    delay_days=0,
    module="recognize",
    sources=(
        (
            "SAMHSA, Línea Nacional de Ayuda (SAMHSA's National Helpline)",
            "https://www.samhsa.gov/find-help/national-helpline",
        ),
    ),
    body="""\
{% if first_name %}Hola, {{ first_name }}:{% else %}Hola:{% endif %}

Gracias por estar aquí. {% if relationship == "parent" %}Ver sufrir a un hijo o a una hija es \
muy duro.{% elif relationship == "partner" %}Cuando su pareja sufre, toda la casa lo \
siente.{% elif relationship == "child" %}Ver sufrir a su padre o a su madre duele, a cualquier \
edad.{% elif relationship == "sibling" %}La pena por un hermano o una hermana pesa en toda la \
familia.{% elif relationship == "friend" %}Su cariño por su amigo o su amiga dice mucho de \
usted.{% else %}Su cariño por esta persona dice mucho de usted.{% endif %}

## Qué esperar

- Un correo corto cada pocos días.
- En cada uno, una idea y un paso pequeño.
- Datos de fuentes de salud de confianza. Van al final de cada correo.

## Un paso para hoy

Guarde en su teléfono los números que están al final de este correo. Quizás nunca los use. \
Pero es bueno saber dónde están.
""",
)

_WORDS_ES = _Lesson(
    file="02-words-that-help.md",
    key="words-that-help",
    subject="Palabras que abren puertas",
    preheader="Una idea pequeña para esta semana, y una forma fácil de probarla.",
    heading="Palabras que ayudan: primero, la persona",
    delay_days=2,
    module="act",
    sources=(
        (
            "NIDA, Las palabras importan: términos preferidos al hablar de la adicción",
            "https://nida.nih.gov/es/node/38234",
        ),
    ),
    body="""\
{% if first_name %}Hola, {{ first_name }}:{% else %}Hola:{% endif %}

Las palabras pueden abrir una puerta o cerrarla. La idea de hoy es pequeña, y puede ayudar \
mucho.

## Primero, la persona

Los expertos en salud piden usar palabras que ponen primero a la persona. Por ejemplo, diga \
"una persona que consume drogas". Una etiqueta hace que la persona se sienta juzgada. Y quien \
se siente juzgado pide ayuda con más miedo.

{# "substance" holds what the reader told us they worry about. A reader who did not say gets
   "unsure", so write that part to fit anyone. #}
{% if substance == "alcohol" %}Con el alcohol pasa lo mismo. Hable de la persona y de lo que \
ve, no de una etiqueta.{% elif substance == "unsure" %}Quizás no sabe qué consume su ser \
querido, o si consume. No pasa nada. Las palabras amables ayudan igual.{% else %}Las palabras \
amables ayudan, sea lo que sea lo que consume su ser querido.{% endif %}

## Un paso para hoy

Esta semana, escuche las palabras que usa, y las que usan los demás. Pruebe un cambio pequeño.
""",
)

_LESSONS = {"en": (_WELCOME_EN, _WORDS_EN), "es": (_WELCOME_ES, _WORDS_ES)}

_DESCRIPTION = {
    "en": "Short, plain emails for families and friends: one idea and one small step in each.",
    "es": "Correos cortos y sencillos para familias y amigos: una idea y un paso pequeño en cada uno.",
}


def write_sequence(
    folder: Path, *, title: str, locale: str, course: str, shown_as: str
) -> list[Path]:
    """Write a new sequence into `folder` (which must not exist yet); the files written.

    `course` is how to type the `course` command and `shown_as` the folder as the counsellor
    typed it, for the notes that say what to run next.
    """
    files = {
        "sequence.toml": _SEQUENCE.substitute(
            course=course,
            folder=shown_as,
            title=_quoted(title),
            description=_quoted(_DESCRIPTION[locale]),
            locale=locale,
            reading=_READING[locale],
        )
    }
    for number, lesson in enumerate(_LESSONS[locale]):
        # The notes on writing the email come once, in the first lesson: one place to read them.
        files[lesson.file] = _lesson_text(lesson, locale, body_notes=number == 0)
    folder.mkdir()
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _lesson_text(lesson: _Lesson, locale: str, *, body_notes: bool) -> str:
    sources = "\n".join(
        f"  - title: {_quoted(title)}\n    url: {url}" for title, url in lesson.sources
    )
    front = _FRONT_MATTER.substitute(
        file=lesson.file,
        key=lesson.key,
        locale=locale,
        subject=_quoted(lesson.subject),
        preheader=_quoted(lesson.preheader),
        heading=_quoted(lesson.heading),
        delay_days=lesson.delay_days,
        module=lesson.module,
        sources=sources,
    )
    notes = _BODY_NOTES.substitute(names=_names()) if body_notes else _SEE_FIRST
    return front + notes + lesson.body


def _names() -> str:
    """The names a lesson may use and their values, from the code that renders lessons, so the
    notes never fall behind it."""
    described = {
        "first_name": "the reader's first name, or empty if they gave none",
        **{
            name: _NAME_NOTES.get(name, "")
            + ", ".join(
                f"{value} ({_VALUE_NOTES[value]})" if value in _VALUE_NOTES else value
                for value in values
            )
            for name, values in PERSONA_VALUES.items()
        },
    }
    lines = []
    for name, text in described.items():
        lines.extend(
            textwrap.wrap(
                text,
                width=94,
                initial_indent=f"    {name:<14}",
                subsequent_indent=" " * 18,
            )
        )
    return "\n".join(lines)


def _quoted(value: str) -> str:
    """`value` as a double-quoted string, which TOML and YAML read alike: JSON's escapes are
    valid in both."""
    return json.dumps(value, ensure_ascii=False)

"""Turn a lesson (sandboxed Jinja2 + Markdown) and the shared layout into an email's HTML and text.

Rendering is a pure function of the lesson, the reader's persona and the links; compiled
templates are cached by their source, so a lesson is compiled once and rendered per person.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markupsafe import Markup

# The names a lesson may use, with every value they can take; `course lessons check` renders
# each lesson for every combination.
PERSONA_VALUES: dict[str, tuple[str, ...]] = {
    "relationship": ("parent", "partner", "child", "sibling", "friend", "other"),
    "substance": ("opioids", "alcohol", "stimulants", "several", "unsure"),
}
LESSON_NAMES = frozenset({"first_name", *PERSONA_VALUES})

# No trim_blocks: an inline `{% endif %}` at the end of a line must keep its line break.
_lesson_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, lstrip_blocks=True
)
_layout_html_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
_layout_text_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
)

# Crisis and help lines, as lessons write them. On a phone a number should be one tap away, and a
# number broken across two lines is easy to misdial.
PHONE = re.compile(r"(?<![\w-])(1-8\d\d-\d{3}-\d{4}|911|988)(?![\w-]|\.\w)")
NO_WRAP = "white-space:nowrap"


def tel_href(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    return f"tel:+{digits}" if len(digits) == 11 else f"tel:{digits}"


def _phone_links(state: StateCore) -> None:
    """Turn every phone number outside a link into a tap-to-call link that does not wrap."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        out: list[Token] = []
        depth = 0
        for token in block.children:
            if token.type == "link_open":
                depth += 1
            elif token.type == "link_close":
                depth -= 1
            if token.type != "text" or depth or not PHONE.search(token.content):
                out.append(token)
                continue
            for index, piece in enumerate(PHONE.split(token.content)):
                if index % 2 == 0:
                    if piece:
                        text = Token("text", "", 0)
                        text.content = piece
                        out.append(text)
                    continue
                opening = Token("link_open", "a", 1)
                opening.attrs = {"href": tel_href(piece), "style": NO_WRAP}
                number = Token("text", "", 0)
                number.content = piece
                out.extend([opening, number, Token("link_close", "a", -1)])
        block.children = out


_parsers = threading.local()


def markdown_parser() -> MarkdownIt:
    """This thread's Markdown parser.

    One per thread, never shared: markdown-it-py builds its rule lists on first use, and a thread
    that reads them half-built fails with "none of the block rules matched" (seen with a worker's
    sending threads rendering their first lessons at once).
    """
    parser: MarkdownIt | None = getattr(_parsers, "parser", None)
    if parser is None:
        # Raw HTML in a lesson is shown as text: a name or a stray tag can never inject markup.
        parser = MarkdownIt("commonmark", {"html": False, "typographer": True})
        parser.core.ruler.push("phone_links", _phone_links)
        _parsers.parser = parser
    return parser


# mdurl, under markdown-it, fills its link-encoding tables on first use and shows them to other
# threads while half-filled ("list index out of range"); fill them once, here, before any
# sending thread exists, with every kind of link a lesson can hold.
markdown_parser().render("[a](https://example.org/a%20b?c=d#e) <https://example.org> ![i](i.png)")


_TAG = re.compile(r"(<[^>]*>)")


def link_phones(html: str) -> str:
    """`html` (trusted markup: our pages' own words) with each phone number outside a link made a
    tap-to-call link that does not wrap, as lessons get them from Markdown."""
    out: list[str] = []
    in_link = 0
    for piece in _TAG.split(html):
        if piece.startswith("<"):
            tag = piece[1:].lstrip("/").split(None, 1)[0].rstrip(">").lower() if piece[1:] else ""
            if tag == "a":
                in_link += -1 if piece.startswith("</") else 1
            out.append(piece)
        elif in_link:
            out.append(piece)
        else:
            out.append(
                PHONE.sub(
                    lambda m: (
                        f'<a class="tel" href="{tel_href(m.group(0))}" '
                        f'style="{NO_WRAP}">{m.group(0)}</a>'
                    ),
                    piece,
                )
            )
    return "".join(out)


_inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


@lru_cache(maxsize=2048)
def compile_lesson(source: str) -> Template:
    return _lesson_env.from_string(source)


def lesson_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox lessons render in, for parsing them (the checker's syntax and name checks)."""
    return _lesson_env


@lru_cache(maxsize=64)
def _compile_layout(source: str, html: bool) -> Template:
    return (_layout_html_env if html else _layout_text_env).from_string(source)


@dataclass(frozen=True)
class Persona:
    first_name: str = ""
    relationship: str = "other"
    substance: str = "unsure"

    def as_context(self) -> dict[str, str]:
        return {
            "first_name": self.first_name,
            "relationship": self.relationship,
            "substance": self.substance,
        }


@dataclass(frozen=True)
class Links:
    unsubscribe_url: str
    postal_address: str
    base_url: str
    stage_url: str | None = None
    preferences_url: str | None = None
    # "Was this helpful?" (lessons only): one link each for yes and no.
    helpful_urls: tuple[str, str] | None = None


@dataclass(frozen=True)
class Layout:
    html: str
    text: str

    @classmethod
    def load(cls, folder: Path) -> Layout:
        return _load_layout(str(folder))


@lru_cache(maxsize=8)
def _load_layout(folder: str) -> Layout:
    path = Path(folder)
    return Layout(
        html=(path / "email.html").read_text(encoding="utf-8"),
        text=(path / "email.txt").read_text(encoding="utf-8"),
    )


@dataclass(frozen=True)
class Content:
    """What the layout wraps: a subject, a preheader and a Markdown body (all Jinja2)."""

    subject: str
    preheader: str
    body: str
    sources: list[dict[str, str]] = field(default_factory=list)
    module: str = ""
    sender_name: str = "Homeward"
    locale: str = "en"
    # The heading inside the email; empty: the subject. It may say more than the subject,
    # which shows on lock screens.
    heading: str = ""
    # A service email's one action (confirming the address), shown as a button.
    action_label: str = ""
    action_url: str = ""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    html: str
    text: str


# Rendered in place of a reader's first name, so that a worker renders each lesson once per
# persona variant and fills the name in per reader. Private-use characters: no name has them.
NAME_STAND_IN = "\ue000first-name\ue001"


def changes_the_name(rendered: RenderedEmail) -> bool:
    """Whether an email rendered with NAME_STAND_IN as the first name changed it on the way (a
    filter such as `upper` on it): then the real name cannot be filled in where it stood."""
    parts = (rendered.subject, rendered.html, rendered.text)
    return any("\ue000" in part.replace(NAME_STAND_IN, "") for part in parts)


def render_template(source: str, context: Mapping[str, Any]) -> str:
    return compile_lesson(source).render(**context)


def render_email(
    content: Content,
    persona: Persona,
    links: Links,
    *,
    layout: Layout,
    extra: Mapping[str, Any] | None = None,
) -> RenderedEmail:
    context: dict[str, Any] = {**persona.as_context(), **(extra or {})}
    subject = one_line(render_template(content.subject, context))
    heading = one_line(render_template(content.heading, context)) if content.heading else subject
    preheader = one_line(render_template(content.preheader, context))
    action_label = one_line(render_template(content.action_label, context))
    action_url = render_template(content.action_url, context).strip()
    markdown = render_template(content.body, context)
    body_html = markdown_parser().render(markdown)
    body_text = markdown_to_text(markdown)
    frame = {
        "subject": subject,
        "heading": heading,
        "action_label": action_label,
        "action_url": action_url,
        "preheader": preheader,
        "sources": content.sources,
        "module": content.module,
        "locale": content.locale,
        "sender_name": content.sender_name,
        "unsubscribe_url": links.unsubscribe_url,
        "postal_address": links.postal_address,
        "base_url": links.base_url.rstrip("/"),
        "stage_url": links.stage_url,
        "preferences_url": links.preferences_url,
        "helpful_yes_url": links.helpful_urls[0] if links.helpful_urls else None,
        "helpful_no_url": links.helpful_urls[1] if links.helpful_urls else None,
    }
    html = _compile_layout(layout.html, True).render(body=Markup(body_html), **frame)
    text = _compile_layout(layout.text, False).render(body=body_text, **frame)
    return RenderedEmail(
        subject=subject,
        preheader=preheader,
        html=_inliner.inline(html),
        text=_tidy_text(text),
    )


_MONTHS = {
    "en": "January February March April May June July August September October November December",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
}


def long_date(day: date, locale: str) -> str:
    """A date as a reader says it: "March 9, 2026", "9 de marzo de 2026"."""
    month = _MONTHS.get(locale, _MONTHS["en"]).split()[day.month - 1]
    if locale == "es":
        return f"{day.day} de {month} de {day.year}"
    return f"{month} {day.day}, {day.year}"


def one_line(value: str) -> str:
    """Subjects and preheaders are single lines; collapse any whitespace a template left."""
    return " ".join(value.split())


def _tidy_text(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def markdown_to_text(markdown: str) -> str:
    """Plain-text twin of the HTML part: same words, links written out after their text."""
    out: list[str] = []
    list_stack: list[list[int] | None] = []
    for token in markdown_parser().parse(markdown):
        if token.type in ("bullet_list_open",):
            list_stack.append(None)
        elif token.type == "ordered_list_open":
            list_stack.append([int(token.attrGet("start") or 1)])
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            list_stack.pop()
            if not list_stack:
                out.append("\n")
        elif token.type == "list_item_open":
            indent = "  " * (len(list_stack) - 1)
            top = list_stack[-1]
            if top is None:
                out.append(f"{indent}- ")
            else:
                out.append(f"{indent}{top[0]}. ")
                top[0] += 1
        elif token.type == "heading_close":
            out.append("\n\n")
        elif token.type == "paragraph_close":
            out.append("\n" if list_stack else "\n\n")
        elif token.type == "hr":
            out.append("----\n\n")
        elif token.type in ("fence", "code_block"):
            out.append(token.content + "\n")
        elif token.type == "inline":
            out.append(_inline_text(token.children or []))
    return "".join(out).strip() + "\n"


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    href_stack: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak",):
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "link_open":
            href_stack.append(str(child.attrGet("href") or ""))
        elif child.type == "link_close":
            href = href_stack.pop() if href_stack else ""
            label = parts[-1] if parts else ""
            if href and href not in label and not href.startswith("tel:"):
                parts.append(f" ({href})")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)

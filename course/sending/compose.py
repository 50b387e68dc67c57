"""Build each email of a batch: the lesson (or the confirmation request, or the data link) in
the reader's persona, with their links and name filled in.

A lesson is rendered, and its CSS inlined, once per persona variant, with stand-ins for the
per-person parts; each reader's email fills them in. Rendering it per reader cost more than
sending it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

from markupsafe import escape

from course.clock import Clock, as_utc
from course.front_matter import split_front_matter
from course.message import BodyTemplate, build_encoded
from course.models import PAUSED_UNTIL_RESUMED, DeliveryKind, SequenceVersion
from course.readers.personal_data import DATA_LINK_TTL
from course.render import (
    NAME_STAND_IN,
    Content,
    Layout,
    Links,
    Persona,
    RenderedEmail,
    changes_the_name,
    long_date,
    render_email,
)
from course.schedule import zone
from course.sending.jobs import Job
from course.settings import Settings
from course.tokens import Purpose, TokenMaker

# Stand-ins for the per-person parts of an email, so each lesson is rendered (and its CSS
# inlined) once per persona variant, not once per reader.
_UNSUBSCRIBE = "https://homeward.invalid/unsubscribe-url-stand-in"
_CONFIRM = "https://homeward.invalid/confirm-url-stand-in"
_STAGE = "https://homeward.invalid/stage-url-stand-in"
_DATA = "https://homeward.invalid/data-url-stand-in"
_PREFERENCES = "https://homeward.invalid/preferences-url-stand-in"


# One pass over a rendered text finds every stand-in; the capturing group keeps them in the split.
_STAND_INS = re.compile(
    "("
    + "|".join(
        re.escape(x) for x in (NAME_STAND_IN, _UNSUBSCRIBE, _CONFIRM, _STAGE, _DATA, _PREFERENCES)
    )
    + ")"
)


class _Variant:
    """One persona variant of an email, its parts cut at the stand-ins once, ready to fill in."""

    __slots__ = ("subject", "sender_name", "html", "text", "checked", "stray")

    def __init__(self, rendered: RenderedEmail, sender_name: str) -> None:
        self.subject = rendered.subject
        self.sender_name = sender_name
        self.html = BodyTemplate(rendered.html, _STAND_INS)
        self.text = BodyTemplate(rendered.text, _STAND_INS)
        checked = (rendered.html, rendered.text, rendered.subject)
        # The stand-ins whose values end up in the parts checked for a mangled first name.
        self.checked = frozenset(x for part in checked for x in _STAND_INS.findall(part))
        # The lesson transformed the name (`lessons check` refuses that; kept for older versions).
        self.stray = changes_the_name(rendered)


class Composer:
    """Renders the email for a job: the lesson, the confirmation request or the data link."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.layout_dir = settings.lessons_dir / "_layout"
        self.layout = Layout.load(self.layout_dir)
        self._variants: dict[tuple[Any, ...], _Variant] = {}
        self.envelope_sender = parseaddr(settings.from_address)[1]
        self._base_url = settings.base_url.rstrip("/")
        self._tokens = {p: TokenMaker(settings.secret_key, p, clock) for p in Purpose}

    def link(self, path: str) -> str:
        return f"{self._base_url}{path}"

    def _content(self, job: Job) -> Content:
        if job.lesson is not None:
            content = Content(
                subject=job.lesson.subject,
                heading=job.lesson.heading,
                preheader=job.lesson.preheader,
                body=job.lesson.body,
                sources=job.lesson.sources,
                module=job.lesson.module,
                sender_name=job.version.sender_name,
                locale=job.version.locale,
            )
        else:
            content = layout_content(self.layout_dir, job.version, job.delivery.kind)
        if job.subscriber.discreet:
            # Others see this reader's inbox: a plain sender, a plain subject, no preview line.
            # The heading inside still says what the email is about.
            plain = layout_front_matter(self.layout_dir, "discreet", job.version.locale)
            content = replace(
                content,
                heading=content.heading or content.subject,
                subject=str(plain["subject"]),
                preheader="",
                sender_name=str(plain["sender_name"]),
            )
        return content

    def _key(self, job: Job, stage: bool) -> tuple[Any, ...]:
        # Everything the rendered text depends on except the per-person parts (stand-ins).
        subscriber = job.subscriber
        version = job.version
        # The version as the catalog knows it (ids alone may come back in a recreated database).
        what = (version.id, version.content_hash, version.published_at, job.delivery.kind)
        return (
            *what,
            job.lesson.position if job.lesson is not None else None,
            bool(subscriber.first_name),
            subscriber.relationship,
            subscriber.substance,
            subscriber.discreet,
            stage,
            self._pause_words(job) if job.delivery.kind == DeliveryKind.PAUSED else "",
        )

    def _pause_words(self, job: Job) -> str:
        """How long a pause lasts, in the reader's words (the email that confirms it)."""
        until = job.enrollment.paused_until
        spanish = job.version.locale == "es"
        if until is None or as_utc(until) >= PAUSED_UNTIL_RESUMED:
            if spanish:
                return "Seguirán en pausa hasta que usted los vuelva a activar."
            return "They will stay paused until you start them again."
        day = as_utc(until).astimezone(zone(job.subscriber.time_zone)).date()
        if spanish:
            return f"Vuelven a llegar el {long_date(day, 'es')}."
        return f"They start again on {long_date(day, 'en')}."

    def _variant(self, job: Job, stage: bool) -> _Variant:
        key = self._key(job, stage)
        cached = self._variants.get(key)
        if cached is None:
            content = self._content(job)
            subscriber = job.subscriber
            persona = Persona(
                first_name=NAME_STAND_IN if subscriber.first_name else "",
                relationship=subscriber.relationship,
                substance=subscriber.substance,
            )
            links = Links(
                unsubscribe_url=_UNSUBSCRIBE,
                postal_address=self.settings.postal_address,
                base_url=self.settings.base_url,
                stage_url=_STAGE if stage else None,
                preferences_url=_PREFERENCES,
                helpful_urls=self._helpful(job),
            )
            extra = {
                "confirm_url": _CONFIRM,
                "data_url": _DATA,
                "resume_url": _PREFERENCES + "/resume",
                "pause_words": self._pause_words(job),
                "data_link_hours": int(DATA_LINK_TTL.total_seconds() // 3600),
                "sequence_title": job.version.title,
                "confirm_days": self.settings.confirm_ttl_days,
            }
            if len(self._variants) > 4096:
                self._variants.clear()
            rendered = render_email(content, persona, links, layout=self.layout, extra=extra)
            cached = self._variants[key] = _Variant(rendered, content.sender_name)
        return cached

    def _helpful(self, job: Job) -> tuple[str, str] | None:
        """The "was this helpful?" links of a lesson: they name the lesson, never the reader,
        so they are the same in every copy of it."""
        if job.lesson is None:
            return None
        token = self._tokens[Purpose.HELPFUL](f"{job.version.id}.{job.lesson.position}")
        return self.link(f"/helpful/{token}/yes"), self.link(f"/helpful/{token}/no")

    def compose(self, job: Job) -> bytes:
        s = self.settings
        key = job.enrollment.link_key
        tokens = self._tokens
        unsubscribe_url = self.link("/unsubscribe/" + tokens[Purpose.UNSUBSCRIBE](key))
        kind = job.delivery.kind
        confirm_url = (
            self.link("/confirm/" + tokens[Purpose.CONFIRM](key))
            if kind == DeliveryKind.CONFIRM
            else ""
        )
        data_url = (
            self.link("/my-data/" + tokens[Purpose.DATA](key)) if kind == DeliveryKind.DATA else ""
        )
        stage = job.offers_stage_switch
        stage_url = self.link("/stage/" + tokens[Purpose.STAGE](key)) if stage else ""
        variant = self._variant(job, stage)
        plain = {
            NAME_STAND_IN: job.subscriber.first_name,
            _UNSUBSCRIBE: unsubscribe_url,
            _CONFIRM: confirm_url,
            _STAGE: stage_url,
            _DATA: data_url,
            _PREFERENCES: self.link("/preferences/" + tokens[Purpose.PREFERENCES](key)),
        }
        if variant.stray or any("\ue000" in plain[k] for k in variant.checked):
            raise RuntimeError("a lesson transformed the first name; it cannot be personalized")
        return build_encoded(
            subject=_STAND_INS.sub(lambda m: plain[m.group(0)], variant.subject),
            text_body=variant.text.encode(plain),
            html_body=variant.html.encode({k: str(escape(v)) for k, v in plain.items()}),
            from_address=self.envelope_sender,
            sender_name=variant.sender_name,
            to=job.subscriber.email,
            message_id=job.delivery.message_id,
            unsubscribe_url=unsubscribe_url,
            unsubscribe_mailto=s.unsubscribe_mailto,
            date=self.clock.now(),
        )


def _layout_file(layout_dir: Path, name: str, locale: str) -> Path:
    path = layout_dir / (f"{name}.md" if locale == "en" else f"{name}.{locale}.md")
    return path if path.exists() else layout_dir / f"{name}.md"


@lru_cache(maxsize=64)
def layout_front_matter(layout_dir: Path, name: str, locale: str) -> dict[str, Any]:
    """The front matter of a layout file (`discreet.md`), in the course's language."""
    path = _layout_file(layout_dir, name, locale)
    return split_front_matter(path.read_text(encoding="utf-8"), path)[0]


def layout_content(layout_dir: Path, version: SequenceVersion, kind: str) -> Content:
    """A service email from the layout folder (`confirm.md`, `data.md`, `paused.md`), in the
    course's language."""
    path = _layout_file(layout_dir, kind, version.locale)
    data, body, _ = split_front_matter(path.read_text(encoding="utf-8"), path)
    return Content(
        subject=data["subject"],
        preheader=data.get("preheader", ""),
        body=body,
        sender_name=version.sender_name,
        locale=version.locale,
        action_label=data.get("action", ""),
        action_url=data.get("action_url", ""),
    )

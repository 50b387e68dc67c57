"""Rendering pages: the templates, the language a page is shown in, and errors in the reader's
own words."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from course.errors import CourseError
from course.render import link_phones
from course.settings import Settings
from course.web import i18n

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# `{% filter phones %}` around a page's own words makes every phone number tap-to-call.
TEMPLATES.env.filters["phones"] = lambda html: Markup(link_phones(str(html)))


def policy(nonce: str) -> str:
    """The Content-Security-Policy of a reader's page: nothing loaded from elsewhere, only the
    page's own scripts (named by a nonce made for this answer), and never inside another
    site's frame, where a one-click button (unsubscribe, erase) could be laid under a lure."""
    return (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def wants_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    accept = request.headers.get("accept", "")
    return "application/json" in content_type or (
        "application/json" in accept and "text/html" not in accept
    )


def page_locale(request: Request, course_locale: str | None = None) -> str:
    return i18n.pick(
        request.query_params.get("lang"), course_locale, request.headers.get("accept-language")
    )


def page(
    request: Request,
    name: str,
    status: int = 200,
    *,
    locale: str | None = None,
    nonce: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page in the reader's language (`locale` is their course's, when known)."""
    settings: Settings = request.app.state.settings
    lang = page_locale(request, locale)
    other = "es" if lang == "en" else "en"
    nonce = nonce or secrets.token_urlsafe(16)
    answer = TEMPLATES.TemplateResponse(
        request,
        name,
        {
            "dev": settings.dev,
            "lang": lang,
            "t": i18n.translator(lang),
            # After a POST, the same address would answer a GET differently (or not at all, as
            # /enroll), so the switch leads to the sign-up page instead.
            "switch_url": f"{request.url.path if request.method == 'GET' else '/'}?lang={other}",
            "csp_nonce": nonce,
            **context,
        },
        status_code=status,
    )
    answer.headers["Content-Security-Policy"] = policy(nonce)
    return answer


class KeptPages:
    """A page that is the same for every visitor in a language until what it shows changes (the
    sign-up page, until a course is published): rendered once per language and kept, each
    answer with a nonce of its own. Rendering it was most of a page view's CPU."""

    def __init__(self) -> None:
        # A stand-in for the nonce, made per process: no page's own text can contain it.
        self._stand_in = secrets.token_urlsafe(24)
        self._source: object = None
        self._bodies: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def find(self, source: object, lang: str) -> HTMLResponse | None:
        """The page rendered from `source` in `lang`, if it is kept: no waiting, no I/O."""
        with self._lock:
            body = self._bodies.get(lang) if self._source is source else None
        return None if body is None else self._stamped(body)

    def answer(
        self, source: object, lang: str, render: Callable[[str], HTMLResponse]
    ) -> HTMLResponse:
        """The page rendered from `source` in `lang`: kept, or `render(nonce)` and kept while
        `source` is the same object."""
        with self._lock:
            if self._source is not source:
                self._source, self._bodies = source, {}
            body = self._bodies.get(lang)
        if body is None:
            rendered = render(self._stand_in)
            if rendered.status_code != 200:  # not kept, and its nonce must be its own
                return render(secrets.token_urlsafe(16))
            body = bytes(rendered.body)
            with self._lock:
                if self._source is source:
                    self._bodies[lang] = body
        return self._stamped(body)

    def _stamped(self, body: bytes) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        return HTMLResponse(
            body.replace(self._stand_in.encode(), nonce.encode()),
            headers={"Content-Security-Policy": policy(nonce)},
        )


def say(request: Request, exc: CourseError, locale: str | None = None) -> str:
    """The error in the page's language; English keeps the detailed original."""
    lang = page_locale(request, locale)
    key = f"errors.{exc.code}"
    if lang == i18n.DEFAULT or key not in i18n.catalog(lang):
        return exc.message
    return i18n.catalog(lang)[key]

"""The sign-up page and `POST /enroll`: the same answer whether the address is new, pending or
already enrolled, so nobody can learn who is on the list."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from course.catalog import Offer, Shelf, kept_shelf, latest_version, offered, shelf
from course.clock import Clock
from course.db import is_sqlite, session_scope
from course.errors import InvalidInput, UnknownSequence
from course.ratelimit import Limiter
from course.readers.intake import request_signup
from course.readers.signup import EnrollRequest
from course.settings import Settings
from course.web import i18n
from course.web.deps import (
    ClockDep,
    EngineDep,
    FieldsDep,
    KickDep,
    LimiterDep,
    SettingsDep,
    client_address,
)
from course.web.errors import not_open, status_of, too_many, unavailable
from course.web.i18n import consent_wording
from course.web.openapi import ENROLL_ANSWERS, ENROLL_BODY, answers
from course.web.pages import KeptPages, page, page_locale, say, wants_json

log = logging.getLogger(__name__)
router = APIRouter()

ENROLL_MESSAGE = i18n.catalog("en")["check_email.message"]
HONEYPOT = "website"  # a field people never see (course/web/templates/signup.html)
Offered = dict[str, list[Offer]]


def open_courses(engine: Engine, settings: Settings, *, fresh: bool = False) -> Offered:
    """The courses the page offers, or none when the database cannot say (not migrated, say):
    as this process last read them (course.catalog.shelf), or `fresh` from the database."""
    try:
        if not fresh:
            return shelf(engine).offered(settings.sequences, settings.default_sequence)
        with session_scope(engine) as session:
            return offered(session, settings.sequences, settings.default_sequence)
    except SQLAlchemyError:
        # The reader gets "come back later"; the operator gets the cause here and on /health.
        log.exception("the published courses cannot be read")
        return {}


def _shelf_or_not_open(engine: Engine) -> Shelf:
    """The courses as this process keeps them; "not open yet" when the database cannot say."""
    try:
        return shelf(engine)
    except SQLAlchemyError:
        log.exception("the published courses cannot be read")
        raise not_open() from None


def signup_page(
    request: Request,
    courses: Offered,
    status: int = 200,
    *,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    error_field: str = "",
    nonce: str | None = None,
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    values = values or {}
    # The form says which language it was shown in, so an error comes back in the same one.
    lang = page_locale(request, str(values.get("lang") or "") or None)
    picked = str(values.get("sequence") or "")
    every = [offer for locale in sorted(courses) for offer in courses[locale]]
    course = next((o for o in every if o.version.slug == picked), None)
    mine = courses.get(lang) or courses.get(i18n.DEFAULT) or []
    course = course or (mine[0] if mine else None)
    return page(
        request,
        "signup.html",
        status,
        locale=lang,
        error=error,
        error_field=error_field,
        about=settings.about,
        values=values,
        courses=every,
        # One course in each of several languages: the choice is the language.
        by_language=len(courses) > 1 and all(len(c) == 1 for c in courses.values()),
        course=course.version if course else None,
        offer=course,
        nonce=nonce,
    )


@router.get("/", response_class=HTMLResponse, responses=answers(503))
async def home(request: Request, settings: SettingsDep, engine: EngineDep) -> HTMLResponse:
    # Most views: the page as kept, answered here on the event loop. Handing it to a thread
    # and back cost as much CPU as the rest of the view.
    current = kept_shelf(engine)
    if current is not None:
        kept: KeptPages = request.app.state.home_pages
        answer = kept.find(current, page_locale(request))
        if answer is not None:
            return answer
    # Once a second or so: the courses read again, or the page rendered, on a thread.
    return await run_in_threadpool(render_home, request, settings, engine)


def render_home(request: Request, settings: Settings, engine: Engine) -> HTMLResponse:
    current = _shelf_or_not_open(engine)
    courses = current.offered(settings.sequences, settings.default_sequence)
    if not courses:
        raise not_open()
    kept: KeptPages = request.app.state.home_pages
    return kept.answer(
        current,
        page_locale(request),
        lambda nonce: signup_page(request, courses, nonce=nonce),
    )


@router.get("/courses/{slug}", response_class=HTMLResponse, responses=answers(404, 503))
def course_page(request: Request, *, slug: str, engine: EngineDep) -> HTMLResponse:
    """A course's own sign-up page: that course only, whether the home page offers it or not."""
    found = _shelf_or_not_open(engine).course(slug)
    if found is None:
        raise UnknownSequence(f"There is no course called {slug!r}.")
    lang = request.query_params.get("lang") or found.version.locale
    return signup_page(
        request, {found.version.locale: [found]}, values={"sequence": slug, "lang": lang}
    )


def _parsed(
    data: dict[str, Any], settings: Settings, *, as_json: bool, form_lang: str
) -> EnrollRequest:
    if data.get("locale") not in (None, "", *i18n.LOCALES):
        raise InvalidInput(i18n.catalog("en")["errors.locale"], "locale", "locale")
    return replace(
        EnrollRequest.parse(data, settings.default_sequence),
        consent_source="api" if as_json else "form",
        consent_wording="api" if as_json else consent_wording(form_lang or "en"),
    )


# Sign-ups a web process works on at once, each on a thread; the rest wait their turn on the
# event loop. One thread does its round trips to Redis and PostgreSQL while the other holds
# Python's lock. With a thread for every request at once (eight of 16 clients, in each of two
# processes), each thread queued for the lock after every round trip: 10 s runs alternating 1,
# 2, 3 and 40 gave a p99 of 31-32 ms with 2, 38-41 ms with 1 or 3, 42-45 ms with 40.
SIGNUPS_AT_ONCE = 2
# After PostgreSQL could not be reached, a process answers sign-ups "try again in a few minutes"
# at once for this long, instead of each waiting out the connection time limit in turn behind
# the two slots (the tenth in line would wait 50 s).
UNREACHABLE_SECONDS = 5.0


def _signup_slots(request: Request) -> anyio.CapacityLimiter:
    """The process's slots for sign-ups on threads: made on first use, as anyio needs a running
    event loop to make one (and again for another loop: a test's client has its own)."""
    loop = asyncio.get_running_loop()
    kept: tuple[asyncio.AbstractEventLoop, anyio.CapacityLimiter] | None
    kept = getattr(request.app.state, "signup_slots", None)
    if kept is None or kept[0] is not loop:
        kept = request.app.state.signup_slots = (loop, anyio.CapacityLimiter(SIGNUPS_AT_ONCE))
    return kept[1]


@router.post("/enroll", status_code=202, responses=ENROLL_ANSWERS, openapi_extra=ENROLL_BODY)
async def enroll_route(
    request: Request,
    *,
    data: FieldsDep,
    settings: SettingsDep,
    clock: ClockDep,
    engine: EngineDep,
    kick: KickDep,
    limiter: LimiterDep,
) -> Response:
    # The blocking work (Redis, the INSERT) on a thread, in one of the process's few slots.
    work = partial(
        enroll,
        request,
        data=data,
        settings=settings,
        clock=clock,
        engine=engine,
        kick=kick,
        limiter=limiter,
    )
    return await anyio.to_thread.run_sync(work, limiter=_signup_slots(request))


def enroll(
    request: Request,
    *,
    data: dict[str, Any],
    settings: Settings,
    clock: Clock,
    engine: Engine,
    kick: Callable[[], None],
    limiter: Limiter,
) -> Response:
    as_json = wants_json(request)
    if not data.get("sequence") and data.get("locale") in settings.sequences:
        data["sequence"] = settings.sequences[str(data["locale"])]
    client = client_address(request)
    form_lang = str(data.get("lang") or "")
    try:
        try:
            req = _parsed(data, settings, as_json=as_json, form_lang=form_lang)
        except InvalidInput:
            # Counted all the same, and a client over its limit hears that first.
            if not limiter.allow("signup", client):
                raise too_many() from None
            raise
        # Each limit's windows in one round trip to Redis. The address is counted under a
        # digest: Redis never holds the address itself.
        address = hashlib.sha256(req.email.encode()).hexdigest()
        # The address only once the client is let through: a reader on a busy shared network
        # (a school, a phone carrier) whose retries are refused keeps their own turns.
        if not (limiter.allow("signup", client) and limiter.allow("signup_address", address)):
            raise too_many()
        down_until: datetime | None = getattr(request.app.state, "database_down_until", None)
        if down_until is not None and clock.now() < down_until:
            log.warning("a sign-up answered 'try again' untried: PostgreSQL did not answer")
            raise unavailable()
        # The one database statement of a sign-up is its INSERT: the course comes from what
        # this process keeps, unless it was published elsewhere a moment ago.
        known = shelf(engine).course(req.sequence)
        if known is not None:
            locale = known.version.locale
        else:
            with session_scope(engine) as session:
                locale = latest_version(session, req.sequence).locale
        # A bot fills in every field, the hidden one too: it gets the same answer, and
        # nothing is taken in.
        if not str(data.get(HONEYPOT) or "").strip():
            request_signup(engine, clock, req)
    except (UnknownSequence, SQLAlchemyError) as exc:
        if isinstance(exc, OperationalError) and exc.statement is None and not is_sqlite(engine):
            # PostgreSQL could not be reached (no statement was sent, so nothing was written):
            # asking again would keep the reader waiting as long again, up to course.db's
            # connection time limit. An error after a statement went out is not this: the
            # sign-up may have been written.
            log.exception("PostgreSQL could not be reached for a sign-up")
            request.app.state.database_down_until = clock.now() + timedelta(
                seconds=UNREACHABLE_SECONDS
            )
            raise unavailable() from exc
        # Asked afresh: the database may have just come back, or had its first course published.
        if not open_courses(engine, settings, fresh=True):  # nothing published yet, or no schema
            raise not_open() from None
        raise
    except InvalidInput as exc:
        if as_json:
            raise
        lang = page_locale(request, form_lang or None)
        return signup_page(
            request,
            open_courses(engine, settings),
            status_of(exc),
            error=say(request, exc, lang),
            values=data,
            error_field=exc.field,
        )
    kick()  # after commit: the next tick takes the sign-up in and sends the confirmation
    if as_json:
        return JSONResponse({"status": "ok", "message": ENROLL_MESSAGE}, status_code=202)
    # The reader just filled in the form in its language; keep to it even if they chose
    # lessons in the other one.
    return page(
        request,
        "check_email.html",
        200,
        locale=form_lang if form_lang in i18n.LOCALES else locale,
    )

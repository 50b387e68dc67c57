"""Typed dependencies for the routes: the settings, the clock, a database session, the queue,
the fields of a form or JSON body, and the reader a link leads to.

The app's state holds what `create_app` was given (tests pass their own clock and queue), so a
route asks for what it needs instead of reaching into globals.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Path, Request
from sqlalchemy import Engine
from sqlmodel import Session

from course.clock import Clock
from course.db import session_scope
from course.errors import InvalidInput
from course.models import SequenceVersion, row_id
from course.ratelimit import Limiter
from course.readers.links import linked_enrollment
from course.readers.personal_data import DATA_LINK_TTL
from course.settings import Settings
from course.tokens import Purpose, read_token
from course.web.errors import Unsupported, too_large
from course.web.nudges import Coalesced
from course.web.openapi import ENROLL_FIELDS, PREFERENCE_FIELDS


# What the app was given, read off its state: `async` because a plain function would be sent to
# the threadpool, a thread hop per dependency per request for a dictionary lookup.
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _session(engine: Annotated[Engine, Depends(_engine)]) -> Iterator[Session]:
    # A route that enqueues work commits first (enqueue after commit): this commit is then a
    # no-op, and an error anywhere rolls back.
    with session_scope(engine) as session:
        yield session


async def _enqueue(request: Request) -> Callable[[list[list[int]]], None]:
    enqueue: Callable[[list[list[int]]], None] = request.app.state.enqueue
    return enqueue


async def _limiter(request: Request) -> Limiter:
    limiter: Limiter = request.app.state.limiter
    return limiter


def client_address(request: Request) -> str:
    """Who is asking, for rate limits (behind a proxy, uvicorn's proxy headers set it)."""
    return request.client.host if request.client else "unknown"


async def _kick(request: Request) -> Callable[[], None]:
    state = request.app.state
    # Made on first use, on the event loop (so once): the app's own kick, coalesced.
    kick: Callable[[], None] | None = getattr(state, "coalesced_kick", None)
    if kick is None:
        kick = state.coalesced_kick = Coalesced(state.kick)
    return kick


SettingsDep = Annotated[Settings, Depends(_settings)]
# A row named in an address: a number no database column can overflow on, so a mistyped or
# made-up one is "not found" or a plain 422, never a 500.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ClockDep = Annotated[Clock, Depends(_clock)]
EngineDep = Annotated[Engine, Depends(_engine)]
SessionDep = Annotated[Session, Depends(_session)]
EnqueueDep = Annotated[Callable[[list[list[int]]], None], Depends(_enqueue)]
KickDep = Annotated[Callable[[], None], Depends(_kick)]
LimiterDep = Annotated[Limiter, Depends(_limiter)]


async def _read(request: Request, limit: int) -> bytes:
    """The body, refused before it is read whole if it is over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()
    return body


async def _raw_body(request: Request) -> bytes:
    """A webhook's body as sent (its signature covers the bytes); a provider's batch of events
    may be larger than a form."""
    return await _read(request, 1_048_576)


RawBodyDep = Annotated[bytes, Depends(_raw_body)]


# Every field a route reads from a form or JSON body (course.web.openapi documents them).
READ = frozenset(ENROLL_FIELDS) | frozenset(PREFERENCE_FIELDS) | {"lang", "website"}


async def _fields(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Form or JSON fields, refusing bodies over the limit before reading them whole. Read here,
    on the event loop, so the route itself can be a plain function that runs on a thread."""
    body = await _read(request, settings.max_body_bytes)
    content_type = request.headers.get("content-type", "")
    if "application/json" in content_type:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise InvalidInput("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise InvalidInput('Send a JSON object with at least an "email" field.')
        # A field a route reads takes one value; anything else in the object is ignored, as
        # an unknown form field is.
        nested = sorted(k for k, v in data.items() if k in READ and isinstance(v, dict | list))
        if nested:
            raise InvalidInput(
                f'Each field takes a single value, not a list or an object: "{nested[0]}".',
                "not_understood",
            )
        return data
    if "application/x-www-form-urlencoded" in content_type or not content_type:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    raise Unsupported("Send the form, or JSON with Content-Type: application/json.")


FieldsDep = Annotated[dict[str, Any], Depends(_fields)]
read_fields = _fields  # for dependencies that read a body and check something more (staff forms)


@dataclass(frozen=True)
class Reader:
    """The enrollment a reader's link leads to, and the language of its course."""

    id: int
    key: str
    locale: str | None


def LinkToken(purpose: Purpose) -> Any:  # noqa: N802  (reads as a type in route signatures)
    """The dependency for a route whose path carries a `{token}` of `purpose`: the reader it
    names, or TokenInvalid / TokenExpired / LinkEnded (a link whose reader is gone)."""

    def reader(token: str, *, settings: SettingsDep, clock: ClockDep, engine: EngineDep) -> Reader:
        max_age = {
            Purpose.CONFIRM: settings.confirm_ttl_days * 86400,
            Purpose.DATA: int(DATA_LINK_TTL.total_seconds()),
        }.get(purpose)
        link = read_token(settings.secret_key, purpose, token, max_age_seconds=max_age, clock=clock)
        with session_scope(engine) as session:
            enrollment = linked_enrollment(session, link)
            version = session.get(SequenceVersion, enrollment.version_id)
            return Reader(
                id=row_id(enrollment),
                key=enrollment.link_key,
                locale=version.locale if version else None,
            )

    return Depends(reader)


ConfirmLink = Annotated[Reader, LinkToken(Purpose.CONFIRM)]
UnsubscribeLink = Annotated[Reader, LinkToken(Purpose.UNSUBSCRIBE)]
DataLink = Annotated[Reader, LinkToken(Purpose.DATA)]
StageLink = Annotated[Reader, LinkToken(Purpose.STAGE)]
PreferencesLink = Annotated[Reader, LinkToken(Purpose.PREFERENCES)]

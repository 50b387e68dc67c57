"""Who is asking, on a staff route: a session cookie or an API token, else NotSignedIn. A form
posted with the cookie must carry the session's CSRF token; a token's caller needs none (no
browser sends it on its own)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response

from course.clock import Clock
from course.db import session_scope
from course.settings import Settings
from course.staff.accounts import Actor, NotPermitted
from course.staff.sign_in import SESSION_HOURS, csrf_ok, csrf_token, session_actor, token_actor
from course.web.deps import FieldsDep
from course.web.errors import NotSignedIn

COOKIE = "homeward_staff"
_WHO = "homeward_staff_actor"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def current(request: Request) -> Actor | None:
    """The staff member behind this request, if any (read once per request)."""
    if _WHO in request.scope:
        found: Actor | None = request.scope[_WHO]
        return found
    clock: Clock = request.app.state.clock
    actor = None
    with session_scope(request.app.state.engine) as session:
        token = _bearer(request)
        if token is not None:
            actor = token_actor(session, clock, token)
        elif cookie := request.cookies.get(COOKIE):
            actor = session_actor(session, clock, cookie)
    request.scope[_WHO] = actor
    return actor


def _signed_in(request: Request) -> Actor:
    actor = current(request)
    if actor is None:
        raise NotSignedIn("Please sign in to the staff pages first.")
    return actor


StaffDep = Annotated[Actor, Depends(_signed_in)]


def csrf_for(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return csrf_token(settings.secret_key, request.cookies.get(COOKIE, ""))


def _form(request: Request, actor: StaffDep, data: FieldsDep) -> tuple[Actor, dict[str, Any]]:
    """The signed-in staff member and the fields they posted, CSRF-checked for a browser.

    Plain functions, so the database read of who is asking runs on a thread, never on the event
    loop; `actor` comes before `data`, so a signed-out post is refused before its body is read.
    """
    settings: Settings = request.app.state.settings
    if actor.via == "session" and not csrf_ok(
        settings.secret_key, request.cookies.get(COOKIE, ""), str(data.get("csrf") or "")
    ):
        raise NotPermitted(
            "This form is out of date (or came from another site). Go back, reload the page "
            "and try again."
        )
    return actor, data


StaffFormDep = Annotated[tuple[Actor, dict[str, Any]], Depends(_form)]


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    settings: Settings = request.app.state.settings
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.base_url.startswith("https://"),
        path="/",
    )

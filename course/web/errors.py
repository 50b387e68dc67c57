"""One map from error to HTTP status, the web's own errors, and the handlers that turn every
error into a clear answer: JSON for API clients, a page in the reader's language for browsers.

Domain code raises domain errors (course.errors) and never knows about HTTP; this module alone
says which status each one gets.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from course.errors import (
    ConfigurationError,
    CourseError,
    InvalidInput,
    LessonInvalid,
    LinkEnded,
    TokenExpired,
    TokenInvalid,
    UnknownSequence,
)
from course.staff.accounts import NotPermitted
from course.staff.drafts import DraftNotFound
from course.staff.helpdesk import CourseNotFound, ReaderNotFound
from course.staff.webhooks import EndpointNotFound
from course.web import i18n
from course.web.pages import page, say, wants_json

log = logging.getLogger(__name__)


def _english(code: str) -> str:
    return i18n.catalog("en")[f"errors.{code}"]


class PageNotFound(CourseError):
    default_code = "not_found"


class NotAllowed(CourseError):
    default_code = "not_allowed"


class TooLarge(CourseError):
    default_code = "too_large"


class Unsupported(CourseError):
    default_code = "unsupported"


class TooMany(CourseError):
    """A client asked too often (course.ratelimit): the same answer for every address."""

    default_code = "too_many"


class NotSignedIn(CourseError):
    """A staff page or API route asked for without a session or token (pages send the browser
    to sign in instead)."""

    default_code = "not_signed_in"


class NotSigned(CourseError):
    """A webhook call without its provider's valid signature, or replayed: refused (401), and
    nothing is changed."""

    default_code = "not_signed"


class NotOpen(CourseError):
    """Nothing is published yet, or the schema is not migrated: sign-up waits (see /health)."""

    default_code = "not_open"


class Unavailable(CourseError):
    """The database could not be reached: nothing was written, and trying again later works."""

    default_code = "unavailable"


class ServerError(CourseError):
    default_code = "server"


# The status of each error, found along its class's ancestry (LinkEnded before TokenInvalid).
STATUS: dict[type[CourseError], int] = {
    InvalidInput: 422,
    LessonInvalid: 422,
    UnknownSequence: 404,
    TokenExpired: 410,
    LinkEnded: 410,
    TokenInvalid: 400,
    PageNotFound: 404,
    NotAllowed: 405,
    TooLarge: 413,
    Unsupported: 415,
    TooMany: 429,
    NotSigned: 401,
    NotSignedIn: 401,
    NotPermitted: 403,
    DraftNotFound: 404,
    ReaderNotFound: 404,
    CourseNotFound: 404,
    EndpointNotFound: 404,
    NotOpen: 503,
    Unavailable: 503,
    ServerError: 500,
    ConfigurationError: 500,
}


def status_of(exc: CourseError) -> int:
    return next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 400)


def not_open() -> NotOpen:
    log.error("no course is open for sign-up: see /health")
    return NotOpen(_english("not_open"))


def unavailable() -> Unavailable:
    return Unavailable(_english("unavailable"))


def too_many() -> TooMany:
    return TooMany(_english("too_many"))


def too_large() -> TooLarge:
    return TooLarge(_english("too_large"))


def _methods_at(request: Request) -> list[str]:
    """The methods some route takes at this request's address."""
    found = []
    for method in ("DELETE", "GET", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            found.append(method)
    return found


def install(app: FastAPI) -> None:
    """Answer every error the app can meet."""

    @app.exception_handler(CourseError)
    async def course_error(request: Request, exc: CourseError) -> Response:
        status = status_of(exc)
        if isinstance(exc, NotSignedIn) and request.url.path.startswith("/staff"):
            # A staff page asked for while signed out: sign in, then come back to it.
            return RedirectResponse(f"/staff/sign-in?next={quote(request.url.path)}", 303)
        if wants_json(request):
            body = {"error": exc.message, **({"code": exc.code} if exc.code else {})}
            return JSONResponse(body, status_code=status)
        return page(request, "error.html", status, message=say(request, exc), code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return await course_error(
            request, InvalidInput(_english("not_understood"), "not_understood")
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error: CourseError
        if exc.status_code == 404:
            error = PageNotFound(_english("not_found"))
        elif exc.status_code == 405:
            answer = await course_error(request, NotAllowed(_english("not_allowed")))
            # Every method some route takes at this address (Starlette names only the first
            # route's); HEAD goes without saying wherever GET does.
            answer.headers["Allow"] = ", ".join(_methods_at(request))
            return answer
        else:
            # No route raises other HTTP errors; keep the status if one ever does.
            answer = await course_error(request, CourseError(str(exc.detail)))
            answer.status_code = exc.status_code
            return answer
        return await course_error(request, error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return await course_error(request, ServerError(_english("server")))

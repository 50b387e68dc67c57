"""FastAPI application: routes are thin; domain errors become clear 4xx answers in one place."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from course import enrollment as verbs
from course.clock import Clock, SystemClock
from course.db import engine_for, session_scope
from course.errors import CourseError, InvalidInput
from course.lessons import published
from course.queue import enqueue_sends, kick_tick
from course.settings import Settings, get_settings
from course.tokens import Purpose, make_token, read_token

log = logging.getLogger(__name__)
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

ENROLL_MESSAGE = (
    "Thank you. If this address can receive our emails, a message with a confirmation link is "
    "on its way. Please check your inbox (and your spam folder)."
)


def wants_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    accept = request.headers.get("accept", "")
    return "application/json" in content_type or (
        "application/json" in accept and "text/html" not in accept
    )


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    return TEMPLATES.TemplateResponse(
        request, name, {"dev": settings.dev, **context}, status_code=status
    )


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    enqueue: Callable[[list[list[int]]], None] = enqueue_sends,
    kick: Callable[[], None] = kick_tick,
) -> FastAPI:
    """The app; `enqueue` and `kick` hand work to Celery unless a caller passes its own."""
    settings = settings or get_settings()
    clock = clock or SystemClock()
    app = FastAPI(
        title="Homeward", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json"
    )
    app.state.settings = settings
    app.state.clock = clock
    engine = engine_for(settings.database_url)

    @app.exception_handler(CourseError)
    async def course_error(request: Request, exc: CourseError) -> Response:
        if wants_json(request):
            return JSONResponse({"error": exc.message}, status_code=exc.status_code)
        return page(request, "error.html", exc.status_code, message=exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return await course_error(
            request, InvalidInput("Some of the information sent was not understood.")
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {
            404: "We could not find that page.",
            405: "That action is not available here.",
        }.get(exc.status_code, str(exc.detail))
        error = CourseError(message)
        error.status_code = exc.status_code
        return await course_error(request, error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        error = CourseError("Something went wrong on our side. Please try again in a few minutes.")
        error.status_code = 500
        return await course_error(request, error)

    def signup_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> HTMLResponse:
        with session_scope(engine) as session:
            courses = {v.slug: (v, n) for v, n in published(session)}
        course = courses.get(settings.default_sequence)
        return page(
            request,
            "signup.html",
            status,
            error=error,
            values=values or {},
            course=course[0] if course else None,
            lesson_count=course[1] if course else 0,
        )

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        return signup_page(request)

    @app.post("/enroll")
    async def enroll(request: Request) -> Response:
        data = await read_body(request, settings.max_body_bytes)
        as_json = wants_json(request)
        try:
            req = verbs.EnrollRequest.parse(data, settings.default_sequence)
            with session_scope(engine) as session:
                ids = verbs.enroll(session, settings, clock, req)
        except InvalidInput as exc:
            if as_json:
                raise
            return signup_page(request, exc.status_code, error=exc.message, values=data)
        enqueue([ids])  # after commit: the worker must find the row
        if as_json:
            return JSONResponse({"status": "ok", "message": ENROLL_MESSAGE}, status_code=202)
        return page(request, "check_email.html", 200, message=ENROLL_MESSAGE)

    @app.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm(request: Request, token: str) -> HTMLResponse:
        enrollment_id = read_token(
            settings.secret_key, Purpose.CONFIRM, token, settings.confirm_ttl_days * 86400, clock
        )
        with session_scope(engine) as session:
            enrollment = verbs.confirm(session, settings, clock, enrollment_id)
            status = enrollment.status
        kick()
        unsubscribe_token = make_token(
            settings.secret_key, Purpose.UNSUBSCRIBE, enrollment_id, clock
        )
        return page(
            request, "confirmed.html", status=200, state=status, unsubscribe_token=unsubscribe_token
        )

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
        read_token(settings.secret_key, Purpose.UNSUBSCRIBE, token, clock=clock)
        return page(request, "unsubscribe.html", token=token, done=False)

    @app.post("/unsubscribe/{token}")
    def unsubscribe(request: Request, token: str) -> Response:
        # RFC 8058: the one-click POST carries no cookies and must not redirect, so the signed
        # token alone authorizes it; there is no CSRF check to pass.
        enrollment_id = read_token(settings.secret_key, Purpose.UNSUBSCRIBE, token, clock=clock)
        with session_scope(engine) as session:
            verbs.unsubscribe(session, clock, enrollment_id)
        return page(request, "unsubscribe.html", token=token, done=True)

    @app.get("/crisis", response_class=HTMLResponse)
    def crisis(request: Request) -> HTMLResponse:
        return page(request, "crisis.html")

    @app.get("/health")
    def health() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            import redis

            client = redis.Redis.from_url(
                settings.redis_url or "redis://127.0.0.1:6379/0", socket_timeout=2
            )
            client.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unhealthy", **checks}, status_code=200 if ok else 503
        )

    if settings.dev:
        from course.web.devmail import router

        app.include_router(router)
    return app


async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """Form or JSON fields, refusing bodies over `limit` bytes before reading them whole."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large()
    content_type = request.headers.get("content-type", "")
    if "application/json" in content_type:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise InvalidInput("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise InvalidInput('Send a JSON object with at least an "email" field.')
        return data
    if "application/x-www-form-urlencoded" in content_type or not content_type:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    raise _unsupported()


def _too_large() -> CourseError:
    error = CourseError("That is more information than this form accepts.")
    error.status_code = 413
    return error


def _unsupported() -> CourseError:
    error = CourseError("Send the form, or JSON with Content-Type: application/json.")
    error.status_code = 415
    return error

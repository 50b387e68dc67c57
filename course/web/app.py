"""FastAPI application: routes are thin; domain errors become clear 4xx answers in one place."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from course import enrollment as verbs
from course.clock import Clock, SystemClock
from course.db import engine_for, schema_state, session_scope
from course.errors import CourseError, InvalidInput, LinkEnded, UnknownSequence
from course.lessons import latest_version, published
from course.models import Enrollment, EnrollmentStatus, SequenceVersion
from course.queue import enqueue_sends, kick_tick
from course.render import link_phones
from course.settings import Settings, get_settings
from course.tokens import Purpose, make_token, read_token
from course.web import i18n

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# `{% filter phones %}` around a page's own words makes every phone number tap-to-call.
TEMPLATES.env.filters["phones"] = lambda html: Markup(link_phones(str(html)))

ENROLL_MESSAGE = i18n.catalog("en")["check_email.message"]
FAVICON = (STATIC / "favicon.ico").read_bytes()


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
    locale: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page in the reader's language (`locale` is their course's, when known)."""
    settings: Settings = request.app.state.settings
    lang = page_locale(request, locale)
    other = "es" if lang == "en" else "en"
    return TEMPLATES.TemplateResponse(
        request,
        name,
        {
            "dev": settings.dev,
            "lang": lang,
            "t": i18n.translator(lang),
            # After a POST, the same address would answer a GET differently (or not at all, as
            # /enroll), so the switch leads to the sign-up page instead.
            "switch_url": f"{request.url.path if request.method == 'GET' else '/'}?lang={other}",
            **context,
        },
        status_code=status,
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
            body = {"error": exc.message, **({"code": exc.code} if exc.code else {})}
            return JSONResponse(body, status_code=exc.status_code)
        return page(
            request, "error.html", exc.status_code, message=say(request, exc), code=exc.code
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        english = i18n.catalog("en")["errors.not_understood"]
        return await course_error(request, InvalidInput(english, "not_understood"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "not_allowed"}.get(exc.status_code, "")
        message = i18n.catalog("en")[f"errors.{code}"] if code else str(exc.detail)
        error = CourseError(message, code)
        error.status_code = exc.status_code
        return await course_error(request, error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        error = CourseError(i18n.catalog("en")["errors.server"], "server")
        error.status_code = 500
        return await course_error(request, error)

    def offered() -> dict[str, tuple[SequenceVersion, int]]:
        """locale -> (newest version, lesson count) of each course the sign-up page offers."""
        with session_scope(engine) as session:
            courses = {v.slug: (v, n) for v, n in published(session)}
        chosen = {
            locale: courses[slug]
            for locale, slug in settings.sequences.items()
            if slug in courses and courses[slug][0].locale == locale
        }
        default = courses.get(settings.default_sequence)
        if default and default[0].locale not in chosen:
            chosen[default[0].locale] = default
        return chosen

    def signup_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        values: dict[str, Any] | None = None,
        courses: dict[str, tuple[SequenceVersion, int]] | None = None,
        error_field: str = "",
    ) -> HTMLResponse:
        values = values or {}
        courses = courses if courses is not None else offered()
        # The form says which language it was shown in, so an error comes back in the same one.
        lang = page_locale(request, str(values.get("lang") or "") or None)
        picked = str(values.get("sequence") or "")
        course = next((c for c in courses.values() if c[0].slug == picked), None)
        course = course or courses.get(lang) or courses.get(i18n.DEFAULT)
        return page(
            request,
            "signup.html",
            status,
            locale=lang,
            error=error,
            error_field=error_field,
            about=settings.about,
            values=values,
            courses=[(locale, v.slug) for locale, (v, _) in sorted(courses.items())],
            course=course[0] if course else None,
            lesson_count=course[1] if course else 0,
        )

    def say(request: Request, exc: CourseError, locale: str | None = None) -> str:
        """The error in the page's language; English keeps the detailed original."""
        lang = page_locale(request, locale)
        key = f"errors.{exc.code}"
        if lang == i18n.DEFAULT or key not in i18n.catalog(lang):
            return exc.message
        return i18n.catalog(lang)[key]

    def open_courses() -> dict[str, tuple[SequenceVersion, int]]:
        """What offered() says, or nothing when the database cannot say (not migrated, say)."""
        try:
            return offered()
        except SQLAlchemyError:
            # The reader gets "come back later"; the operator gets the cause here and on /health.
            log.exception("the published courses cannot be read")
            return {}

    def not_open() -> CourseError:
        log.error("no course is open for sign-up: see /health")
        closed = CourseError(i18n.catalog("en")["errors.not_open"], "not_open")
        closed.status_code = 503
        return closed

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        courses = open_courses()
        if not courses:
            raise not_open()
        return signup_page(request, courses=courses)

    @app.post("/enroll")
    async def enroll(request: Request) -> Response:
        data = await read_body(request, settings.max_body_bytes)
        as_json = wants_json(request)
        if not data.get("sequence") and data.get("locale") in settings.sequences:
            data["sequence"] = settings.sequences[str(data["locale"])]
        try:
            req = verbs.EnrollRequest.parse(data, settings.default_sequence)
            with session_scope(engine) as session:
                ids = verbs.enroll(session, settings, clock, req)
                locale = latest_version(session, req.sequence).locale
        except (UnknownSequence, SQLAlchemyError):
            if not open_courses():  # nothing published yet, or the schema is not there
                raise not_open() from None
            raise
        except InvalidInput as exc:
            if as_json:
                raise
            lang = page_locale(request, str(data.get("lang") or "") or None)
            return signup_page(
                request,
                exc.status_code,
                error=say(request, exc, lang),
                values=data,
                error_field=exc.field,
            )
        enqueue([ids])  # after commit: the worker must find the row
        if as_json:
            return JSONResponse({"status": "ok", "message": ENROLL_MESSAGE}, status_code=202)
        # The reader just filled in the form in its language; keep to it even if they chose
        # lessons in the other one.
        form_lang = str(data.get("lang") or "")
        return page(
            request,
            "check_email.html",
            200,
            locale=form_lang if form_lang in i18n.LOCALES else locale,
        )

    def linked(token: str, purpose: Purpose, max_age: int | None = None) -> Linked:
        """The enrollment a reader's link names and its course's language; LinkEnded when it is
        gone, whatever ids the database has handed out since."""
        link = read_token(settings.secret_key, purpose, token, max_age, clock)
        with session_scope(engine) as session:
            enrollment = verbs.linked_enrollment(session, link)
            locale = session.get(SequenceVersion, enrollment.version_id)
            return Linked(
                enrollment.id,  # type: ignore[arg-type]
                enrollment.link_key,
                locale.locale if locale else None,
            )

    @app.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm(request: Request, token: str) -> HTMLResponse:
        reader = linked(token, Purpose.CONFIRM, settings.confirm_ttl_days * 86400)
        with session_scope(engine) as session:
            enrollment = verbs.confirm(session, settings, clock, reader.id)
            status = enrollment.status
            if status == EnrollmentStatus.ACTIVE and enrollment.next_position > 1:
                status = "under_way"  # the link opened again, after lessons began
        kick()
        unsubscribe_token = make_token(settings.secret_key, Purpose.UNSUBSCRIBE, reader.key, clock)
        return page(
            request,
            "confirmed.html",
            locale=reader.locale,
            state=status,
            unsubscribe_token=unsubscribe_token,
        )

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
        reader = linked(token, Purpose.UNSUBSCRIBE)
        return page(request, "unsubscribe.html", locale=reader.locale, token=token, done=False)

    @app.post("/unsubscribe/{token}")
    def unsubscribe(request: Request, token: str) -> Response:
        # RFC 8058: the one-click POST carries no cookies and must not redirect, so the signed
        # token alone authorizes it; there is no CSRF check to pass.
        reader = linked(token, Purpose.UNSUBSCRIBE)
        with session_scope(engine) as session:
            verbs.unsubscribe(session, clock, reader.id)
        return page(request, "unsubscribe.html", locale=reader.locale, token=token, done=True)

    # A reader's own data. The unsubscribe page (linked from every email) only asks for a link;
    # the link itself is emailed to the address on file and works for a day, so a forwarded
    # lesson or a mail scanner holding the unsubscribe link cannot open the reader's answers.
    data_ttl = int(verbs.DATA_LINK_TTL.total_seconds())
    private = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

    @app.post("/my-data/{token}/link", response_class=HTMLResponse)
    def my_data_link(request: Request, token: str) -> HTMLResponse:
        reader = linked(token, Purpose.UNSUBSCRIBE)
        with session_scope(engine) as session:
            ids = verbs.request_data_link(session, settings, clock, reader.id)
        enqueue([ids])  # after commit: the worker must find the row
        return page(request, "my_data.html", locale=reader.locale, state="link_sent")

    def _export(enrollment_id: int) -> dict[str, Any] | None:
        with session_scope(engine) as session:
            return verbs.export(session, verbs.email_of(session, enrollment_id))

    @app.get("/my-data/{token}", response_class=HTMLResponse)
    def my_data_page(request: Request, token: str) -> HTMLResponse:
        reader = linked(token, Purpose.DATA, data_ttl)
        answer = page(
            request,
            "my_data.html",
            locale=reader.locale,
            state="show",
            token=token,
            data=_export(reader.id),
        )
        answer.headers.update(private)
        return answer

    @app.get("/my-data/{token}/download")
    def my_data_download(token: str) -> Response:
        return JSONResponse(
            _export(linked(token, Purpose.DATA, data_ttl).id),
            headers={
                "Content-Disposition": 'attachment; filename="homeward-my-data.json"',
                **private,
            },
        )

    @app.get("/my-data/{token}/erase", response_class=HTMLResponse)
    def my_data_erase_ask(request: Request, token: str) -> HTMLResponse:
        """Erasing cannot be undone: it is asked once more, on a page of its own."""
        reader = linked(token, Purpose.DATA, data_ttl)
        answer = page(request, "my_data.html", locale=reader.locale, state="ask_erase", token=token)
        answer.headers.update(private)
        return answer

    @app.post("/my-data/{token}/erase", response_class=HTMLResponse)
    def my_data_erase(request: Request, token: str) -> HTMLResponse:
        reader = linked(token, Purpose.DATA, data_ttl)
        with session_scope(engine) as session:
            verbs.erase(session, verbs.email_of(session, reader.id))
        answer = page(request, "my_data.html", locale=reader.locale, state="erased")
        answer.headers.update(private)
        return answer

    @app.get("/stage/{token}", response_class=HTMLResponse)
    def stage_page(request: Request, token: str) -> HTMLResponse:
        """Asks first: a link preview or a mail scanner following the link changes nothing."""
        reader = linked(token, Purpose.STAGE)
        with session_scope(engine) as session:
            enrollment = session.get(Enrollment, reader.id)
            state = _stage_state(enrollment, asked=False)
        return page(request, "stage.html", locale=reader.locale, token=token, state=state)

    @app.post("/stage/{token}", response_class=HTMLResponse)
    def stage(request: Request, token: str) -> HTMLResponse:
        reader = linked(token, Purpose.STAGE)
        with session_scope(engine) as session:
            before = session.get(Enrollment, reader.id)
            already = before is not None and before.started_treatment_at is not None
            enrollment = verbs.start_aftercare(session, clock, reader.id)
            state = "already" if already else _stage_state(enrollment, asked=True)
        return page(request, "stage.html", locale=reader.locale, token=token, state=state)

    @app.get("/crisis", response_class=HTMLResponse)
    def crisis(request: Request) -> HTMLResponse:
        return page(request, "crisis.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(
            FAVICON,
            media_type="image/x-icon",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get("/health")
    def health() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            with engine.connect() as conn:
                schema = schema_state(conn)
            checks["database"] = {
                "current": "ok",
                "behind": "schema out of date: run course db upgrade",
                "ahead": "schema is newer than this code: run the release that migrated it",
            }[schema]
            if schema == "current":
                checks["courses"] = (
                    "ok" if offered() else "none published: run course lessons publish PATH"
                )
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


@dataclass(frozen=True)
class Linked:
    """What a reader's link leads to: their enrollment and the language of its course."""

    id: int
    key: str
    locale: str | None


def _stage_state(enrollment: Enrollment | None, asked: bool) -> str:
    if enrollment is None:
        raise LinkEnded()
    if enrollment.status != EnrollmentStatus.ACTIVE:
        return "inactive"
    if enrollment.started_treatment_at is not None:
        return "done" if asked else "already"
    return "ask"


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
        nested = sorted(k for k, v in data.items() if isinstance(v, (dict, list)))
        if nested:
            raise InvalidInput(
                f'Each field takes a single value, not a list or an object: "{nested[0]}".',
                "not_understood",
            )
        return data
    if "application/x-www-form-urlencoded" in content_type or not content_type:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    raise _unsupported()


def _too_large() -> CourseError:
    error = CourseError(i18n.catalog("en")["errors.too_large"], "too_large")
    error.status_code = 413
    return error


def _unsupported() -> CourseError:
    error = CourseError(
        "Send the form, or JSON with Content-Type: application/json.", "unsupported"
    )
    error.status_code = 415
    return error

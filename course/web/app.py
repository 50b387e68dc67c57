"""The web app, assembled: its state, its routers and its error handlers. Routes live in
`routes/`, one module per resource; errors become answers in `errors`."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from course.clock import Clock, SystemClock
from course.db import engine_for
from course.queue import enqueue_sends, kick_tick
from course.settings import Settings, get_settings
from course.web import errors
from course.web.routes import confirm, health, info, my_data, signup, stage, unsubscribe


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    enqueue: Callable[[list[list[int]]], None] = enqueue_sends,
    kick: Callable[[], None] = kick_tick,
) -> FastAPI:
    """The app; `enqueue` and `kick` hand work to Celery unless a caller passes its own."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Homeward", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json"
    )
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    app.state.engine = engine_for(settings.database_url)
    app.state.enqueue = enqueue
    app.state.kick = kick
    errors.install(app)
    for module in (signup, confirm, unsubscribe, my_data, stage, info, health):
        app.include_router(module.router)
    if settings.dev:  # every email caught, links included: never where others can reach it
        from course.web.routes import dev_mailbox

        app.include_router(dev_mailbox.router)
    return app

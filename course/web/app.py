"""The web app, assembled: its state, its routers and its error handlers. Routes live in
`routes/`, one module per resource; errors become answers in `errors`."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from course.clock import Clock, SystemClock
from course.db import engine_for
from course.queue import enqueue_sends, kick_tick
from course.ratelimit import Limiter, RedisLimiter
from course.settings import Settings, get_settings
from course.web import errors, metrics, openapi
from course.web.pages import KeptPages
from course.web.routes import (
    confirm,
    health,
    helpful,
    info,
    my_data,
    preferences,
    signup,
    stage,
    unsubscribe,
    webhooks,
)
from course.web.staff import api as staff_api
from course.web.staff import pages as staff_pages
from course.web.staff import readers as staff_readers
from course.web.staff import readers_api as staff_readers_api
from course.web.staff import webhooks as staff_webhooks

STATIC = Path(__file__).parent / "static"
# Every router of the app, readers' and staff's (a test walks them all).
ROUTERS = [
    module.router
    for module in (
        signup,
        confirm,
        unsubscribe,
        preferences,
        my_data,
        stage,
        helpful,
        info,
        health,
        webhooks,
        staff_pages,
        staff_readers,
        staff_api,
        staff_readers_api,
    )
] + [staff_webhooks.router, staff_webhooks.api, metrics.router]


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    enqueue: Callable[[list[list[int]]], None] = enqueue_sends,
    kick: Callable[[], None] = kick_tick,
    limiter: Limiter | None = None,
) -> FastAPI:
    """The app; `enqueue` and `kick` hand work to Celery, and `limiter` counts requests in
    Redis, unless a caller passes its own."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Homeward", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json"
    )
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    app.state.engine = engine_for(settings.database_url)
    app.state.enqueue = enqueue
    app.state.kick = kick
    app.state.home_pages = KeptPages()
    app.state.limiter = limiter or RedisLimiter(
        settings.redis_url or "redis://127.0.0.1:6379/0",
        {
            "signup": settings.signup_rate,
            "signup_address": settings.signup_address_rate,
            "data_link": settings.data_link_rate,
            "staff_sign_in": settings.staff_sign_in_rate,
            "staff_sign_in_address": settings.staff_sign_in_address_rate,
        },
    )
    errors.install(app)
    openapi.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if settings.dev:  # every email caught, links included: never where others can reach it
        from course.web.routes import dev_mailbox

        app.include_router(dev_mailbox.router)
    return app


def serving_app(settings: Settings | None = None) -> FastAPI:
    """The app as `course web` and `course dev` serve it, one per process."""
    app = create_app(settings)
    # What is loaded by now (FastAPI, SQLAlchemy, the models, the routes) lives as long as the
    # process: kept out of the collector's full passes. Each pass walked all of it and held
    # every request in the process for up to 180 ms, about ten in 15 s under a burst of
    # sign-ups. (Tests build many apps in one process, so create_app itself does not freeze.)
    gc.freeze()
    return app

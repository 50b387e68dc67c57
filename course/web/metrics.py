"""`/metrics`: Prometheus's scrape of the web app (course.metrics), with the due backlog.

A scraper has no session, and the figures are staff's business, so the route takes a bearer
token of its own (COURSE_METRICS_TOKEN, Prometheus's `authorization` setting). Without one set,
the route is off and answers 404 as any unknown address does.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from course import backlog, metrics
from course.clock import Clock
from course.web.deps import ClockDep, EngineDep, SettingsDep

router = APIRouter()


def _collector(request: Request, engine: Engine, clock: Clock) -> metrics.BacklogCollector:
    # One per app, so its few seconds of cache are shared by every scrape this process answers.
    state = request.app.state
    found: metrics.BacklogCollector | None = getattr(state, "metrics_backlog", None)
    if found is None:
        found = metrics.BacklogCollector(lambda: backlog.measure(engine, clock.now()), clock.now)
        state.metrics_backlog = found
    return found


def _bearer(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


@router.get("/metrics", include_in_schema=False)
def scrape(
    request: Request, *, settings: SettingsDep, engine: EngineDep, clock: ClockDep
) -> Response:
    # A plain def: measuring the backlog is a database query, kept off the event loop.
    if not settings.metrics_token:
        raise HTTPException(404)  # answered as any unknown address is: nothing shows it exists
    if not hmac.compare_digest(_bearer(request).encode(), settings.metrics_token.encode()):
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition(
        request.headers.get("accept"), _collector(request, engine, clock)
    )
    return Response(body, media_type=content_type)

"""Staff pages and API for outbound webhooks (course.staff.webhooks): admins connect other
systems, see how each endpoint is doing (and why one was paused), pause, resume and remove."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from course.db import session_scope
from course.errors import InvalidInput
from course.outbound import EVENTS
from course.staff import webhooks
from course.staff.accounts import Actor
from course.web.deps import ClockDep, EngineDep, RowId
from course.web.openapi import answers
from course.web.staff.api import TokenDep
from course.web.staff.auth import StaffDep, StaffFormDep
from course.web.staff.pages import staff_page

router = APIRouter(prefix="/staff", include_in_schema=False)
api = APIRouter(
    prefix="/api/staff", tags=["staff: webhooks"], responses=answers(400, 401, 403, 404, 422)
)


def _page(request: Request, actor: Actor, status: int = 200, **context: Any) -> HTMLResponse:
    actor.require_admin()
    with session_scope(request.app.state.engine) as session:
        endpoints = webhooks.everything(session)
    return staff_page(
        request,
        "webhooks.html",
        status,
        actor=actor,
        section="webhooks",
        endpoints=endpoints,
        events=EVENTS,
        keep_days=request.app.state.settings.webhook_keep_days,
        **context,
    )


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks_page(request: Request, actor: StaffDep) -> HTMLResponse:
    return _page(request, actor)


@router.post("/webhooks")
def add(request: Request, form: StaffFormDep, *, clock: ClockDep, engine: EngineDep) -> Response:
    actor, data = form
    # One tick box per event (a form repeats no name: course.web.deps keeps one value each).
    events = [name.removeprefix("event:") for name in data if name.startswith("event:")]
    try:
        with session_scope(engine) as session:
            endpoint = webhooks.add(
                session, clock, actor, url=str(data.get("url") or ""), events=events
            )
            secret = endpoint.secret
    except InvalidInput as exc:
        return _page(request, actor, 422, error=exc.message, error_field=exc.field)
    return _page(request, actor, new_secret=secret, notice="Connected.")


@router.post("/webhooks/{endpoint_id}/{action}")
def change(
    request: Request,
    form: StaffFormDep,
    *,
    endpoint_id: RowId,
    action: str,
    clock: ClockDep,
    engine: EngineDep,
) -> Response:
    actor, _ = form
    do = {"pause": webhooks.pause, "resume": webhooks.resume, "remove": webhooks.remove}.get(action)
    if do is None:
        raise webhooks.EndpointNotFound()
    with session_scope(engine) as session:
        do(session, clock, actor, endpoint_id=endpoint_id)
    return RedirectResponse("/staff/webhooks", status_code=303)


class NewEndpoint(BaseModel):
    url: str = Field(max_length=500, description="https (plain http only to this machine)")
    events: list[str] = Field(min_length=1, description=f"Any of: {', '.join(EVENTS)}")


def _json(e: webhooks.Endpoint) -> dict[str, Any]:
    return {
        "id": e.row.id,
        "url": e.row.url,
        "events": e.events,
        "paused_at": e.row.paused_at.isoformat() if e.row.paused_at else None,
        "paused_reason": e.row.paused_reason,
        "failures_in_a_row": e.row.failures,
        "last_error": e.row.last_error,
        "waiting": e.waiting,
        "delivered": e.delivered,
    }


@api.get("/webhooks")
def list_endpoints(*, actor: TokenDep, engine: EngineDep) -> Any:
    """Every endpoint and its messages: `delivered` counts the posts that went through since it
    was connected, `waiting` those still to post."""
    actor.require_admin()
    with session_scope(engine) as session:
        return [_json(e) for e in webhooks.everything(session)]


@api.post("/webhooks", status_code=201)
def add_endpoint(*, body: NewEndpoint, actor: TokenDep, clock: ClockDep, engine: EngineDep) -> Any:
    with session_scope(engine) as session:
        endpoint = webhooks.add(session, clock, actor, url=body.url, events=body.events)
        return {"id": endpoint.id, "secret": endpoint.secret}


@api.post("/webhooks/{endpoint_id}/pause")
def pause_endpoint(
    *, endpoint_id: RowId, actor: TokenDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        webhooks.pause(session, clock, actor, endpoint_id=endpoint_id)
    return {"paused": True}


@api.post("/webhooks/{endpoint_id}/resume")
def resume_endpoint(
    *, endpoint_id: RowId, actor: TokenDep, clock: ClockDep, engine: EngineDep
) -> Any:
    with session_scope(engine) as session:
        webhooks.resume(session, clock, actor, endpoint_id=endpoint_id)
    return {"paused": False}


@api.delete("/webhooks/{endpoint_id}", status_code=204)
def remove_endpoint(
    *, endpoint_id: RowId, actor: TokenDep, clock: ClockDep, engine: EngineDep
) -> Response:
    with session_scope(engine) as session:
        webhooks.remove(session, clock, actor, endpoint_id=endpoint_id)
    return Response(status_code=204)

"""Other systems staff connect: endpoints that get signed posts when readers sign up, confirm,
get a lesson, finish, leave, bounce or start treatment (course.outbound). Admins manage them;
every change is in the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from course.clock import Clock
from course.errors import CourseError, InvalidInput
from course.models import WebhookEndpoint, WebhookMessage, row_id
from course.outbound import EVENTS, new_secret
from course.staff import audit
from course.staff.accounts import Actor

# Plain http only to this machine (a receiver beside the service); anything else is https.
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class EndpointNotFound(CourseError):
    default_code = "not_found"

    def __init__(self) -> None:
        super().__init__("There is no such webhook endpoint (it may have been removed).")


@dataclass(frozen=True)
class Endpoint:
    row: WebhookEndpoint
    waiting: int

    @property
    def delivered(self) -> int:
        return self.row.delivered

    @property
    def events(self) -> list[str]:
        return self.row.events.strip(",").split(",")


def _url(raw: str) -> str:
    url = raw.strip()
    parts = urlsplit(url)
    loopback = parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK
    if not (parts.scheme == "https" or loopback) or not parts.hostname or len(url) > 500:
        raise InvalidInput(
            "The address must start with https:// (plain http only to this machine).",
            "url",
            "url",
        )
    return url


def add(
    session: Session, clock: Clock, actor: Actor, *, url: str, events: list[str]
) -> WebhookEndpoint:
    actor.require_admin()
    chosen = [e for e in EVENTS if e in events]
    if not chosen or len(chosen) != len(set(events)):
        raise InvalidInput(f"Choose one or more events: {', '.join(EVENTS)}.", "events", "events")
    endpoint = WebhookEndpoint(
        url=_url(url),
        events="," + ",".join(chosen) + ",",
        secret=new_secret(),
        created_at=clock.now(),
        created_by=actor.label,
    )
    session.add(endpoint)
    session.flush()
    audit.record(session, clock, actor, action="webhook.add", target=endpoint.url, events=chosen)
    return endpoint


def _get(session: Session, endpoint_id: int) -> WebhookEndpoint:
    found = session.get(WebhookEndpoint, endpoint_id)
    if found is None:
        raise EndpointNotFound()
    return found


def pause(session: Session, clock: Clock, actor: Actor, *, endpoint_id: int) -> None:
    actor.require_admin()
    endpoint = _get(session, endpoint_id)
    endpoint.paused_at, endpoint.paused_reason = clock.now(), f"paused by {actor.email or 'cli'}"
    session.add(endpoint)
    audit.record(session, clock, actor, action="webhook.pause", target=endpoint.url)


def resume(session: Session, clock: Clock, actor: Actor, *, endpoint_id: int) -> None:
    """Post again: what waited goes out, from the next attempt on."""
    actor.require_admin()
    endpoint = _get(session, endpoint_id)
    endpoint.paused_at, endpoint.paused_reason, endpoint.failures = None, "", 0
    session.add(endpoint)
    # What waited goes out at the next run, however far its backoff had pushed it.
    session.execute(
        update(WebhookMessage)
        .where(
            col(WebhookMessage.endpoint_id) == endpoint_id,
            col(WebhookMessage.delivered_at).is_(None),
        )
        .values(next_attempt_at=clock.now(), gave_up_at=None, attempts=0)
    )
    audit.record(session, clock, actor, action="webhook.resume", target=endpoint.url)


def remove(session: Session, clock: Clock, actor: Actor, *, endpoint_id: int) -> None:
    actor.require_admin()
    endpoint = _get(session, endpoint_id)
    session.execute(delete(WebhookMessage).where(col(WebhookMessage.endpoint_id) == endpoint_id))
    session.delete(endpoint)
    audit.record(session, clock, actor, action="webhook.remove", target=endpoint.url)


def everything(session: Session) -> list[Endpoint]:
    """Every endpoint with its messages still to post counted (those delivered, it counts
    itself as they go)."""
    # Through the due index, whose entries are exactly those: a count grouped over the whole
    # outbox read a month of posted messages (millions) on every view of the page.
    waiting = dict(
        session.exec(
            select(col(WebhookMessage.endpoint_id), func.count())
            .where(
                col(WebhookMessage.delivered_at).is_(None),
                col(WebhookMessage.gave_up_at).is_(None),
            )
            .group_by(col(WebhookMessage.endpoint_id))
        ).all()
    )
    return [
        Endpoint(row=e, waiting=waiting.get(row_id(e), 0))
        for e in session.exec(select(WebhookEndpoint).order_by(col(WebhookEndpoint.id))).all()
    ]

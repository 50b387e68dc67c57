"""Outbound webhooks: telling other systems what happened, from the database.

Every event becomes a row per endpoint that wants it (an outbox, course.models.WebhookMessage),
written in the same transaction as what it tells of: a sign-up, a confirmation, a switch to
recovery lessons, an unsubscribe, a bounce. Sent lessons (and the courses they complete) are
swept into the outbox from the delivery table by a periodic task instead, so the send loop
never does a single write more for them: the sweep looks back over a window longer than any
send can take to commit, and a unique key keeps a message from being queued twice.

A periodic task posts due messages, signed per the Standard Webhooks specification (the
`webhook-id`, `webhook-timestamp` and `webhook-signature` headers), never in the way of
sending lessons (its own task, its own short timeouts). A failed post is tried again with
backoff (RETRY_AFTER); after GIVE_UP_AFTER failures in a row an endpoint is paused, loudly,
with the reason staff see on the Webhooks page, until staff resume it. Payloads carry ids,
never a reader's address or answers: a receiving system asks the staff API for more.
"""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from course.clock import Clock, as_utc
from course.db import is_sqlite
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    SequenceVersion,
    WebhookEndpoint,
    WebhookMessage,
    WebhookSweep,
)

log = logging.getLogger(__name__)

EVENTS = (
    "enrolled",
    "confirmed",
    "lesson.sent",
    "completed",
    "unsubscribed",
    "bounced",
    "treatment.started",
)
# After the first failure, the next tries come this long after the one before (then give up).
RETRY_AFTER = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
)
# Failures in a row, over any of its messages, that pause an endpoint.
GIVE_UP_AFTER = 8
POST_TIMEOUT = 10.0
# A lesson marked sent is committed within its lease; the sweep looks back further than that.
SWEEP_LOOKBACK = timedelta(minutes=10)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _insert(conn: Connection | Session) -> Any:
    name = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    return sqlite.insert if name == "sqlite" else postgresql.insert


def emit(
    conn: Connection | Session,
    *,
    event: str,
    about: str,
    payload: dict[str, Any],
    now: datetime,
) -> None:
    """Queue `event` for every endpoint that wants it, in the caller's transaction. One
    statement, whatever the number of endpoints (none: it writes nothing)."""
    wants = select(
        col(WebhookEndpoint.id),
        literal(event),
        literal(about),
        literal(payload, WebhookMessage.__table__.c.payload.type),  # type: ignore[attr-defined]
        literal(now, WebhookMessage.__table__.c.created_at.type),  # type: ignore[attr-defined]
        literal(now, WebhookMessage.__table__.c.next_attempt_at.type),  # type: ignore[attr-defined]
        literal(0),
        literal(""),
    ).where(col(WebhookEndpoint.events).like(f"%,{event},%"))
    columns = [
        "endpoint_id",
        "event",
        "about",
        "payload",
        "created_at",
        "next_attempt_at",
        "attempts",
        "last_error",
    ]
    conn.execute(_insert(conn)(WebhookMessage).from_select(columns, wants).on_conflict_do_nothing())


def enrollment_event(
    conn: Connection | Session, *, event: str, enrollment: Enrollment, now: datetime
) -> None:
    """An event about one reader's course: which reader, which course, where they are."""
    emit(
        conn,
        event=event,
        about=f"enrollment:{enrollment.id}@{as_utc(now).isoformat()}",
        payload={
            "enrollment": enrollment.id,
            "reader": enrollment.subscriber_id,
            "course": enrollment.sequence_slug,
            "next_lesson": enrollment.next_position,
        },
        now=now,
    )


def sweep(engine: Engine, clock: Clock) -> int:
    """Turn lessons sent since the last sweep (and the courses they completed) into messages.
    Returns how many messages were queued."""
    now = clock.now()
    queued = 0
    with engine.begin() as conn:
        mark = conn.execute(select(WebhookSweep).with_for_update()).first()
        endpoints = conn.execute(
            select(col(WebhookEndpoint.events), col(WebhookEndpoint.created_at))
        ).all()
        wanting = [
            as_utc(made)
            for events, made in endpoints
            if {"lesson.sent", "completed"} & set(events.strip(",").split(","))
        ]
        # Never swept: from when the first endpoint that wants these events was connected.
        since = as_utc(mark.swept_to) - SWEEP_LOOKBACK if mark else min(wanting, default=now)
        if wanting:
            sent = conn.execute(
                select(
                    col(Delivery.id),
                    col(Delivery.position),
                    col(Delivery.sent_at),
                    col(Enrollment.id),
                    col(Enrollment.subscriber_id),
                    col(Enrollment.status),
                    col(Enrollment.ended_at),
                    col(SequenceVersion.slug),
                    col(SequenceVersion.version),
                )
                .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
                .join(SequenceVersion, col(SequenceVersion.id) == col(Delivery.version_id))
                .where(
                    col(Delivery.sent_at) > since,
                    col(Delivery.sent_at) <= now,
                    col(Delivery.kind) == DeliveryKind.LESSON,
                    col(Delivery.status) == DeliveryStatus.SENT,
                )
                .order_by(col(Delivery.sent_at), col(Delivery.id))
            ).all()
            for d_id, position, sent_at, e_id, reader, status, ended_at, slug, version in sent:
                payload = {
                    "enrollment": e_id,
                    "reader": reader,
                    "course": slug,
                    "version": version,
                    "lesson": position,
                    "sent_at": as_utc(sent_at).isoformat() if sent_at else None,
                }
                emit(conn, event="lesson.sent", about=f"delivery:{d_id}", payload=payload, now=now)
                # Completion is written in the same transaction as the last lesson's "sent".
                if status == EnrollmentStatus.COMPLETED and ended_at == sent_at:
                    emit(
                        conn,
                        event="completed",
                        about=f"enrollment:{e_id}",
                        payload=payload,
                        now=now,
                    )
                queued += 1
        if mark is None:  # the first sweep (two at once: one writes it)
            conn.execute(
                _insert(conn)(WebhookSweep).values(id=1, swept_to=now).on_conflict_do_nothing()
            )
        else:
            conn.execute(update(WebhookSweep).values(swept_to=now))
    return queued


def _claim(engine: Engine, now: datetime, *, limit: int) -> list[tuple[WebhookMessage, str, str]]:
    """Due messages of endpoints that are not paused, leased to this caller."""
    with Session(engine) as session, session.begin():
        query = (
            select(WebhookMessage, col(WebhookEndpoint.url), col(WebhookEndpoint.secret))
            .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookMessage.endpoint_id))
            .where(
                col(WebhookMessage.delivered_at).is_(None),
                col(WebhookMessage.gave_up_at).is_(None),
                col(WebhookMessage.next_attempt_at) <= now,
                col(WebhookEndpoint.paused_at).is_(None),
                (col(WebhookMessage.lease_until).is_(None))
                | (col(WebhookMessage.lease_until) < now),
            )
            .order_by(col(WebhookMessage.id))
            .limit(limit)
        )
        if not is_sqlite(engine):
            query = query.with_for_update(skip_locked=True, of=WebhookMessage)
        found = [(m, url, secret) for m, url, secret in session.execute(query).all()]
        for message, _, _ in found:
            message.lease_until = now + timedelta(seconds=POST_TIMEOUT * 3)
        session.flush()
        session.expunge_all()
    return found


def post_due(engine: Engine, clock: Clock, *, limit: int = 200) -> tuple[int, int]:
    """Post every due message once. Returns (delivered, failed)."""
    import httpx
    from standardwebhooks import Webhook

    now = clock.now()
    delivered = failed = 0
    with httpx.Client(timeout=POST_TIMEOUT, follow_redirects=False) as client:
        for message, url, secret in _claim(engine, now, limit=limit):
            body = _body(message)
            msg_id = f"msg_{message.id}"
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(secret).sign(msg_id, now, body),
                "user-agent": "Homeward-Webhooks/1",
            }
            try:
                answer = client.post(url, content=body, headers=headers)
                error = "" if answer.is_success else f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
            _outcome(engine, message, error=error, now=clock.now())
            if error:
                failed += 1
            else:
                delivered += 1
    return delivered, failed


def _body(message: WebhookMessage) -> str:
    import json

    created = as_utc(message.created_at).isoformat()
    return json.dumps(
        {"type": message.event, "timestamp": created, "data": message.payload},
        separators=(",", ":"),
    )


def _outcome(engine: Engine, message: WebhookMessage, *, error: str, now: datetime) -> None:
    with engine.begin() as conn:
        this = col(WebhookMessage.id) == message.id
        endpoint = col(WebhookEndpoint.id) == message.endpoint_id
        if not error:
            conn.execute(
                update(WebhookMessage).where(this).values(delivered_at=now, lease_until=None)
            )
            conn.execute(
                update(WebhookEndpoint)
                .where(endpoint)
                .values(failures=0, last_error="", last_success_at=now)
            )
            return
        attempts = message.attempts + 1
        later = RETRY_AFTER[attempts - 1] if attempts <= len(RETRY_AFTER) else None
        conn.execute(
            update(WebhookMessage)
            .where(this)
            .values(
                attempts=attempts,
                lease_until=None,
                last_error=error,
                next_attempt_at=now + later if later else message.next_attempt_at,
                gave_up_at=None if later else now,
            )
        )
        conn.execute(
            update(WebhookEndpoint)
            .where(endpoint)
            .values(failures=col(WebhookEndpoint.failures) + 1, last_error=error)
        )
        paused = conn.execute(
            update(WebhookEndpoint)
            .where(
                and_(
                    endpoint,
                    col(WebhookEndpoint.failures) >= GIVE_UP_AFTER,
                    col(WebhookEndpoint.paused_at).is_(None),
                )
            )
            .values(
                paused_at=now,
                paused_reason=f"{GIVE_UP_AFTER} posts in a row failed; the last: {error}"[:500],
            )
            .returning(col(WebhookEndpoint.url))
        ).first()
    if paused:
        log.error(
            "webhook endpoint %s paused after %d failures in a row (last: %s); its messages wait"
            " until staff resume it",
            paused[0],
            GIVE_UP_AFTER,
            error,
        )

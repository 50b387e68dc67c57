"""Outbound webhooks: telling other systems what happened, from the database.

Every event becomes a row per endpoint that wants it (an outbox, course.models.WebhookMessage),
written in the same transaction as what it tells of: a sign-up, a confirmation, a switch to
recovery lessons, an unsubscribe, a bounce. Sent lessons (and the courses they complete) are
swept into the outbox from the delivery table by a periodic task instead, so the send loop
never does a single write more for them: the sweep looks back over a window longer than any
send can take to commit, and a unique key keeps a message from being queued twice.

A periodic task posts due messages, up to ten of each endpoint at a time for at most half a
minute, each signed as it leaves per the Standard Webhooks specification (the `webhook-id`,
`webhook-timestamp` and `webhook-signature` headers). An endpoint that fails is left alone for
the rest of the run, so a receiver that is down costs one timeout a run, not one per message,
and sending lessons is never held up for long. A failed post is tried again with backoff
(RETRY_AFTER). An endpoint is paused, loudly, with the reason staff see on the Webhooks page,
after GIVE_UP_AFTER runs in a row that failed on it, or when one message has run out of tries;
resuming sends what waited. Payloads carry ids, never a reader's address or answers: a
receiving system asks the staff API for more.
"""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    and_,
    any_,
    bindparam,
    delete,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from course.clock import Clock, as_utc
from course.db import IN_LIST, is_sqlite
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


def _wanting(event: str) -> ColumnElement[bool]:
    """The endpoints that want `event` (their events are stored as ",a,b,")."""
    return col(WebhookEndpoint.events).like(f"%,{event},%")


def wanted(conn: Connection | Session, event: str) -> bool:
    """Whether any endpoint wants `event`: writing many events can skip them all if not."""
    return (
        conn.execute(select(col(WebhookEndpoint.id)).where(_wanting(event)).limit(1)).first()
        is not None
    )


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
    ).where(_wanting(event))
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
    """Turn lessons sent, and courses completed, since the last sweep into messages, in one
    batch. Returns how many events were looked at (each queued once, whatever the window)."""
    now = clock.now()
    with engine.begin() as conn:
        mark = conn.execute(select(WebhookSweep).with_for_update()).first()
        endpoints = conn.execute(
            select(
                col(WebhookEndpoint.id),
                col(WebhookEndpoint.events),
                col(WebhookEndpoint.created_at),
            )
        ).all()
        wants = {
            event: [e_id for e_id, events, _ in endpoints if e_id and f",{event}," in events]
            for event in ("lesson.sent", "completed")
        }
        first = [
            as_utc(made) for e_id, _, made in endpoints if any(e_id in w for w in wants.values())
        ]
        # Never swept: from when the first endpoint that wants these events was connected.
        since = as_utc(mark.swept_to) - SWEEP_LOOKBACK if mark else min(first, default=now)
        rows: list[dict[str, Any]] = []
        if wants["lesson.sent"]:
            sent = conn.execute(
                select(
                    col(Delivery.id),
                    col(Delivery.position),
                    col(Delivery.sent_at),
                    col(Enrollment.id),
                    col(Enrollment.subscriber_id),
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
            for d_id, position, sent_at, e_id, reader, slug, version in sent:
                payload = {
                    "enrollment": e_id,
                    "reader": reader,
                    "course": slug,
                    "version": version,
                    "lesson": position,
                    "sent_at": as_utc(sent_at).isoformat() if sent_at else None,
                }
                rows += _rows(
                    wants["lesson.sent"],
                    "lesson.sent",
                    about=f"delivery:{d_id}",
                    payload=payload,
                    now=now,
                )
        if wants["completed"]:
            # However a course came to its end (its last lesson sent, a replan, a new version).
            ended = conn.execute(
                select(
                    col(Enrollment.id),
                    col(Enrollment.subscriber_id),
                    col(Enrollment.sequence_slug),
                    col(Enrollment.ended_at),
                )
                .where(
                    col(Enrollment.ended_at) > since,
                    col(Enrollment.ended_at) <= now,
                    col(Enrollment.status) == EnrollmentStatus.COMPLETED,
                )
                .order_by(col(Enrollment.ended_at), col(Enrollment.id))
            ).all()
            for e_id, reader, slug, ended_at in ended:
                at = as_utc(ended_at).isoformat() if ended_at else ""
                payload = {"enrollment": e_id, "reader": reader, "course": slug, "ended_at": at}
                rows += _rows(
                    wants["completed"],
                    "completed",
                    about=f"enrollment:{e_id}@{at}",
                    payload=payload,
                    now=now,
                )
        if rows:  # one statement, executed for every row at once
            conn.execute(_insert(conn)(WebhookMessage).on_conflict_do_nothing(), rows)
        if mark is None:  # the first sweep (two at once: one writes it)
            conn.execute(
                _insert(conn)(WebhookSweep).values(id=1, swept_to=now).on_conflict_do_nothing()
            )
        else:
            conn.execute(update(WebhookSweep).values(swept_to=now))
    return len(rows)


def _rows(
    endpoint_ids: list[int], event: str, *, about: str, payload: dict[str, Any], now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "endpoint_id": endpoint_id,
            "event": event,
            "about": about,
            "payload": payload,
            "created_at": now,
            "next_attempt_at": now,
            "attempts": 0,
            "last_error": "",
        }
        for endpoint_id in endpoint_ids
    ]


# Messages one run takes at a time, and how long it may hold them: a lease that outlives the
# posts it covers, so no second run can post them too.
CLAIM = 10
RUN_SECONDS = 30.0
# Longer than a run holds what it claimed: it takes no new post after RUN_SECONDS, and the one
# under way may wait POST_TIMEOUT on each of connecting, sending and reading, then for the
# database. Shorter, another run could take a message back while it is being posted.
LEASE = timedelta(seconds=POST_TIMEOUT * (CLAIM + 1))


def _claim(
    engine: Engine, now: datetime, *, skip: set[int]
) -> list[tuple[WebhookMessage, str, str]]:
    """Due messages of endpoints that are neither paused nor in `skip`, leased to this caller:
    up to CLAIM of each endpoint, oldest first.

    Each endpoint's are looked for apart, through its own part of the due index: looked for
    among every endpoint's at once, a paused endpoint's backlog (a receiver down over a
    weekend: a million lessons) was walked past on every run, every five seconds.
    """
    with Session(engine) as session, session.begin():
        endpoints = session.execute(
            select(col(WebhookEndpoint.id), col(WebhookEndpoint.url), col(WebhookEndpoint.secret))
            .where(col(WebhookEndpoint.paused_at).is_(None))
            .order_by(col(WebhookEndpoint.id))
        ).all()
        found: list[tuple[WebhookMessage, str, str]] = []
        for endpoint_id, url, secret in endpoints:
            if endpoint_id in skip:
                continue
            query = (
                select(WebhookMessage)
                .where(
                    col(WebhookMessage.delivered_at).is_(None),
                    col(WebhookMessage.gave_up_at).is_(None),
                    col(WebhookMessage.next_attempt_at) <= now,
                    (col(WebhookMessage.lease_until).is_(None))
                    | (col(WebhookMessage.lease_until) < now),
                )
                .limit(CLAIM)
            )
            if is_sqlite(engine):
                query = query.where(col(WebhookMessage.endpoint_id) == endpoint_id).order_by(
                    col(WebhookMessage.id)
                )
            else:
                # By endpoint and id, the endpoint as `= ANY(array)`: given `endpoint_id = x`,
                # PostgreSQL drops the endpoint from the order and may walk the primary key
                # from the oldest message instead, past every other endpoint's, sizing that
                # walk as if what it looks for were spread evenly rather than all at the end.
                endpoint = bindparam("endpoint", [endpoint_id], type_=postgresql.ARRAY(Integer))
                query = (
                    query.where(col(WebhookMessage.endpoint_id) == any_(endpoint))
                    .order_by(col(WebhookMessage.endpoint_id), col(WebhookMessage.id))
                    .with_for_update(skip_locked=True)
                )
            found += [(m, url, secret) for m in session.execute(query).scalars()]
        for message, _, _ in found:
            message.lease_until = now + LEASE
        session.flush()
        session.expunge_all()
    return found


def post_due(engine: Engine, clock: Clock) -> tuple[int, int]:
    """Post due messages, a small batch at a time, for at most RUN_SECONDS. An endpoint that
    fails is left alone for the rest of the run (one failure a run counts against it), so a
    receiver that is down costs one timeout, not one per message. Returns (delivered, failed)."""
    import time

    import httpx
    from standardwebhooks import Webhook

    delivered = failed = 0
    failing: set[int] = set()
    started = time.monotonic()
    with httpx.Client(timeout=POST_TIMEOUT, follow_redirects=False) as client:
        while time.monotonic() - started < RUN_SECONDS:
            batch = _claim(engine, clock.now(), skip=failing)
            if not batch:
                break  # nothing due, or only for endpoints that failed in this run
            for message, url, secret in batch:
                if message.endpoint_id in failing or time.monotonic() - started >= RUN_SECONDS:
                    # Its endpoint failed earlier in this batch, or the run's time is up (a
                    # batch holds up to CLAIM of every endpoint): the next run posts it.
                    _release(engine, message)
                    continue
                body = _body(message)
                msg_id = f"msg_{message.id}"
                signed_at = clock.now()  # each post signed as it leaves, never a stale time
                headers = {
                    "content-type": "application/json",
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(signed_at.timestamp())),
                    "webhook-signature": Webhook(secret).sign(msg_id, signed_at, body),
                    "user-agent": "Homeward-Webhooks/1",
                }
                try:
                    answer = client.post(url, content=body, headers=headers)
                    error = "" if answer.is_success else f"HTTP {answer.status_code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                _outcome(engine, message, error=error, now=clock.now())
                if error:
                    failed += 1
                    failing.add(message.endpoint_id)
                else:
                    delivered += 1
    return delivered, failed


def forget_posted(engine: Engine, clock: Clock, *, days: int) -> int:
    """Delete the messages posted more than `days` days ago, a chunk a transaction; return how
    many went. Kept, the outbox grew by a row per lesson sent per endpoint for ever: at a
    million readers, about half a million rows a day. Messages still to post stay, however old
    (a paused endpoint's backlog waits for staff)."""
    cutoff = clock.now() - timedelta(days=days)
    with engine.connect() as conn:
        mark = conn.execute(select(col(WebhookSweep.swept_to))).scalar_one_or_none()
    if mark is not None:
        # What the next sweep looks back over stays (after an outage longer than the days
        # kept, the sweep's mark is that old): deleted, those lessons would be queued again.
        cutoff = min(cutoff, as_utc(mark) - SWEEP_LOOKBACK)
    posted = col(WebhookMessage.delivered_at)
    oldest = (
        select(col(WebhookMessage.id))
        .where(posted.is_not(None), posted < cutoff)  # as the index says it, for SQLite
        .order_by(posted)
        .limit(IN_LIST)
    )
    forgotten = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(oldest).scalars())
            if ids:
                conn.execute(delete(WebhookMessage).where(col(WebhookMessage.id).in_(ids)))
        forgotten += len(ids)
        if len(ids) < IN_LIST:
            return forgotten


def _release(engine: Engine, message: WebhookMessage) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(WebhookMessage)
            .where(col(WebhookMessage.id) == message.id)
            .values(lease_until=None)
        )


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
            posted = conn.execute(
                update(WebhookMessage)
                .where(this, col(WebhookMessage.delivered_at).is_(None))
                .values(delivered_at=now, lease_until=None)
            )
            if not posted.rowcount:
                return  # already recorded by a run that took it over: counted once
            conn.execute(
                update(WebhookEndpoint)
                .where(endpoint)
                .values(
                    failures=0,
                    last_error="",
                    last_success_at=now,
                    delivered=col(WebhookEndpoint.delivered) + 1,
                )
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
                # Out of tries: it waits for staff, with the endpoint paused below.
                next_attempt_at=now + (later or RETRY_AFTER[-1]),
            )
        )
        conn.execute(
            update(WebhookEndpoint)
            .where(endpoint)
            .values(failures=col(WebhookEndpoint.failures) + 1, last_error=error)
        )
        reason = (
            f"a message failed {attempts} times over"
            f" {sum(RETRY_AFTER, timedelta()) // timedelta(hours=1)} hours; the last: {error}"
            if later is None
            else f"{GIVE_UP_AFTER} tries in a row failed; the last: {error}"
        )
        paused = conn.execute(
            update(WebhookEndpoint)
            .where(
                and_(
                    endpoint,
                    (col(WebhookEndpoint.failures) >= GIVE_UP_AFTER) | literal(later is None),
                    col(WebhookEndpoint.paused_at).is_(None),
                )
            )
            .values(paused_at=now, paused_reason=reason[:500])
            .returning(col(WebhookEndpoint.url))
        ).first()
    if paused:
        log.error(
            "webhook endpoint %s paused (%s); its messages wait until staff resume it",
            paused[0],
            reason,
        )

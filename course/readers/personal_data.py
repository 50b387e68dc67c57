"""A person's own data: a private link to it (on request, to the address on file), a copy of
everything stored, and erasing it all."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, exists, func
from sqlmodel import Session, col, select

from course.clock import Clock, as_utc
from course.db import IN_LIST, is_sqlite, scrub, session_scope
from course.errors import LinkEnded
from course.models import (
    Delivery,
    DeliveryKind,
    Enrollment,
    EnrollmentStatus,
    SignupRequest,
    Subscriber,
)
from course.readers.service_mail import throttled_delivery
from course.settings import Settings

log = logging.getLogger(__name__)

# How long an emailed link to a reader's own data works.
DATA_LINK_TTL = timedelta(hours=24)


def request_data_link(
    session: Session, settings: Settings, clock: Clock, *, enrollment_id: int
) -> list[int]:
    """Email the reader a short-lived link to see, download or erase their data. The link goes
    only to the address on file, never to whoever holds a forwarded email."""
    email_of(session, enrollment_id)  # refuses a link whose reader is gone
    return throttled_delivery(
        session, settings, enrollment_id=enrollment_id, kind=DeliveryKind.DATA, now=clock.now()
    )


def email_of(session: Session, enrollment_id: int) -> str:
    """The address behind an enrollment, for the reader's own links (unsubscribe, their data)."""
    email = session.exec(
        select(col(Subscriber.email))
        .join(Enrollment, col(Enrollment.subscriber_id) == col(Subscriber.id))
        .where(col(Enrollment.id) == enrollment_id)
    ).first()
    if email is None:
        raise LinkEnded()
    return email


def export(session: Session, email: str) -> dict[str, Any] | None:
    """Everything stored about one address, as plain data."""
    subscriber = session.exec(
        select(Subscriber).where(col(Subscriber.email) == email.lower())
    ).first()
    if subscriber is None:
        return None
    enrollments = session.exec(
        select(Enrollment)
        .where(col(Enrollment.subscriber_id) == subscriber.id)
        .order_by(col(Enrollment.id))
    ).all()
    deliveries = session.exec(
        select(Delivery)
        .where(col(Delivery.enrollment_id).in_([e.id for e in enrollments]))
        .order_by(col(Delivery.id))
    ).all()

    def iso(value: datetime | None) -> str | None:
        return as_utc(value).isoformat() if value else None

    return {
        "email": subscriber.email,
        "first_name": subscriber.first_name,
        "time_zone": subscriber.time_zone,
        "send_hour": subscriber.send_hour,
        "relationship": subscriber.relationship,
        "substance": subscriber.substance,
        "discreet_emails": subscriber.discreet,
        "signed_up_at": iso(subscriber.created_at),
        "suppressed_at": iso(subscriber.suppressed_at),
        "suppressed_because": subscriber.suppressed_reason,
        "soft_bounces": subscriber.soft_bounces,
        "enrollments": [
            {
                "course": e.sequence_slug,
                "status": e.status,
                "confirmed_at": iso(e.confirmed_at),
                "next_lesson": e.next_position,
                "told_us_treatment_started_at": iso(e.started_treatment_at),
                "consent": {
                    "given_at": iso(e.consent_at),
                    "from": e.consent_source,
                    "wording": e.consent_wording,
                    "note": e.consent_note,
                    "confirmed_at": iso(e.confirmed_at),
                },
                "a_lesson_every_days": e.pace_days,
                "paused_until": iso(e.paused_until),
                "conversation_on": e.conversation_on.isoformat() if e.conversation_on else None,
                "treatment_starts_on": e.treatment_on.isoformat() if e.treatment_on else None,
                "emails": [
                    {
                        "kind": d.kind,
                        "number": d.position,
                        "status": d.status,
                        "sent_at": iso(d.sent_at),
                    }
                    for d in deliveries
                    if d.enrollment_id == e.id
                ],
            }
            for e in enrollments
        ],
    }


def erase(session: Session, email: str) -> bool:
    """Delete the person and everything about them. Returns whether anything was there."""
    waiting = session.execute(
        delete(SignupRequest).where(col(SignupRequest.email) == email.lower())
    )
    subscriber = session.exec(
        select(Subscriber).where(col(Subscriber.email) == email.lower())
    ).first()
    if subscriber is None:
        return bool(cast(CursorResult[tuple[()]], waiting).rowcount)
    ids = select(col(Enrollment.id)).where(col(Enrollment.subscriber_id) == subscriber.id)
    session.execute(delete(Delivery).where(col(Delivery.enrollment_id).in_(ids)))
    session.execute(delete(Enrollment).where(col(Enrollment.subscriber_id) == subscriber.id))
    session.delete(subscriber)
    return True


def erase_for_good(engine: Engine, email: str) -> bool:
    """Erase the person (see erase), then make the deleted bytes unreadable on disk. Returns
    whether anything was there."""
    with session_scope(engine) as session:
        found = erase(session, email)
    if found and not scrub(engine) and is_sqlite(engine):
        # Readers kept the log busy: the hourly task checkpoints it again.
        log.warning("erased, but the SQLite log could not be checkpointed yet; retried hourly")
    return found


def forget_enrollment(session: Session, enrollment_id: int) -> None:
    """Delete one enrollment and its emails (an ended round nobody needs any more)."""
    session.execute(delete(Delivery).where(col(Delivery.enrollment_id) == enrollment_id))
    session.execute(delete(Enrollment).where(col(Enrollment.id) == enrollment_id))


def purge_unconfirmed(engine: Engine, clock: Clock, *, days: int) -> int:
    """Delete sign-ups nobody confirmed within `days` days, and the people left with no course
    (a suppressed address stays: it must stay suppressed). Returns how many sign-ups went."""
    cutoff = clock.now() - timedelta(days=days)
    # From the latest sign-up (its consent), not the first: a reader who comes back after a
    # year, or asks for a new link on day 6, has as long as anyone to confirm.
    stale = (
        select(col(Enrollment.id))
        .where(
            col(Enrollment.status) == EnrollmentStatus.PENDING,
            func.coalesce(col(Enrollment.consent_at), col(Enrollment.created_at)) < cutoff,
        )
        .order_by(col(Enrollment.id))
        .limit(IN_LIST)
    )
    if not is_sqlite(engine):
        # A reader who confirms, or signs up again, while their sign-up is being purged waits
        # for the purge and then finds the link ended: never confirmed, then deleted.
        stale = stale.with_for_update()
    purged = 0
    while True:
        # A chunk a transaction: after downtime the backlog has no bound, and SQLite's write
        # lock (which every sending worker waits for) is held for one chunk at a time.
        with engine.begin() as conn:
            ids = [i for i in conn.execute(stale).scalars() if i is not None]
            if not ids:
                return purged
            # By id: "emails of the stale sign-ups" as a join read all ten million emails.
            conn.execute(delete(Delivery).where(col(Delivery.enrollment_id).in_(ids)))
            gone = conn.execute(
                delete(Enrollment)
                .where(col(Enrollment.id).in_(ids))
                .returning(col(Enrollment.subscriber_id))
            ).all()
            if not gone:  # never, with the rows locked: but a loop must not spin on it
                return purged
            purged += len(gone)
            # Only the people whose sign-up just went can be left with no course. Asked of
            # every person ("NOT IN every enrollment's person"), PostgreSQL compared each of a
            # million people with a million enrollments one by one: the purge never ended.
            conn.execute(
                delete(Subscriber).where(
                    col(Subscriber.id).in_(sorted({person for (person,) in gone})),
                    ~exists().where(col(Enrollment.subscriber_id) == col(Subscriber.id)),
                    col(Subscriber.suppressed_at).is_(None),
                    col(Subscriber.created_at) < cutoff,
                )
            )
        # A short chunk was the last: asking again would read the sign-ups once more to find
        # none (at a million readers, half of the hourly purge's time).
        if len(ids) < IN_LIST:
            return purged

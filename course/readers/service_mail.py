"""The emails a reader asks for (the confirmation request, the link to their data), written as
delivery rows and throttled: pressing the button again must not flood an inbox."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from course.clock import as_utc
from course.errors import LinkEnded
from course.message import new_message_id
from course.models import Delivery, DeliveryKind, Enrollment, row_id
from course.settings import Settings

# A second confirmation (or data-link) email for the same enrollment is not sent sooner than this.
RESEND_AFTER = timedelta(minutes=5)


def throttled_delivery(
    session: Session, settings: Settings, *, enrollment_id: int, kind: DeliveryKind, now: datetime
) -> list[int]:
    """A new email of `kind` for the enrollment, unless one went out in the last few minutes:
    someone pressing the button again must not flood the inbox."""
    last = session.exec(
        select(func.max(col(Delivery.position)), func.max(col(Delivery.created_at))).where(
            col(Delivery.enrollment_id) == enrollment_id, col(Delivery.kind) == kind
        )
    ).one()
    count, last_at = last[0] or 0, last[1]
    if last_at is not None and now - as_utc(last_at) < RESEND_AFTER:
        return []
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        raise LinkEnded()
    delivery = service_delivery(settings, enrollment, kind=kind, position=count + 1, now=now)
    session.add(delivery)
    session.flush()
    return [row_id(delivery)]


def service_delivery(
    settings: Settings, enrollment: Enrollment, *, kind: DeliveryKind, position: int, now: datetime
) -> Delivery:
    """The row of the `position`-th email of `kind` for a (flushed) enrollment."""
    enrollment_id = row_id(enrollment)
    return Delivery(
        enrollment_id=enrollment_id,
        kind=kind,
        # Worded as the course the reader is on now says (its title, sender name, language).
        version_id=enrollment.version_id,
        position=position,
        message_id=new_message_id(
            kind.value, enrollment_id, position, domain=settings.message_domain
        ),
        created_at=now,
        # Enqueued at once by whoever wrote it; the tick hands it out again if that is lost.
        lease_until=now + timedelta(seconds=settings.lease_seconds),
    )

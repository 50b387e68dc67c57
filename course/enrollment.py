"""The domain verbs of a subscription: enroll, confirm, unsubscribe, and a person's own data."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import case, delete, func, or_, update
from sqlmodel import Session, select

from course.clock import Clock, as_utc
from course.errors import InvalidInput, LinkEnded
from course.lessons import latest_version
from course.message import new_message_id
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Lesson,
    Subscriber,
)
from course.render import PERSONA_VALUES
from course.schedule import next_due, valid_time_zone
from course.settings import Settings
from course.tokens import Link

# Letters, then letters, spaces, dots, dashes and apostrophes: straight, or the curly one a
# phone's keyboard types (O’Brien).
NAME_RE = re.compile(r"^[^\W\d_](?:[^\W\d_]|[ .'\u2019\-])*$")
PROFILE = ("first_name", "time_zone", "send_hour", "relationship", "substance")
# A second confirmation (or data-link) email for the same enrollment is not sent sooner than this.
RESEND_AFTER = timedelta(minutes=5)
# How long an emailed link to a reader's own data works.
DATA_LINK_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class EnrollRequest:
    email: str
    first_name: str = ""
    time_zone: str = "UTC"
    send_hour: int = 9
    sequence: str = ""
    relationship: str = "other"
    substance: str = "unsure"  # who skips the question gets the wording for "not sure"
    # The profile fields this sign-up sent: one that leaves a field out (an API call with the
    # address only, say) must not blank what an earlier one gave.
    given: frozenset[str] = frozenset(PROFILE)

    @classmethod
    def parse(cls, data: dict[str, Any], default_sequence: str) -> EnrollRequest:
        """Validate raw form or JSON fields; InvalidInput says what to fix, in plain words."""
        email = _email(data.get("email"))
        first_name = str(data.get("first_name") or "").strip()
        if len(first_name) > 40:
            raise InvalidInput(
                "Please keep the first name to 40 characters or fewer.",
                "name_too_long",
                "first_name",
            )
        if first_name and not NAME_RE.match(first_name):
            raise InvalidInput(
                "A first name can have letters, spaces, dots, apostrophes and dashes only.",
                "name_chars",
                "first_name",
            )
        tz = str(data.get("time_zone") or "").strip() or "UTC"
        hour_raw = data.get("send_hour")
        if hour_raw in (None, ""):
            hour = 9
        else:
            try:
                hour = int(str(hour_raw).split(":")[0])
            except ValueError:
                raise InvalidInput(
                    "The send hour must be a whole hour from 0 to 23.", "send_hour", "send_hour"
                ) from None
            if not 0 <= hour <= 23:
                raise InvalidInput(
                    "The send hour must be a whole hour from 0 to 23.", "send_hour", "send_hour"
                )
        relationship = _choice(data.get("relationship"), "relationship", "other")
        substance = _choice(data.get("substance"), "substance", "unsure")
        sequence = str(data.get("sequence") or default_sequence).strip()
        # The form always sends every field (empty for "prefer not to say"); an API call may
        # leave some out.
        given = frozenset(f for f in PROFILE if f in data)
        return cls(
            email=email,
            first_name=first_name,
            time_zone=valid_time_zone(tz),
            send_hour=hour,
            sequence=sequence,
            relationship=relationship,
            substance=substance,
            given=given,
        )


def _email(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("Please enter your email address.", "email_missing", "email")
    if len(raw) > 254 or "\n" in raw or "\r" in raw:
        raise InvalidInput("That email address does not look right.", "email_invalid", "email")
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(
            f"That email address does not look right: {exc}", "email_invalid", "email"
        ) from exc
    return result.normalized.lower()


def _choice(raw: Any, name: str, default: str) -> str:
    value = str(raw or "").strip() or default
    if value not in PERSONA_VALUES[name]:
        raise InvalidInput(f"Unknown {name} {value!r}.", "choice", name)
    return value


def enroll(session: Session, settings: Settings, clock: Clock, req: EnrollRequest) -> list[int]:
    """Record the wish to join and write a confirmation email; return delivery ids to enqueue.

    The caller answers the same whatever happens here, so nobody can learn from the answer
    whether an address is on the list.
    """
    now = clock.now()
    version = latest_version(session, req.sequence)
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == req.email)).first()
    if subscriber is None:
        subscriber = Subscriber(email=req.email, created_at=now)
        session.add(subscriber)
    if subscriber.suppressed_at is not None:
        return []
    # One row per course this person ever joined: a handful at most.
    joined = (
        session.exec(select(Enrollment).where(Enrollment.subscriber_id == subscriber.id)).all()
        if subscriber.id
        else []
    )
    enrollment = next((e for e in joined if e.sequence_slug == req.sequence), None)
    if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
        return []  # already receiving lessons; don't let a stranger change their details
    if subscriber.id is None:
        _apply_profile(subscriber, req, PROFILE)
    elif all(e.status != EnrollmentStatus.ACTIVE for e in joined):
        # Anyone can send this form for any address; once lessons flow (in any course), only
        # the reader's own links change anything.
        _apply_profile(subscriber, req, req.given)
    session.flush()
    if enrollment is None:
        enrollment = Enrollment(
            subscriber_id=subscriber.id,
            sequence_slug=req.sequence,
            version_id=version.id,
            created_at=now,
        )
        session.add(enrollment)
        session.flush()
    elif enrollment.status != EnrollmentStatus.PENDING:
        # Finished or left earlier: start again from lesson 1 on the newest version, after opt-in.
        # The earlier round's lesson rows go: each lesson is unique per enrollment and position,
        # so they would stop this round's lessons from ever being created (and they are
        # personal data nobody needs once the course starts over).
        session.execute(
            delete(Delivery).where(
                Delivery.enrollment_id == enrollment.id,  # type: ignore[arg-type]
                Delivery.kind == DeliveryKind.LESSON,  # type: ignore[arg-type]
            )
        )
        enrollment.status = EnrollmentStatus.PENDING
        enrollment.version_id = version.id  # type: ignore[assignment]
        enrollment.next_position = 1
        enrollment.next_due_at = None
        enrollment.confirmed_at = None
        enrollment.ended_at = None
    return _throttled_delivery(session, settings, enrollment.id, DeliveryKind.CONFIRM, now)  # type: ignore[arg-type]


def _throttled_delivery(
    session: Session, settings: Settings, enrollment_id: int, kind: DeliveryKind, now: datetime
) -> list[int]:
    """A new email of `kind` for the enrollment, unless one went out in the last few minutes:
    someone pressing the button again must not flood the inbox."""
    last = session.exec(
        select(func.max(Delivery.position), func.max(Delivery.created_at)).where(
            Delivery.enrollment_id == enrollment_id, Delivery.kind == kind
        )
    ).one()
    count, last_at = last[0] or 0, last[1]
    if last_at is not None and now - as_utc(last_at) < RESEND_AFTER:
        return []
    delivery = Delivery(
        enrollment_id=enrollment_id,
        kind=kind,
        position=count + 1,
        message_id=new_message_id(kind.value, enrollment_id, count + 1, settings.message_domain),
        created_at=now,
        lease_until=now + timedelta(seconds=settings.lease_seconds),
    )
    session.add(delivery)
    session.flush()
    return [delivery.id]  # type: ignore[list-item]


def request_data_link(
    session: Session, settings: Settings, clock: Clock, enrollment_id: int
) -> list[int]:
    """Email the reader a short-lived link to see, download or erase their data. The link goes
    only to the address on file, never to whoever holds a forwarded email."""
    email_of(session, enrollment_id)  # refuses a link whose reader is gone
    return _throttled_delivery(session, settings, enrollment_id, DeliveryKind.DATA, clock.now())


def _apply_profile(subscriber: Subscriber, req: EnrollRequest, fields: Iterable[str]) -> None:
    for name in fields:
        setattr(subscriber, name, getattr(req, name))


# A link's signing time has whole seconds; the row's creation time does not.
_SIGNED_IN_THE_SAME_SECOND = timedelta(seconds=1)


def linked_enrollment(session: Session, link: Link) -> Enrollment:
    """The enrollment a reader's link names, or LinkEnded if it is gone.

    A link names the enrollment's link key, which no other enrollment ever gets. A link signed
    before keys existed names an id: it is honoured only for an enrollment that existed when the
    link was signed, because a later one may have been given the same id (SQLite reused them).
    """
    if link.key is not None:
        found = session.exec(select(Enrollment).where(Enrollment.link_key == link.key)).first()
    else:
        found = session.get(Enrollment, link.legacy_id)
        if found is not None and as_utc(found.created_at) >= (
            link.signed_at + _SIGNED_IN_THE_SAME_SECOND
        ):
            found = None
    if found is None:
        raise LinkEnded()
    return found


def confirm(session: Session, settings: Settings, clock: Clock, enrollment_id: int) -> Enrollment:
    """Activate a pending enrollment; its first lesson becomes due. Clicking twice is harmless."""
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        raise LinkEnded()
    if enrollment.status != EnrollmentStatus.PENDING:
        return enrollment
    subscriber = session.get(Subscriber, enrollment.subscriber_id)
    first = session.exec(
        select(Lesson).where(Lesson.version_id == enrollment.version_id, Lesson.position == 1)
    ).one()
    now = clock.now()
    enrollment.status = EnrollmentStatus.ACTIVE
    enrollment.confirmed_at = now
    enrollment.next_position = 1
    enrollment.next_due_at = next_due(
        now,
        first.delay_days,
        time_zone=subscriber.time_zone if subscriber else "UTC",
        send_hour=subscriber.send_hour if subscriber else 9,
        day_seconds=settings.day_seconds,
    )
    return enrollment


def unsubscribe(session: Session, clock: Clock, enrollment_id: int) -> Subscriber | None:
    """Stop every course for the person behind this enrollment, at once, and cancel what is queued."""
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        return None  # erased already: nothing is left to stop
    now = clock.now()
    ids = select(Enrollment.id).where(Enrollment.subscriber_id == enrollment.subscriber_id)
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.subscriber_id == enrollment.subscriber_id,
            Enrollment.status.in_([EnrollmentStatus.PENDING, EnrollmentStatus.ACTIVE]),  # type: ignore[attr-defined]
        )
        .values(status=EnrollmentStatus.UNSUBSCRIBED, next_due_at=None, ended_at=now)
    )
    session.execute(
        update(Delivery)
        .where(Delivery.enrollment_id.in_(ids), Delivery.status == DeliveryStatus.PENDING)  # type: ignore[attr-defined]
        .values(status=DeliveryStatus.CANCELLED, lease_owner=None)
    )
    return session.get(Subscriber, enrollment.subscriber_id)


def email_of(session: Session, enrollment_id: int) -> str:
    """The address behind an enrollment, for the reader's own links (unsubscribe, their data)."""
    email = session.exec(
        select(Subscriber.email)
        .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)  # type: ignore[arg-type]
        .where(Enrollment.id == enrollment_id)
    ).first()
    if email is None:
        raise LinkEnded()
    return email


def export(session: Session, email: str) -> dict[str, Any] | None:
    """Everything stored about one address, as plain data."""
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == email.lower())).first()
    if subscriber is None:
        return None
    enrollments = session.exec(
        select(Enrollment).where(Enrollment.subscriber_id == subscriber.id).order_by(Enrollment.id)  # type: ignore[arg-type]
    ).all()
    deliveries = session.exec(
        select(Delivery)
        .where(Delivery.enrollment_id.in_([e.id for e in enrollments]))  # type: ignore[attr-defined]
        .order_by(Delivery.id)  # type: ignore[arg-type]
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
        "signed_up_at": iso(subscriber.created_at),
        "suppressed_at": iso(subscriber.suppressed_at),
        "enrollments": [
            {
                "course": e.sequence_slug,
                "status": e.status,
                "confirmed_at": iso(e.confirmed_at),
                "next_lesson": e.next_position,
                "told_us_treatment_started_at": iso(e.started_treatment_at),
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
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == email.lower())).first()
    if subscriber is None:
        return False
    ids = select(Enrollment.id).where(Enrollment.subscriber_id == subscriber.id)
    session.execute(delete(Delivery).where(Delivery.enrollment_id.in_(ids)))  # type: ignore[attr-defined]
    session.execute(delete(Enrollment).where(Enrollment.subscriber_id == subscriber.id))
    session.delete(subscriber)
    return True


def start_aftercare(session: Session, clock: Clock, enrollment_id: int) -> Enrollment:
    """The reader says treatment has started: from the next lesson on, send aftercare, and
    every never-skip lesson (overdose, safety) not sent yet.

    A lesson already in flight still goes out; sending it then moves on the same way (see
    recording.sent_writes), so the switch holds whenever it is clicked. Clicking twice is harmless.
    """
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        raise LinkEnded()
    if enrollment.status != EnrollmentStatus.ACTIVE or enrollment.started_treatment_at:
        return enrollment
    has_aftercare = session.exec(
        select(func.count(Lesson.id)).where(  # type: ignore[arg-type]
            Lesson.version_id == enrollment.version_id, Lesson.module == "aftercare"
        )
    ).one()
    if not has_aftercare:
        raise InvalidInput(
            "This course has no lessons about recovery to move on to.", "no_aftercare"
        )
    # The first lesson from the current one on that a switched reader still gets.
    target = (
        select(func.min(Lesson.position))
        .where(
            Lesson.version_id == Enrollment.version_id,
            Lesson.position >= Enrollment.next_position,
            or_(Lesson.module == "aftercare", Lesson.never_skip),
        )
        .scalar_subquery()
    )
    # One statement, so it cannot interleave with a worker claiming or finishing a lesson: an
    # idle enrollment moves now; one with a lesson in flight moves when that lesson is recorded.
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == enrollment_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.started_treatment_at.is_(None),  # type: ignore[union-attr]
        )
        .values(
            started_treatment_at=clock.now(),
            next_position=case(
                (
                    Enrollment.next_due_at.is_not(None),  # type: ignore[union-attr]
                    func.coalesce(target, Enrollment.next_position),
                ),
                else_=Enrollment.next_position,
            ),
        )
    )
    session.refresh(enrollment)
    return enrollment

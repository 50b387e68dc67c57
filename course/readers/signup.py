"""Signing up: check what a person typed, store the wish to join, and send the confirmation
request. The answer is the same whether the address is new, pending or already enrolled."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from course import outbound
from course.catalog import latest_version
from course.clock import Clock
from course.errors import InvalidInput
from course.models import (
    Delivery,
    DeliveryKind,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    row_id,
)
from course.readers.service_mail import service_delivery, throttled_delivery
from course.render import PERSONA_VALUES
from course.schedule import valid_time_zone
from course.settings import Settings

# Letters, then letters, spaces, dots, dashes and apostrophes: straight, or the curly one a
# phone's keyboard types (O’Brien).
NAME_RE = re.compile(r"^[^\W\d_](?:[^\W\d_]|[ .'\u2019\-])*$")
_TEXT = ("email", "first_name", "time_zone", "relationship", "substance", "sequence", "locale")
PROFILE = ("first_name", "time_zone", "send_hour", "relationship", "substance", "discreet")


@dataclass(frozen=True)
class EnrollRequest:
    email: str
    first_name: str = ""
    time_zone: str = "UTC"
    send_hour: int = 9
    sequence: str = ""
    relationship: str = "other"
    substance: str = "unsure"  # who skips the question gets the wording for "not sure"
    discreet: bool = False
    # The profile fields this sign-up sent: one that leaves a field out (an API call with the
    # address only, say) must not blank what an earlier one gave.
    given: frozenset[str] = frozenset(PROFILE)
    # Where the reader agreed, and to which wording (course.web: the sign-up form's consent
    # text, by a short hash of it; "api" for an API client, "staff:..." for a staff member).
    consent_source: str = "api"
    consent_wording: str = ""

    def to_fields(self) -> dict[str, Any]:
        """As JSON, for the intake queue (course.readers.intake)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields["given"] = sorted(self.given)
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> EnrollRequest:
        return cls(**{**fields, "given": frozenset(fields.get("given", PROFILE))})

    @classmethod
    def parse(cls, data: dict[str, Any], default_sequence: str) -> EnrollRequest:
        """Validate raw form or JSON fields; InvalidInput says what to fix, in plain words."""
        for name in _TEXT:  # JSON may send a number or true where text belongs
            if data.get(name) is not None and not isinstance(data[name], str):
                raise InvalidInput(f'"{name}" takes text.', "not_understood", name)
        email = _email(data.get("email"))
        raw_name = data.get("first_name")
        first_name = (raw_name or "").strip()
        if len(raw_name or "") > 40:
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
        hour = send_hour(data.get("send_hour"))
        relationship = _choice(data.get("relationship"), "relationship", "other")
        substance = _choice(data.get("substance"), "substance", "unsure")
        sequence = str(data.get("sequence") or default_sequence).strip()
        # The form always sends every field (empty for "prefer not to say"; the discretion box,
        # unticked, is marked by discreet_shown); an API call may leave some out.
        given = frozenset(
            f for f in PROFILE if f in data or (f == "discreet" and "discreet_shown" in data)
        )
        return cls(
            email=email,
            first_name=first_name,
            time_zone=valid_time_zone(tz),
            send_hour=hour,
            sequence=sequence,
            relationship=relationship,
            substance=substance,
            discreet=yes_or_no(data.get("discreet"), "discreet"),
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


# A whole hour, as JSON gives it (7) or a form does ("7", or "07:00" from a time field).
_HOUR = re.compile(r"^(?:[01]?\d|2[0-3])(?::00)?$")


def send_hour(raw: Any, default: int = 9) -> int:
    if raw is None or raw == "":
        return default
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 23:
        return raw
    if isinstance(raw, str) and _HOUR.match(raw.strip()):
        return int(raw.strip().split(":")[0])
    raise InvalidInput("The send hour must be a whole hour from 0 to 23.", "send_hour", "send_hour")


_YES, _NO = ("1", "true", "on", "yes"), ("", "0", "false", "off", "no")


def yes_or_no(raw: Any, field: str) -> bool:
    """A tick box (a form sends its value, "1", or nothing) or a JSON true/false."""
    if isinstance(raw, bool):
        return raw
    text = "" if raw is None else raw.strip().lower() if isinstance(raw, str) else None
    if text is not None and (text in _YES or text in _NO):
        return text in _YES
    raise InvalidInput(f"{field} takes yes or no (true or false).", "not_understood", field)


def _choice(raw: Any, name: str, default: str) -> str:
    value = str(raw or "").strip() or default
    if value not in PERSONA_VALUES[name]:
        raise InvalidInput(f"Unknown {name} {value!r}.", "choice", name)
    return value


def enroll(session: Session, settings: Settings, clock: Clock, *, req: EnrollRequest) -> list[int]:
    """Record the wish to join and write a confirmation email; return delivery ids to enqueue.

    The caller answers the same whatever happens here, so nobody can learn from the answer
    whether an address is on the list.
    """
    now = clock.now()
    version = latest_version(session, req.sequence)
    subscriber = session.exec(select(Subscriber).where(col(Subscriber.email) == req.email)).first()
    if subscriber is None:
        subscriber = Subscriber(email=req.email, created_at=now)
        session.add(subscriber)
    if subscriber.suppressed_at is not None:
        return []
    # One row per course this person ever joined: a handful at most.
    joined = (
        session.exec(select(Enrollment).where(col(Enrollment.subscriber_id) == subscriber.id)).all()
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
    starting = enrollment is None or enrollment.status != EnrollmentStatus.PENDING
    if enrollment is None:
        enrollment = Enrollment(
            subscriber_id=row_id(subscriber),
            sequence_slug=req.sequence,
            version_id=row_id(version),
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
                col(Delivery.enrollment_id) == enrollment.id,
                col(Delivery.kind) == DeliveryKind.LESSON,
            )
        )
        enrollment.status = EnrollmentStatus.PENDING
        enrollment.version_id = row_id(version)
        enrollment.next_position = 1
        enrollment.next_due_at = None
        enrollment.confirmed_at = None
        enrollment.ended_at = None
        # A new round starts from the course as it is, with none of the last round's choices.
        enrollment.started_treatment_at = None
        enrollment.pace_days = enrollment.paused_until = None
        enrollment.conversation_on = enrollment.treatment_on = None
        enrollment.reordered = enrollment.replan = False
        enrollment.consent_note, enrollment.treatment_after = "", None
    enrollment.consent_at = now
    enrollment.consent_source = req.consent_source
    enrollment.consent_wording = req.consent_wording
    session.add(enrollment)
    if starting:
        outbound.enrollment_event(session, event="enrolled", enrollment=enrollment, now=now)
    if _confirmations_today(session, row_id(subscriber), now) >= settings.confirmations_per_day:
        return []  # the form must not become a way to flood someone's inbox
    return throttled_delivery(
        session, settings, enrollment_id=row_id(enrollment), kind=DeliveryKind.CONFIRM, now=now
    )


def enroll_new_readers(
    session: Session, settings: Settings, clock: Clock, *, reqs: list[EnrollRequest]
) -> list[int]:
    """`enroll` for addresses nobody has yet, each once, all at once: a burst of sign-ups is
    written in a few multi-row INSERTs instead of a dozen statements per person. Returns the
    confirmation emails to enqueue. The caller makes sure every address is new (a unique
    address that appeared meanwhile raises IntegrityError, and nothing of the batch stays)."""
    now = clock.now()
    versions = {slug: latest_version(session, slug) for slug in {r.sequence for r in reqs}}
    subscribers = []
    for req in reqs:
        subscriber = Subscriber(email=req.email, created_at=now)
        _apply_profile(subscriber, req, PROFILE)
        subscribers.append(subscriber)
    session.add_all(subscribers)
    session.flush()
    enrollments = [
        Enrollment(
            subscriber_id=row_id(subscriber),
            sequence_slug=req.sequence,
            version_id=row_id(versions[req.sequence]),
            created_at=now,
            consent_at=now,
            consent_source=req.consent_source,
            consent_wording=req.consent_wording,
        )
        for subscriber, req in zip(subscribers, reqs, strict=True)
    ]
    session.add_all(enrollments)
    session.flush()
    if outbound.wanted(session, "enrolled"):
        for enrollment in enrollments:
            outbound.enrollment_event(session, event="enrolled", enrollment=enrollment, now=now)
    if settings.confirmations_per_day < 1:
        return []
    deliveries = [
        service_delivery(settings, enrollment, kind=DeliveryKind.CONFIRM, position=1, now=now)
        for enrollment in enrollments
    ]
    session.add_all(deliveries)
    session.flush()
    return [row_id(d) for d in deliveries]


def _confirmations_today(session: Session, subscriber_id: int, now: datetime) -> int:
    """Confirmation requests written for this person in the last day, in any course."""
    theirs = select(col(Enrollment.id)).where(col(Enrollment.subscriber_id) == subscriber_id)
    return session.exec(
        select(func.count()).where(
            col(Delivery.enrollment_id).in_(theirs),
            col(Delivery.kind) == DeliveryKind.CONFIRM,
            col(Delivery.created_at) > now - timedelta(days=1),
        )
    ).one()


def _apply_profile(subscriber: Subscriber, req: EnrollRequest, fields: Iterable[str]) -> None:
    for name in fields:
        setattr(subscriber, name, getattr(req, name))

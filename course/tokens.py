"""Signed, purpose-bound tokens for the links in emails.

Each purpose has its own salt, so an unsubscribe token can never confirm an address. Confirmation
links expire; unsubscribe links keep working for as long as the service runs (CAN-SPAM asks for at
least 30 days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from course.clock import Clock, SystemClock
from course.errors import TokenExpired, TokenInvalid


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    STAGE = "stage"
    DATA = "data"  # a reader's own data: short-lived, sent only on request to their address
    PREFERENCES = "preferences"  # pause, pace, time, language, discretion, dates
    HELPFUL = "helpful"  # "was this helpful?": names a lesson, never a reader


def _serializer(secret_key: str, purpose: Purpose, clock: Clock) -> URLSafeTimedSerializer:
    # The signer reads the injected clock, so expiry can be tested without waiting.
    signer = type(
        "ClockSigner",
        (TimestampSigner,),
        {"get_timestamp": lambda self: int(clock.now().timestamp())},
    )
    return URLSafeTimedSerializer(secret_key, salt=f"homeward.{purpose.value}", signer=signer)


@dataclass(frozen=True)
class Link:
    """What a verified token names: an enrollment's link key (see models.new_link_key).

    Links signed before link keys existed name the enrollment's id instead (`legacy_id`); one
    of those is honoured only for an enrollment created before the link was signed, since an
    id can have been handed to someone else since (see enrollment.linked_enrollment).
    """

    key: str | None
    legacy_id: int | None
    signed_at: datetime


def make_token(
    secret_key: str, purpose: Purpose, link_key: str, *, clock: Clock | None = None
) -> str:
    return TokenMaker(secret_key, purpose, clock)(link_key)


class TokenMaker:
    """Signs tokens for one key, purpose and clock, with the serializer and signer built once.

    The sending hot path signs one to three tokens per email; building the serializer (a new
    signer class) and a signer for each of them cost more than the signing itself.
    """

    def __init__(self, secret_key: str, purpose: Purpose, clock: Clock | None = None) -> None:
        self._serializer = _serializer(secret_key, purpose, clock or SystemClock())
        self._signer = self._serializer.make_signer()

    def __call__(self, link_key: str) -> str:
        # What URLSafeTimedSerializer.dumps does, minus making a signer per call.
        payload = self._serializer.dump_payload(link_key)
        return self._signer.sign(payload).decode("utf-8")


def read_token(
    secret_key: str,
    purpose: Purpose,
    token: str,
    *,
    max_age_seconds: int | None = None,
    clock: Clock | None = None,
) -> Link:
    """What `token` names, or TokenInvalid / TokenExpired with a message for people."""
    try:
        value, signed_at = _serializer(secret_key, purpose, clock or SystemClock()).loads(
            token, max_age=max_age_seconds, return_timestamp=True
        )
    except SignatureExpired as exc:
        raise TokenExpired(
            "This link has expired. Sign up again and we will send you a fresh one."
        ) from exc
    except BadSignature as exc:
        raise TokenInvalid(
            "This link is not valid. It may have been cut off: try copying the whole link."
        ) from exc
    when = signed_at.astimezone(UTC) if signed_at.tzinfo else signed_at.replace(tzinfo=UTC)
    if isinstance(value, str) and len(value) <= 64:
        return Link(key=value, legacy_id=None, signed_at=when)
    if isinstance(value, int) and not isinstance(value, bool):
        return Link(key=None, legacy_id=value, signed_at=when)
    raise TokenInvalid("This link is not valid.")

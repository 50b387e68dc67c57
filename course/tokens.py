"""Signed, purpose-bound tokens for the links in emails.

Each purpose has its own salt, so an unsubscribe token can never confirm an address. Confirmation
links expire; unsubscribe links keep working for as long as the service runs (CAN-SPAM asks for at
least 30 days).
"""

from __future__ import annotations

from enum import StrEnum

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from course.clock import Clock, SystemClock
from course.errors import TokenExpired, TokenInvalid


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    STAGE = "stage"


def _serializer(secret_key: str, purpose: Purpose, clock: Clock) -> URLSafeTimedSerializer:
    # The signer reads the injected clock, so expiry can be tested without waiting.
    signer = type(
        "ClockSigner",
        (TimestampSigner,),
        {"get_timestamp": lambda self: int(clock.now().timestamp())},
    )
    return URLSafeTimedSerializer(secret_key, salt=f"homeward.{purpose.value}", signer=signer)


def make_token(
    secret_key: str, purpose: Purpose, enrollment_id: int, clock: Clock | None = None
) -> str:
    return _serializer(secret_key, purpose, clock or SystemClock()).dumps(enrollment_id)


def read_token(
    secret_key: str,
    purpose: Purpose,
    token: str,
    max_age_seconds: int | None = None,
    clock: Clock | None = None,
) -> int:
    """The enrollment id in `token`, or TokenInvalid / TokenExpired with a message for people."""
    try:
        value = _serializer(secret_key, purpose, clock or SystemClock()).loads(
            token, max_age=max_age_seconds
        )
    except SignatureExpired as exc:
        raise TokenExpired(
            "This link has expired. Sign up again and we will send you a fresh one."
        ) from exc
    except BadSignature as exc:
        raise TokenInvalid(
            "This link is not valid. It may have been cut off: try copying the whole link."
        ) from exc
    if not isinstance(value, int):
        raise TokenInvalid("This link is not valid.")
    return value

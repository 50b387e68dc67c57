"""Mailgun's event webhooks (JSON): `failed` (permanent or temporary) and `complained`.

Mailgun signs each call: HMAC-SHA256, keyed with the account's webhook signing key, of the
timestamp and a random token, in hex. A call older than a few minutes is refused as a replay.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from course.suppression import Report
from course.web.errors import NotSigned

MAX_AGE_SECONDS = 300


def verify(body: dict[str, Any], *, signing_key: str, now: datetime) -> None:
    signature = body.get("signature")
    if not isinstance(signature, dict):
        raise NotSigned("This call is not signed.")
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, str(signature.get("signature", ""))):
        raise NotSigned("This call's signature is not Mailgun's.")
    if not timestamp.isdigit() or abs(now.timestamp() - int(timestamp)) > MAX_AGE_SECONDS:
        raise NotSigned("This call is too old (or its clock is off): refused as a replay.")


def reports(body: dict[str, Any]) -> list[tuple[str, Report, str]]:
    """(address, what happened, why) for the call's event, if it is one we act on."""
    event = body.get("event-data")
    if not isinstance(event, dict) or not isinstance(event.get("recipient"), str):
        return []
    status: dict[str, Any] = event.get("delivery-status") or {}
    if not isinstance(status, dict):
        status = {}
    detail = status.get("message") or status.get("description") or ""
    why = f"Mailgun: {status.get('code', '')} {detail}".strip()
    if event.get("event") == "complained":
        return [(event["recipient"], Report.COMPLAINT, "Mailgun: complaint")]
    if event.get("event") == "failed":
        kind = Report.HARD if event.get("severity") == "permanent" else Report.SOFT
        return [(event["recipient"], kind, why)]
    return []

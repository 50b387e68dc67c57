"""SendGrid's Event Webhook (a JSON list of events): `bounce`, `blocked`, `dropped`,
`spamreport`.

SendGrid signs each call with ECDSA (P-256, SHA-256) over the timestamp header followed by the
raw body; the account's verification key (base64, DER) checks it. A call older than a few
minutes is refused as a replay.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from course.suppression import Report
from course.web.errors import NotSigned

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_AGE_SECONDS = 300
# Dropped messages SendGrid will never try: the address bounced or complained before.
_DROPPED = {
    "bounced address": Report.HARD,
    "invalid": Report.HARD,
    "spam reporting address": Report.COMPLAINT,
}


def verify(raw: bytes, *, signature: str, timestamp: str, public_key: str, now: datetime) -> None:
    try:
        key = load_der_public_key(base64.b64decode(public_key))
    except ValueError as exc:  # a setting that is not a key: the operator's mistake
        raise RuntimeError("COURSE_SENDGRID_PUBLIC_KEY is not an ECDSA public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise RuntimeError("COURSE_SENDGRID_PUBLIC_KEY is not an ECDSA public key")
    try:
        key.verify(base64.b64decode(signature), timestamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise NotSigned("This call's signature is not SendGrid's.") from None
    if not timestamp.isdigit() or abs(now.timestamp() - int(timestamp)) > MAX_AGE_SECONDS:
        raise NotSigned("This call is too old (or its clock is off): refused as a replay.")


def reports(events: Any) -> list[tuple[str, Report, str]]:
    """(address, what happened, why) for each event we act on."""
    found: list[tuple[str, Report, str]] = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or not isinstance(event.get("email"), str):
            continue
        name, why = (
            event.get("event"),
            f"SendGrid: {event.get('status', '')} {event.get('reason', '')}".strip(),
        )
        if name == "bounce":
            kind = Report.SOFT if event.get("type") == "blocked" else Report.HARD
            found.append((event["email"], kind, why))
        elif name == "blocked":
            found.append((event["email"], Report.SOFT, why))
        elif name == "spamreport":
            found.append((event["email"], Report.COMPLAINT, "SendGrid: spam report"))
        elif name == "dropped":
            kind_or_none = _DROPPED.get(str(event.get("reason", "")).lower())
            if kind_or_none is not None:
                found.append((event["email"], kind_or_none, why))
    return found

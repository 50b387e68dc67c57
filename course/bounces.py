"""Bounce and complaint messages, as a bounce mailbox receives them: delivery status
notifications (RFC 3464) and abuse reports (RFC 5965, ARF), read into the reports that
course.suppression acts on.

A DSN says, per recipient, whether delivery `failed` (a 5.x.x status is for good, 4.x.x is for
now) or was only `delayed` (no action: the sender is still trying). An ARF report is a complaint
about the original message's recipient.
"""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from course.suppression import Report

_ADDRESS_FIELDS = ("Final-Recipient", "Original-Recipient")


def _address(value: str | None) -> str | None:
    """The address of an RFC 3464 recipient field ("rfc822; reader@example.org")."""
    if not value:
        return None
    _, _, address = value.partition(";")
    address = (address or value).strip().strip("<>").strip()
    return address.lower() if "@" in address else None


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def reports_in(raw: bytes) -> list[tuple[str, Report, str]]:
    """(address, what happened, why) for every recipient a bounce or complaint names."""
    message = message_from_bytes(raw, policy=compat32)
    if message.get_content_type() != "multipart/report":
        return []
    kind = (message.get_param("report-type") or "").lower()  # type: ignore[union-attr]
    found: list[tuple[str, Report, str]] = []
    for part in message.walk():
        ctype = part.get_content_type()
        if kind == "delivery-status" and ctype == "message/delivery-status":
            for block in _blocks(part)[1:]:  # the first block is about the message itself
                action = (block.get("Action") or "").strip().lower()
                status = (block.get("Status") or "").strip()
                address = next((a for f in _ADDRESS_FIELDS if (a := _address(block.get(f)))), None)
                if address is None or action != "failed":
                    continue
                why = f"DSN {status} {block.get('Diagnostic-Code') or ''}".strip()
                found.append((address, Report.HARD if status.startswith("5") else Report.SOFT, why))
        elif kind == "feedback-report" and ctype == "message/feedback-report":
            fields = _blocks(part)[0] if _blocks(part) else _fields_of(part)
            address = _address(fields.get("Original-Rcpt-To")) or _original_to(message)
            if address:
                found.append(
                    (address, Report.COMPLAINT, f"ARF {fields.get('Feedback-Type') or 'abuse'}")
                )
    return found


def _fields_of(part: Message) -> Message:
    """A message/feedback-report part whose fields came through as text."""
    payload = part.get_payload(decode=True)
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    return message_from_bytes(text.encode(), policy=compat32)


def _original_to(report: Message) -> str | None:
    """The recipient of the message a complaint is about, from the copy the report carries."""
    for part in report.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            inner = _blocks(part)
            headers = inner[0] if inner else _fields_of(part)
            return _address(headers.get("To"))
    return None

"""Build the MIME message for one email: headers a mailbox provider expects, text + HTML."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr

from course.errors import InvalidInput
from course.render import RenderedEmail

# Long lines are never folded: a folded List-Unsubscribe breaks DKIM at some receivers.
POLICY = SMTP.clone(max_line_length=998)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def new_message_id(kind: str, enrollment_id: int, position: int, domain: str) -> str:
    """Made once when the delivery row is created and reused on any resend."""
    return f"<{kind}.{enrollment_id}.{position}.{secrets.token_hex(6)}@{domain}>"


def safe_header(value: str, name: str) -> str:
    # The email package refuses raw CR/LF but some encoded forms got through (cpython#121650).
    if _UNSAFE.search(value):
        raise InvalidInput(f"{name} contains a line break or control character")
    return value


def build_message(
    *,
    rendered: RenderedEmail,
    from_address: str,
    sender_name: str,
    to: str,
    message_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None,
    date: datetime,
) -> EmailMessage:
    _, from_email = parseaddr(from_address)
    local, _, domain = from_email.partition("@")
    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(safe_header(sender_name, "sender name"), local, domain)
    msg["To"] = safe_header(to, "address")
    msg["Subject"] = safe_header(rendered.subject, "subject")
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = safe_header(message_id, "message id")
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
    msg["List-Unsubscribe"] = safe_header(", ".join(targets), "unsubscribe link")
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg

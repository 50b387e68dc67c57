"""Build the MIME bytes of one email: the headers a mailbox provider expects, text + HTML.

Written with the standard library's encoders rather than EmailMessage objects: building and
flattening those cost more than rendering and sending together, on the hot path of every lesson.
The tests parse every message with the email package to prove the output is well formed.
"""

from __future__ import annotations

import binascii
import re
import secrets
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr

from course.errors import InvalidInput
from course.render import RenderedEmail

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def new_message_id(kind: str, enrollment_id: int, position: int, domain: str) -> str:
    """Made once when the delivery row is created and reused on any resend."""
    return f"<{kind}.{enrollment_id}.{position}.{secrets.token_hex(6)}@{domain}>"


def safe_header(value: str, name: str) -> str:
    # The email package refuses raw CR/LF but some encoded forms got through (cpython#121650):
    # nothing with a control character reaches a header.
    if _UNSAFE.search(value):
        raise InvalidInput(f"{name} contains a line break or control character")
    return value


def _encoded(value: str) -> str:
    """ASCII stays as it is; anything else becomes RFC 2047 encoded words."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


def _body(text: str) -> bytes:
    qp = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return qp.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


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
) -> bytes:
    _, from_email = parseaddr(from_address)
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
    boundary = f"=_homeward_{secrets.token_hex(12)}"
    headers = [
        (
            "From",
            formataddr((safe_header(sender_name, "sender name"), from_email), charset="utf-8"),
        ),
        ("To", safe_header(to, "address")),
        ("Subject", _encoded(safe_header(rendered.subject, "subject"))),
        ("Date", format_datetime(date)),
        ("Message-ID", safe_header(message_id, "message id")),
        # One line, never folded: a folded List-Unsubscribe breaks DKIM at some receivers.
        ("List-Unsubscribe", safe_header(", ".join(targets), "unsubscribe link")),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("ascii")
    part = 'Content-Type: text/{0}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    b = boundary.encode("ascii")
    return b"".join(
        [
            head,
            b"\r\n--",
            b,
            b"\r\n",
            part.format("plain").encode("ascii"),
            _body(rendered.text),
            b"\r\n--",
            b,
            b"\r\n",
            part.format("html").encode("ascii"),
            _body(rendered.html),
            b"\r\n--",
            b,
            b"--\r\n",
        ]
    )

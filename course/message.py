"""Build the MIME bytes of one email: the headers a mailbox provider expects, text + HTML.

Written with the standard library's encoders rather than EmailMessage objects: building and
flattening those cost more than rendering and sending together, on the hot path of every lesson.
The tests parse every message with the email package to prove the output is well formed.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache

from course.errors import InvalidInput

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def new_message_id(kind: str, enrollment_id: int, position: int, *, domain: str) -> str:
    """Made once when the delivery row is created and reused on any resend. (The tick makes
    lessons' ids in SQL, in this same shape: delivery._message_id_sql.)"""
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


def encode_body(text: str) -> bytes:
    """A text part as quoted-printable with CRLF line ends."""
    qp = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return qp.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class BodyTemplate:
    """A text part with holes (`holes` matches them), encoded ahead of time except for the lines
    that have a hole in them: encoding a whole lesson cost more per email than anything else
    in building it.

    Quoted-printable encodes each LF-terminated line on its own, so encoding line by line gives
    the same bytes as encode_body of the filled text. Where that may not hold (a CR anywhere,
    or a filled-in value with a line break of its own) the whole text is encoded instead.
    """

    def __init__(self, text: str, holes: re.Pattern[str]) -> None:
        self._text = text
        self._holes = holes
        # Encoded lines, and between them the lines with holes as (literal, hole, literal, ...).
        self._pieces: list[bytes | list[str]] = []
        self._whole = "\r" in text
        if self._whole:
            return
        lines = text.split("\n")
        static: list[str] = []
        for i, line in enumerate(lines):
            if i < len(lines) - 1:
                line += "\n"
            parts = holes.split(line)
            if len(parts) == 1:
                static.append(line)
                continue
            if static:
                self._pieces.append(encode_body("".join(static)))
                static = []
            self._pieces.append(parts)
        if static:
            self._pieces.append(encode_body("".join(static)))

    def fill(self, values: Mapping[str, str]) -> str:
        """The text with its holes filled, not encoded."""
        return self._holes.sub(lambda m: values[m.group(0)], self._text)

    def encode(self, values: Mapping[str, str]) -> bytes:
        """encode_body(self.fill(values)), in less time."""
        if self._whole or any("\n" in v or "\r" in v for v in values.values()):
            return encode_body(self.fill(values))
        out: list[bytes] = []
        for piece in self._pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            else:
                filled = piece.copy()
                for i in range(1, len(filled), 2):
                    filled[i] = values[filled[i]]
                out.append(encode_body("".join(filled)))
        return b"".join(out)


@lru_cache(maxsize=256)
def _from_header(sender_name: str, from_address: str) -> str:
    # The same few senders on every email; parsing the address is the slow part.
    _, from_email = parseaddr(from_address)
    return formataddr((safe_header(sender_name, "sender name"), from_email), charset="utf-8")


def build_encoded(
    *,
    subject: str,
    text_body: bytes,
    html_body: bytes,
    from_address: str,
    sender_name: str,
    to: str,
    message_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None,
    date: datetime,
) -> bytes:
    """The whole email: headers, then the text and HTML parts, each already encoded
    (encode_body, or BodyTemplate.encode on the sending path)."""
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
    boundary = f"=_homeward_{secrets.token_hex(12)}"
    headers = [
        ("From", _from_header(sender_name, from_address)),
        ("To", safe_header(to, "address")),
        ("Subject", _encoded(safe_header(subject, "subject"))),
        ("Date", format_datetime(date)),
        ("Message-ID", safe_header(message_id, "message id")),
        # One line, never folded: a folded List-Unsubscribe breaks DKIM at some receivers.
        ("List-Unsubscribe", safe_header(", ".join(targets), "unsubscribe link")),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("ascii")
    b = boundary.encode("ascii")
    return b"".join(
        [
            head,
            b"\r\n--",
            b,
            b"\r\n",
            _PART_PLAIN,
            text_body,
            b"\r\n--",
            b,
            b"\r\n",
            _PART_HTML,
            html_body,
            b"\r\n--",
            b,
            b"--\r\n",
        ]
    )


_PART = (
    'Content-Type: text/{0}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)
_PART_PLAIN = _PART.format("plain").encode("ascii")
_PART_HTML = _PART.format("html").encode("ascii")

"""Where mail goes (COURSE_SMTP_URL), and sending one message there: staff sign-in links and
test sends. Readers' lessons go through course.sending.mailer, which keeps a connection open.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from course.errors import ConfigurationError


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    tls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        """`smtp://user:pass@host:port?starttls=1` or `smtps://...` for TLS from the start."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigurationError(
                f"COURSE_SMTP_URL must look like smtp://host:port, not {url!r}"
            )
        query = parse_qs(parts.query)
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
            tls=tls,
            timeout=float(query.get("timeout", ["30"])[0]),
        )

    def connect(self) -> smtplib.SMTP:
        """An open, greeted (and, as configured, encrypted and logged-in) connection."""
        if self.tls:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        conn.ehlo()
        if self.starttls:
            conn.starttls(context=ssl.create_default_context())
            conn.ehlo()
        if self.username:
            conn.login(self.username, self.password or "")
        return conn


def send_messages(target: SmtpTarget, messages: list[EmailMessage], *, sender: str) -> None:
    """Send each message over one connection; any refusal raises (smtplib's errors)."""
    conn = target.connect()
    try:
        for message in messages:
            conn.send_message(message, from_addr=sender)
    finally:
        try:
            conn.quit()
        except smtplib.SMTPException:
            conn.close()

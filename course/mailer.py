"""Send over a kept-open SMTP connection and sort every failure into temporary or permanent."""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from course.errors import ConfigurationError

log = logging.getLogger(__name__)


class SendError(Exception):
    def __init__(self, code: int | None, detail: str) -> None:
        super().__init__(f"{code or ''} {detail}".strip())
        self.code = code
        self.detail = detail


class TransientError(SendError):
    """Try again later: a 4xx answer, or the server could not be reached."""


class ConnectionProblem(TransientError):
    """The server is unreachable or dropped us: the rest of a batch would fail the same way."""


class PermanentError(SendError):
    """A 5xx answer: this address will not accept mail from us."""


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


def classify(code: int, detail: str) -> SendError:
    return TransientError(code, detail) if 400 <= code < 500 else PermanentError(code, detail)


class Mailer:
    """One SMTP connection, opened on first use and reused until it fails or is closed."""

    def __init__(self, target: SmtpTarget) -> None:
        self.target = target
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        t = self.target
        try:
            if t.tls:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    t.host, t.port, timeout=t.timeout, context=ssl.create_default_context()
                )
            else:
                conn = smtplib.SMTP(t.host, t.port, timeout=t.timeout)
            conn.ehlo()
            if t.starttls:
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if t.username:
                conn.login(t.username, t.password or "")
        except smtplib.SMTPResponseException as exc:
            raise ConnectionProblem(exc.smtp_code, _text(exc.smtp_error)) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise ConnectionProblem(None, f"cannot reach {t.host}:{t.port}: {exc}") from exc
        return conn

    def send(self, message: bytes, sender: str, recipient: str) -> None:
        if self._conn is None:
            self._conn = self._connect()
        try:
            refused = self._conn.sendmail(sender, [recipient], message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, detail = exc.recipients.get(recipient, (550, b"refused"))
            self._reset()
            raise classify(code, _text(detail)) from exc
        except smtplib.SMTPServerDisconnected as exc:
            self.close()
            raise ConnectionProblem(None, f"server closed the connection: {exc}") from exc
        except smtplib.SMTPResponseException as exc:
            self._reset()
            if exc.smtp_code == 421:
                self.close()
                raise ConnectionProblem(exc.smtp_code, _text(exc.smtp_error)) from exc
            raise classify(exc.smtp_code, _text(exc.smtp_error)) from exc
        except OSError as exc:
            self.close()
            raise ConnectionProblem(None, str(exc)) from exc
        # sendmail() reports refused recipients in its return value instead of raising.
        if recipient in refused:
            code, detail = refused[recipient]
            raise classify(code, _text(detail))

    def _reset(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                self._conn.close()
            self._conn = None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

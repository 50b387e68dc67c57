"""Send over a kept-open SMTP connection and sort every failure into temporary or permanent."""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import time
from collections.abc import Callable

from course import metrics
from course.sending.relay import RelayGuard, place_owner
from course.smtp import SmtpTarget as SmtpTarget  # re-exported: the sending path names it here

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


class NoPlace(TransientError):
    """Every connection the provider allows is open elsewhere (COURSE_SMTP_MAX_CONNECTIONS)."""


class PermanentError(SendError):
    """A 5xx answer: this address will not accept mail from us."""


def classify(code: int, detail: str) -> SendError:
    return TransientError(code, detail) if 400 <= code < 500 else PermanentError(code, detail)


# An address that parseaddr hands back unchanged, so quoting it is just the angle brackets.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def _quoted(address: str) -> str:
    """smtplib.quoteaddr, without parsing the common plain address."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _dot_stuffed(message: bytes) -> bytes:
    """What smtplib does to the message in DATA (a period starting a line is doubled), without
    running a regular expression over the whole message."""
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\n.", b"\n..")


def _abandon(conn: smtplib.SMTP, code: int) -> None:
    """What sendmail() does with a refused transaction: drop the connection on 421, else RSET."""
    if code == 421:
        conn.close()
        return
    # A dropped connection is reported by the next command, as smtplib does.
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        conn.rset()


class Mailer:
    """One SMTP connection, opened on first use and reused until it fails or is closed.

    The exchange is the one smtplib's sendmail() has (EHLO once; MAIL with SIZE, RCPT, DATA),
    with the same exceptions sorted the same way, written out so that the caller can do other
    work while the server takes in a message: start() hands it over, finish() waits for the
    verdict. A message counts as accepted only once finish() returns.
    """

    def __init__(
        self, target: SmtpTarget, *, guard: RelayGuard | None = None, patience: float = 30.0
    ) -> None:
        self.target = target
        self._guard = guard
        self._patience = patience  # how long to wait for a place under the connection cap
        self._place = place_owner()
        self._placed_at = float("-inf")  # when this connection's place was last renewed
        self._conn: smtplib.SMTP | None = None
        self._awaiting: str | None = None  # the recipient of a message started, not finished

    def _connect(self) -> smtplib.SMTP:
        t, guard = self.target, self._guard
        if guard is not None:
            if not guard.take_place(self._place, patience=self._patience):
                raise NoPlace(None, "every connection the provider allows is in use")
            self._placed_at = time.monotonic()
        try:
            conn = t.connect()
        except smtplib.SMTPResponseException as exc:
            self._give_place()
            raise ConnectionProblem(exc.smtp_code, _text(exc.smtp_error)) from exc
        except (OSError, smtplib.SMTPException) as exc:
            self._give_place()
            raise ConnectionProblem(None, f"cannot reach {t.host}:{t.port}: {exc}") from exc
        metrics.connection_opened()
        return conn

    @property
    def guard(self) -> RelayGuard | None:
        return self._guard

    def _give_place(self) -> None:
        if self._guard is not None:
            self._guard.give_place(self._place)

    def _closed(self) -> None:
        self._conn = None
        metrics.connection_closed()
        self._give_place()

    def between_batches(self) -> None:
        """Make way for a connection that waits for a place under the cap, if one does."""
        if self._conn is not None and self._guard is not None and self._guard.others_waiting():
            self.close()

    def send(self, message: bytes, sender: str, recipient: str) -> None:
        """Send one message; returns once the server accepted it, raises SendError if not."""
        self.start(message, sender, recipient)
        self.finish()

    def start(
        self,
        message: bytes,
        sender: str,
        recipient: str,
        *,
        meanwhile: Callable[[], object] | None = None,
        first: Callable[[], object] | None = None,
    ) -> None:
        """Hand one message to the server without waiting for its verdict: call finish() next.

        `meanwhile` runs exactly once, before start() returns or raises and before the server can
        have accepted this message: once the server is ready for the message's data, just
        before it is sent (or at once, if the exchange fails before that). If it raises, the
        connection is dropped without the data, and the server discards the transaction.
        `first` runs exactly once too, before `meanwhile`: as soon as the MAIL command is on its
        way, so that it runs while the server reads it.
        """
        if self._awaiting is not None:
            # A message whose verdict nobody read (the caller was interrupted): that reply
            # would be taken for the answer to the next command. Start on a fresh connection.
            self._drop()
        pending, early = meanwhile, first

        def run_early() -> None:
            nonlocal early
            if early is not None:
                call, early = early, None
                call()

        try:
            if self._conn is None:
                self._conn = self._connect()
            elif self._guard is not None and time.monotonic() - self._placed_at > 20:
                self._guard.keep_place(self._place)
                self._placed_at = time.monotonic()
            conn = self._conn
            try:
                self._envelope(
                    conn, len(message), sender=sender, recipient=recipient, while_mail=run_early
                )
            except (OSError, smtplib.SMTPException) as exc:
                raise self._failure(exc, recipient) from exc
            except BaseException:
                self._drop()  # interrupted mid-exchange, as in finish()
                raise
            if pending is not None:
                call, pending = pending, None
                try:
                    call()
                except BaseException:
                    self._drop()
                    raise
            data = _dot_stuffed(message)
            if not data.endswith(b"\r\n"):
                data += b"\r\n"
            try:
                conn.send(data + b".\r\n")  # one write, as smtplib does: one wake-up of the server
            except (OSError, smtplib.SMTPException) as exc:
                raise self._failure(exc, recipient) from exc
        finally:
            try:
                run_early()
            finally:
                if pending is not None:
                    pending()
        self._awaiting = recipient

    def finish(self) -> None:
        """The server's verdict on the message start() handed over."""
        recipient, self._awaiting = self._awaiting, None
        if recipient is None:
            raise RuntimeError("no message in flight")
        conn = self._conn
        try:
            if conn is None:  # closed by close() while a message was in flight
                raise smtplib.SMTPServerDisconnected("connection closed before the reply")
            code, resp = conn.getreply()
            if code != 250:
                _abandon(conn, code)
                raise smtplib.SMTPDataError(code, resp)
        except (OSError, smtplib.SMTPException) as exc:
            raise self._failure(exc, recipient) from exc
        except BaseException:
            # Interrupted (a time limit, a signal) with the reply unread: the next command
            # would read it as its own answer. Nobody can use this connection any more.
            self._drop()
            raise

    def _envelope(
        self,
        conn: smtplib.SMTP,
        size: int,
        *,
        sender: str,
        recipient: str,
        while_mail: Callable[[], None],
    ) -> None:
        # smtplib's sendmail() for one recipient, up to the server's go-ahead for the data.
        conn.ehlo_or_helo_if_needed()
        options = ""
        if conn.does_esmtp and conn.has_extn("size"):
            options = f" size={size}"
        if conn.does_esmtp and conn.has_extn("pipelining"):
            self._pipelined(
                conn, options, sender=sender, recipient=recipient, while_mail=while_mail
            )
            return
        conn.putcmd("mail", f"FROM:{_quoted(sender)}{options}")
        while_mail()  # if it raises, start() drops the connection with the MAIL reply unread
        code, resp = conn.getreply()
        if code != 250:
            _abandon(conn, code)
            raise smtplib.SMTPSenderRefused(code, resp, sender)
        conn.putcmd("rcpt", f"TO:{_quoted(recipient)}")
        code, resp = conn.getreply()
        if code != 250 and code != 251:
            # With a single recipient sendmail() gives up on any refusal of it.
            _abandon(conn, code)
            raise smtplib.SMTPRecipientsRefused({recipient: (code, resp)})
        conn.putcmd("data")
        code, resp = conn.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, resp)

    def _pipelined(
        self,
        conn: smtplib.SMTP,
        options: str,
        *,
        sender: str,
        recipient: str,
        while_mail: Callable[[], None],
    ) -> None:
        """MAIL, RCPT and DATA in one write, their answers read after (RFC 2920): across the
        internet each round trip is tens of milliseconds, and this makes three of them one."""
        commands = (
            f"MAIL FROM:{_quoted(sender)}{options}\r\nRCPT TO:{_quoted(recipient)}\r\nDATA\r\n"
        )
        conn.send(commands.encode("ascii"))
        while_mail()  # if it raises, start() drops the connection with the replies unread
        # Every reply is read, whatever the first says: each command gets exactly one.
        (mail, mail_text), (rcpt, rcpt_text), (data, data_text) = (
            conn.getreply(),
            conn.getreply(),
            conn.getreply(),
        )
        if data == 354 and (mail != 250 or rcpt not in (250, 251)):
            # A server that opened the data phase for a refused envelope (RFC 2920 says it
            # must not): close it empty, so the connection is back at the start.
            conn.send(b".\r\n")
            conn.getreply()
        if mail != 250:
            _abandon(conn, mail)
            raise smtplib.SMTPSenderRefused(mail, mail_text, sender)
        if rcpt not in (250, 251):
            _abandon(conn, rcpt)
            raise smtplib.SMTPRecipientsRefused({recipient: (rcpt, rcpt_text)})
        if data != 354:
            raise smtplib.SMTPDataError(data, data_text)

    def _failure(self, exc: OSError | smtplib.SMTPException, recipient: str) -> SendError:
        """Sort a failure into temporary or permanent, and leave the connection usable or closed."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, detail = exc.recipients.get(recipient, (550, b"refused"))
            self._reset()
            return classify(code, _text(detail))
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            self.close()
            return ConnectionProblem(None, f"server closed the connection: {exc}")
        if isinstance(exc, smtplib.SMTPResponseException):
            self._reset()
            if exc.smtp_code == 421:
                self.close()
                return ConnectionProblem(exc.smtp_code, _text(exc.smtp_error))
            return classify(exc.smtp_code, _text(exc.smtp_error))
        if isinstance(exc, OSError):
            self.close()
            return ConnectionProblem(None, str(exc))
        raise exc

    def _reset(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def _drop(self) -> None:
        """Close without QUIT: the connection is in a state nobody can read back."""
        self._awaiting = None
        if self._conn is not None:
            self._conn.close()
            self._closed()

    def close(self) -> None:
        self._awaiting = None
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                self._conn.close()
            self._closed()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

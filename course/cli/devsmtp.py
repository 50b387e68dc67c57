"""A local SMTP server that catches every email into a Maildir, for `course dev`."""

from __future__ import annotations

import logging
import mailbox
from email import message_from_bytes, policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("course.dev")


class MaildirHandler:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)  # Maildir makes tmp/new/cur itself
        self.box = mailbox.Maildir(str(path), create=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        self.box.add(mailbox.MaildirMessage(raw))
        # One line per email, so whoever runs `course dev` can watch the lessons arrive.
        subject = message_from_bytes(raw, policy=policy.default).get("subject", "(no subject)")
        log.info("caught an email to %s: %s", ", ".join(envelope.rcpt_tos), subject)
        return "250 Message accepted for delivery"


def start_catcher(path: Path, host: str = "127.0.0.1", port: int = 8025) -> Controller:
    # aiosmtpd logs every command of every exchange at INFO: a screenful per email.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(MaildirHandler(path), hostname=host, port=port)
    controller.start()
    return controller

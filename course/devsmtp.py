"""A local SMTP server that catches every email into a Maildir, for `course dev`."""

from __future__ import annotations

import mailbox
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class MaildirHandler:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)  # Maildir makes tmp/new/cur itself
        self.box = mailbox.Maildir(str(path), create=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.box.add(mailbox.MaildirMessage(envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


def start_catcher(path: Path, host: str = "127.0.0.1", port: int = 8025) -> Controller:
    controller = Controller(MaildirHandler(path), hostname=host, port=port)
    controller.start()
    return controller

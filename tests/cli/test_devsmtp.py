"""The mail catcher of `course dev`: every email lands in the dev mailbox, one line on screen."""

from __future__ import annotations

import logging
import mailbox
import smtplib
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from course import logs
from course.cli.devsmtp import start_catcher
from course.cli.embedded_redis import free_port


def test_each_caught_email_is_kept_and_shown_as_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    catcher = start_catcher(tmp_path / "mailbox", port=port)
    message = EmailMessage()
    message["From"] = "lessons@homeward.test"
    message["To"] = "reader@example.org"
    message["Subject"] = "Usted no está solo en esto"  # sent RFC 2047-encoded
    message.set_content("Hola")
    try:
        with caplog.at_level(logging.INFO), smtplib.SMTP("127.0.0.1", port) as client:
            client.send_message(message)
    finally:
        catcher.stop()

    [kept] = mailbox.Maildir(str(tmp_path / "mailbox"), create=False)
    assert (
        message_from_bytes(kept.as_bytes(), policy=policy.default)["Subject"] == message["Subject"]
    )
    # Through the filter every `course` command's log handler has: no address, not even in dev.
    redact = logs.RedactPersonalData()
    shown = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and redact.filter(r)
    ]
    assert shown == ["caught an email to [email]: Usted no está solo en esto"]

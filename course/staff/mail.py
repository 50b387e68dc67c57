"""The emails staff get: a sign-in link, and test sends of lessons (marked as tests in the
subject and a header, and recorded nowhere: no delivery row, no count)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr, make_msgid, parseaddr

from course.render import RenderedEmail
from course.settings import Settings
from course.smtp import SmtpTarget, send_messages
from course.staff.sign_in import SIGN_IN_MINUTES

TEST_HEADER = "X-Homeward-Test"


def _message(settings: Settings, *, to: str, subject: str, sender_name: str) -> EmailMessage:
    _, address = parseaddr(settings.from_address)
    message = EmailMessage()
    message["From"] = formataddr((sender_name, address))
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=settings.message_domain)
    return message


def sign_in_message(settings: Settings, *, to: str, link: str) -> EmailMessage:
    message = _message(
        settings,
        to=to,
        subject="Your sign-in link for Homeward staff",
        sender_name="Homeward staff",
    )
    text = (
        "Here is your link to sign in to the Homeward staff pages:\n\n"
        f"{link}\n\n"
        f"It works once, for {SIGN_IN_MINUTES} minutes. If you did not ask for it, you can "
        "delete this email: nobody can sign in without the link.\n"
    )
    message.set_content(text)
    message.add_alternative(
        "<p>Here is your link to sign in to the Homeward staff pages:</p>"
        f'<p><a href="{link}">Sign in to Homeward staff</a></p>'
        f"<p>It works once, for {SIGN_IN_MINUTES} minutes. If you did not ask for it, you can "
        "delete this email: nobody can sign in without the link.</p>",
        subtype="html",
    )
    return message


def test_message(
    settings: Settings, *, to: str, rendered: RenderedEmail, sender_name: str, label: str
) -> EmailMessage:
    """A lesson as a reader would get it, marked as a test (`label` says which lesson)."""
    message = _message(
        settings, to=to, subject=f"[TEST] {label}: {rendered.subject}", sender_name=sender_name
    )
    message[TEST_HEADER] = "1"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def send(settings: Settings, messages: list[EmailMessage]) -> None:
    _, sender = parseaddr(settings.from_address)
    send_messages(SmtpTarget.from_url(settings.smtp_url), messages, sender=sender)

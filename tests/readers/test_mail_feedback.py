"""Mail that stays welcome: bounces and complaints from two providers' signed webhooks and from a
bounce mailbox all stop mail down one path; "was this helpful?" counts per lesson, never per
person."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mailbox
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlmodel import select

from course.db import engine_for, session_scope
from course.models import Enrollment, LessonFeedback, Subscriber
from course.settings import PROJECT_ROOT
from tests.support import FIXTURES, active_readers, lessons_to, run_days

MAILGUN_KEY = "key-test-" + "0" * 24
SENDGRID_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@pytest.fixture
def client(settings, clock, mini_course, queued):
    from course.web import create_app

    settings.mailgun_signing_key = MAILGUN_KEY
    settings.sendgrid_public_key = SENDGRID_PUBLIC
    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def mailgun_call(
    clock, event: dict[str, Any], *, key: str = MAILGUN_KEY, age: int = 0
) -> dict[str, Any]:
    """An event as Mailgun posts it, signed as Mailgun signs it."""
    timestamp, token = str(int(clock.now().timestamp()) - age), secrets.token_hex(25)
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event,
    }


def sendgrid_call(
    clock, events: list[dict[str, Any]], *, age: int = 0
) -> tuple[bytes, dict[str, str]]:
    """Events as SendGrid posts them: the raw body and the signature headers over it."""
    body = json.dumps(events).encode()
    timestamp = str(int(clock.now().timestamp()) - age)
    signature = SENDGRID_PRIVATE.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def suppressed(settings, email: str) -> bool:
    with session_scope(engine_for(settings.database_url)) as session:
        reader = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        return reader.suppressed_at is not None


def statuses(settings, email: str) -> set[str]:
    with session_scope(engine_for(settings.database_url)) as session:
        reader = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        found = session.exec(
            select(Enrollment.status).where(Enrollment.subscriber_id == reader.id)
        ).all()
        return set(found)


def test_a_permanent_failure_from_mailgun_stops_all_mail_to_the_address(
    client, settings, clock, smtp, deliver
):
    [gone, kept] = active_readers(settings, clock, 2)
    call = mailgun_call(
        clock,
        {
            "event": "failed",
            "severity": "permanent",
            "recipient": gone,
            "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist"},
        },
    )
    answer = client.post("/webhooks/mailgun", json=call)
    assert answer.status_code == 200 and answer.json() == {"reports": 1, "suppressed": 1}
    assert suppressed(settings, gone) and statuses(settings, gone) == {"bounced"}
    run_days(clock, deliver, 3)
    assert lessons_to(smtp, gone) == [] and len(lessons_to(smtp, kept)) >= 1


def test_a_mailgun_complaint_stops_mail_and_a_temporary_failure_only_counts(
    client, settings, clock
):
    [spam, full] = active_readers(settings, clock, 2)
    client.post(
        "/webhooks/mailgun", json=mailgun_call(clock, {"event": "complained", "recipient": spam})
    )
    assert suppressed(settings, spam)
    soft = {"event": "failed", "severity": "temporary", "recipient": full}
    for n in range(1, settings.soft_bounce_limit):
        answer = client.post("/webhooks/mailgun", json=mailgun_call(clock, soft))
        assert answer.json()["suppressed"] == 0 and not suppressed(settings, full), n
    client.post("/webhooks/mailgun", json=mailgun_call(clock, soft))
    assert suppressed(settings, full), f"suppressed at the {settings.soft_bounce_limit}th"


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ({"key": "key-someone-else"}, "not Mailgun's"),
        ({"age": 3600}, "too old"),
    ],
)
def test_a_mailgun_call_with_a_wrong_or_old_signature_changes_nothing(
    client, settings, clock, tamper, why
):
    [reader] = active_readers(settings, clock, 1)
    event = {"event": "complained", "recipient": reader}
    answer = client.post("/webhooks/mailgun", json=mailgun_call(clock, event, **tamper))
    assert answer.status_code == 401 and why in answer.json()["error"]
    unsigned = client.post("/webhooks/mailgun", json={"event-data": event})
    assert unsigned.status_code == 401
    assert not suppressed(settings, reader) and statuses(settings, reader) == {"active"}


def test_sendgrid_bounces_and_spam_reports_stop_mail_with_its_signature_checked(
    client, settings, clock
):
    [bounced, spam, blocked] = active_readers(settings, clock, 3)
    body, headers = sendgrid_call(
        clock,
        [
            {
                "email": bounced,
                "event": "bounce",
                "type": "bounce",
                "status": "5.1.1",
                "reason": "550 no such user",
            },
            {"email": spam, "event": "spamreport"},
            {"email": blocked, "event": "bounce", "type": "blocked", "status": "4.0.0"},
            {"email": blocked, "event": "delivered"},
        ],
    )
    answer = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json() == {"reports": 3, "suppressed": 2}
    assert suppressed(settings, bounced) and suppressed(settings, spam)
    assert not suppressed(settings, blocked), "a block is temporary: counted, not final"


def test_a_sendgrid_call_whose_body_was_changed_or_replayed_is_refused(client, settings, clock):
    [reader] = active_readers(settings, clock, 1)
    body, headers = sendgrid_call(clock, [{"email": "someone@example.org", "event": "spamreport"}])
    changed = body.replace(b"someone@example.org", reader.encode())
    answer = client.post("/webhooks/sendgrid", content=changed, headers=headers)
    assert answer.status_code == 401 and "not SendGrid's" in answer.json()["error"]
    old_body, old_headers = sendgrid_call(
        clock, [{"email": reader, "event": "spamreport"}], age=900
    )
    assert (
        client.post("/webhooks/sendgrid", content=old_body, headers=old_headers).status_code == 401
    )
    assert not suppressed(settings, reader)


def test_a_provider_with_no_key_set_has_no_webhook(settings, clock, mini_course, queued):
    from course.web import create_app

    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/webhooks/mailgun", json={}).status_code == 404
        assert c.post("/webhooks/sendgrid", json=[]).status_code == 404


def _maildir(tmp_path: Path, names: list[str]) -> Path:
    box = mailbox.Maildir(str(tmp_path / "bounces"), create=True)
    for name in names:
        box.add(mailbox.MaildirMessage((FIXTURES / "bounces" / name).read_bytes()))
    return tmp_path / "bounces"


def _bounces_read(settings, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "COURSE_DATABASE_URL": settings.database_url,
        "COURSE_SOFT_BOUNCE_LIMIT": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "course.cli", "bounces", "read", "--maildir", str(folder)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_course_bounces_read_takes_delivery_reports_and_complaints_from_a_maildir(
    settings, clock, mini_course, tmp_path
):
    readers = [
        "gone.reader@example.org",
        "full@example.com",
        "slow@example.org",
        "complainer@example.net",
        "second.complainer@example.net",
        "reader@example.org",
    ]
    from tests.support import enrolled

    enrolled(settings, clock, readers)
    folder = _maildir(tmp_path, sorted(p.name for p in (FIXTURES / "bounces").glob("*.eml")))
    done = _bounces_read(settings, folder)
    assert done.returncode == 0, done.stderr
    assert re.search(r"messages\s+6", done.stdout) and re.search(r"suppressed\s+4", done.stdout)
    assert re.search(r"not bounces\s+2", done.stdout), "the delay and the out-of-office"
    for email, stopped in zip(readers, [True, True, False, True, True, False], strict=True):
        assert suppressed(settings, email) is stopped, email
    again = _bounces_read(settings, folder)
    assert re.search(r"messages\s+0", again.stdout), "each message is read once"


def test_course_bounces_read_names_a_folder_that_is_not_a_maildir(settings, tmp_path):
    done = _bounces_read(settings, tmp_path)
    assert done.returncode == 1 and f"{tmp_path}: not a Maildir" in done.stderr


def test_was_this_helpful_counts_per_lesson_and_says_thank_you(
    client, settings, clock, smtp, deliver
):
    [first, second] = active_readers(settings, clock, 2)
    deliver()
    [mine] = lessons_to(smtp, first)
    [theirs] = lessons_to(smtp, second)
    text = mine.get_body(preferencelist=("plain",)).get_content()
    yes = re.search(r"https://homeward\.test(/helpful/\S+/yes)", text)
    no = re.search(r"https://homeward\.test(/helpful/\S+/no)", text)
    assert yes and no, "each lesson asks, in its footer"
    their_yes = re.search(
        r"https://homeward\.test(/helpful/\S+/yes)",
        theirs.get_body(preferencelist=("plain",)).get_content(),
    )
    assert their_yes and their_yes.group(1) == yes.group(1), "the link names the lesson, not you"
    page = client.get(yes.group(1))
    assert page.status_code == 200 and "Thank you" in page.text
    client.get(no.group(1))
    client.get(yes.group(1))
    with session_scope(engine_for(settings.database_url)) as session:
        [counts] = session.exec(select(LessonFeedback)).all()
    assert (counts.position, counts.helpful, counts.not_helpful) == (1, 2, 1)
    html = mine.get_body(preferencelist=("html",)).get_content()
    assert "<img" not in html, "no open pixel"
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert hrefs and not any("redirect" in h or "click" in h for h in hrefs)
    assert client.get(yes.group(1).replace("/yes", "/maybe")).status_code == 400

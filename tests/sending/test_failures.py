"""A lesson that keeps failing is never dropped: it waits, an operator sees why, and one command
sends it once the cause is fixed."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from course.cli import main
from course.clock import ManualClock
from course.db import engine_for
from course.sending import Composer, Mailer, SmtpTarget, send_batch, tick
from course.settings import Settings
from tests.support import confirm_link, enrolled, lessons_to, signup


def test_a_delivery_that_gave_up_is_listed_and_retried_on_request(
    settings, clock, smtp, deliver, mini_course, monkeypatch, capsys
):
    settings.max_attempts = 3
    settings.retry_base_seconds = 60
    monkeypatch.setattr("course.cli._settings", lambda: settings)

    signup(settings, clock, deliver, smtp, "stuck@example.org")
    smtp.refuse["stuck@example.org"] = "451 4.3.0 Mailbox busy"
    for _ in range(6):  # three tries with backoff, then it gives up
        deliver()
        clock.advance(minutes=10)
    assert lessons_to(smtp, "stuck@example.org") == []

    assert main(["deliveries", "failed"]) == 0
    listed = capsys.readouterr().out
    assert "451" in listed and "Mailbox busy" in listed and "course deliveries retry" in listed

    del smtp.refuse["stuck@example.org"]
    clock.advance(days=2)
    deliver()
    assert lessons_to(smtp, "stuck@example.org") == [], "nothing is resent until an operator asks"

    assert main(["deliveries", "retry"]) == 0
    assert "1 failed deliveries are back in the queue" in capsys.readouterr().out
    deliver()
    [lesson] = [m for m in lessons_to(smtp, "stuck@example.org") if m["Subject"] == "Welcome"]
    assert lesson["Subject"] == "Welcome"
    assert main(["deliveries", "failed"]) == 0
    assert "No failed deliveries are waiting" in capsys.readouterr().out


def test_an_email_that_cannot_be_rendered_for_a_moment_is_sent_once_it_can(
    settings, clock, smtp, mini_course, tmp_path
):
    """A deploy that is halfway through replacing the emails' wording must not cost a reader
    their email: it is tried again a minute later, then sent once."""
    settings.retry_base_seconds = 60
    settings.lessons_dir = _copy_of_lessons(settings, tmp_path)
    wording = settings.lessons_dir / "_layout" / "confirm.md"
    whole = wording.read_text(encoding="utf-8")
    wording.write_text(whole[: len(whole) // 3], encoding="utf-8")  # written halfway
    send = _worker(settings, clock)

    enrolled(settings, clock, ["reader@example.org"])
    clock.advance(seconds=settings.lease_seconds + 1)  # nobody took it from the queue
    send()
    assert smtp.to("reader@example.org") == []
    assert _delivery_error(settings, kind="confirm").startswith("render: ")

    wording.write_text(whole, encoding="utf-8")
    send()
    assert smtp.to("reader@example.org") == [], "not before its minute is up"
    clock.advance(seconds=61)
    send()
    [email] = smtp.to("reader@example.org")
    assert confirm_link(email)
    clock.advance(minutes=10)
    send()
    assert len(smtp.to("reader@example.org")) == 1


def test_an_email_that_never_renders_is_left_for_an_operator_after_three_tries(
    settings, clock, smtp, mini_course, tmp_path, monkeypatch, capsys
):
    """Three tries within minutes, whatever the relay did with the email before: tries that
    failed to render are counted apart from the relay's and use up none of them."""
    settings.retry_base_seconds = 60
    monkeypatch.setattr("course.cli._settings", lambda: settings)
    settings.lessons_dir = _copy_of_lessons(settings, tmp_path)
    (settings.lessons_dir / "_layout" / "confirm.md").write_text("---\nsubject: [\n---\n")
    send = _worker(settings, clock)
    enrolled(settings, clock, ["reader@example.org"])
    with engine_for(settings.database_url).begin() as conn:  # the relay refused it twice
        conn.execute(text("UPDATE delivery SET attempts = 2"))
    clock.advance(seconds=settings.lease_seconds + 1)
    started = clock.now()
    send()
    assert _delivery_state(settings) == ("pending", 2, 1)
    clock.advance(seconds=61)  # a minute
    send()
    assert _delivery_state(settings) == ("pending", 2, 2)
    clock.advance(seconds=61)
    send()
    assert _delivery_state(settings) == ("pending", 2, 2), "two minutes after the second"
    clock.advance(seconds=61)
    send()
    assert _delivery_state(settings) == ("failed", 2, 3)
    assert smtp.to("reader@example.org") == []
    assert clock.now() - started < timedelta(minutes=5)
    assert main(["deliveries", "failed"]) == 0
    listed = capsys.readouterr().out
    assert "render" in listed and "course deliveries retry" in listed

    (settings.lessons_dir / "_layout" / "confirm.md").write_text(
        (Path(__file__).parents[2] / "lessons" / "_layout" / "confirm.md").read_text("utf-8")
    )
    assert main(["deliveries", "retry"]) == 0
    send = _worker(settings, clock)  # the fix deployed: workers start again
    send()
    [email] = smtp.to("reader@example.org")
    assert confirm_link(email)


def _delivery_state(settings: Settings) -> tuple[str, int, int]:
    """(status, attempts, render_failures) of the one delivery."""
    with engine_for(settings.database_url).connect() as conn:
        [row] = conn.execute(text("SELECT status, attempts, render_failures FROM delivery")).all()
    return str(row[0]), int(row[1]), int(row[2])


def _copy_of_lessons(settings: Settings, into: Path) -> Path:
    copy = into / "lessons"
    shutil.copytree(settings.lessons_dir, copy)
    return copy


def _worker(settings: Settings, clock: ManualClock) -> Callable[[], None]:
    """What the beat and a worker do, with a worker started after the wording was changed (a
    worker reads the layout folder when it starts)."""
    composer = Composer(settings, clock)
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    engine = engine_for(settings.database_url)

    def send() -> None:
        for batch in tick(engine, settings, clock):
            send_batch(engine, settings, clock, mailer=mailer, ids=batch, composer=composer)

    return send


def _delivery_error(settings: Settings, *, kind: str) -> str:
    with engine_for(settings.database_url).connect() as conn:
        found = conn.execute(
            text("SELECT last_error FROM delivery WHERE kind = :kind"), {"kind": kind}
        ).scalar()
    return str(found or "")

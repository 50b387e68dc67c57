"""A lesson that keeps failing is never dropped: it waits, an operator sees why, and one command
sends it once the cause is fixed."""

from __future__ import annotations

from course.cli import main
from tests.support import lessons_to, signup


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

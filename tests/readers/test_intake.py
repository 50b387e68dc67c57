"""A burst of sign-ups (a news story sends thousands of families to the page at once) is taken
in by the next tick as if each had been taken in on its own, only faster."""

from __future__ import annotations

import logging

from sqlalchemy import func
from sqlmodel import Session, select

from course.db import engine_for, session_scope
from course.models import Delivery, Enrollment, Subscriber, row_id
from course.readers.intake import request_signup
from course.readers.signup import EnrollRequest
from course.suppression import suppress
from tests.support import confirm_link, signup, statements_of

BURST = 300


def _queue(settings, clock, email: str, **fields) -> None:
    """A sign-up as the web app stores it: a row, taken in later."""
    sequence = fields.pop("sequence", settings.default_sequence)
    req = EnrollRequest.parse({"email": email, "sequence": sequence, **fields}, sequence)
    request_signup(engine_for(settings.database_url), clock, req)


def test_a_burst_of_sign_ups_is_taken_in_as_if_one_by_one(
    settings, clock, smtp, deliver, mini_course
):
    signup(settings, clock, deliver, smtp, "reading@example.org", first_name="Ada")
    signup(settings, clock, deliver, smtp, "refused@example.org")
    with session_scope(engine_for(settings.database_url)) as session:
        refused = session.exec(select(Subscriber).where(Subscriber.email == "refused@example.org"))
        suppress(session, subscriber_id=row_id(refused.one()), now=clock.now(), reason="550 no")
    before = len(smtp.to("reading@example.org")), len(smtp.to("refused@example.org"))

    for n in range(BURST):
        _queue(settings, clock, f"family{n}@example.org", first_name="Sam", send_hour=7)
    _queue(settings, clock, "family0@example.org")  # pressed twice
    _queue(settings, clock, "reading@example.org", first_name="Stranger")
    _queue(settings, clock, "refused@example.org")
    deliver()

    for n in (0, 1, BURST // 2, BURST - 1):
        [email] = smtp.to(f"family{n}@example.org")
        assert "Hi Sam," in email.get_body(("plain",)).get_content()
        assert confirm_link(email)
    assert sum(1 for m in smtp.received if str(m["To"]).startswith("family")) == BURST
    assert (len(smtp.to("reading@example.org")), len(smtp.to("refused@example.org"))) == before
    with Session(engine_for(settings.database_url)) as session:
        names = dict(session.exec(select(Subscriber.email, Subscriber.first_name)).all())
        hours = set(
            session.exec(select(Subscriber.send_hour).where(Subscriber.first_name == "Sam"))
        )
        confirmations = session.exec(
            select(func.count()).select_from(Delivery).where(Delivery.kind == "confirm")
        ).one()
    assert names["reading@example.org"] == "Ada", "a stranger's form changed a reader's name"
    assert sum(1 for e in names if e.startswith("family")) == BURST
    assert hours == {7}
    assert confirmations == BURST + 2  # one each, and the two earlier readers' own


def test_a_burst_costs_a_few_statements_not_a_dozen_per_person(
    settings, clock, mini_course, intake
):
    for n in range(BURST):
        _queue(settings, clock, f"family{n}@example.org")
    engine = engine_for(settings.database_url)
    statements = statements_of(engine, intake)
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Enrollment)).one() == BURST
    if engine.dialect.name == "postgresql":
        # Each statement is a round trip to the server: the rows go in multi-row INSERTs.
        assert len(statements) < 40, statements[:60]
    else:
        # SQLite, in-process, gets one INSERT per row (SQLAlchemy batches them only where the
        # database promises the order of the ids it returns): the reader, their course and
        # their confirmation email, and nothing else per person.
        assert len(statements) <= 3 * BURST + 20, statements[:60]


def test_a_sign_up_for_a_course_gone_meanwhile_does_not_hold_up_the_others(
    settings, clock, smtp, deliver, mini_course, caplog
):
    _queue(settings, clock, "first@example.org")
    _queue(settings, clock, "gone@example.org", sequence="withdrawn-course")
    _queue(settings, clock, "third@example.org")
    with caplog.at_level(logging.WARNING, logger="course.readers.intake"):
        deliver()
    assert len(smtp.to("first@example.org")) == 1 and len(smtp.to("third@example.org")) == 1
    assert smtp.to("gone@example.org") == []
    assert "withdrawn-course" in caplog.text
    deliver()  # the request is not tried again and again
    assert smtp.to("gone@example.org") == []
    with Session(engine_for(settings.database_url)) as session:
        emails = set(session.exec(select(Subscriber.email)).all())
    assert "gone@example.org" not in emails

""" "My loved one has started treatment": the switch to aftercare holds whenever it is clicked,
including while a lesson is in flight, and never loses or repeats a lesson."""

from __future__ import annotations

import re

from sqlmodel import select

from course import delivery
from course import enrollment as verbs
from course.db import engine_for, session_scope
from course.mailer import Mailer, SmtpTarget
from course.models import Delivery, Enrollment
from course.tokens import Purpose, read_token
from tests.test_delivery import lessons_to, run_days, signup

STAGE_LINK = re.compile(r"https://homeward\.test/stage/([\w.\-]+)")


def stage_token(message) -> str | None:  # type: ignore[no-untyped-def]
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = STAGE_LINK.search(text)
    return found.group(1) if found else None


def switch(settings, clock, token: str) -> Enrollment:  # type: ignore[no-untyped-def]
    enrollment_id = read_token(settings.secret_key, Purpose.STAGE, token, clock=clock)
    with session_scope(engine_for(settings.database_url)) as session:
        enrollment = verbs.start_aftercare(session, clock, enrollment_id)
        session.expunge(enrollment)
    return enrollment


def test_lessons_before_aftercare_carry_the_switch_and_aftercare_lessons_do_not(
    settings, clock, smtp, deliver, mini_course
):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    run_days(clock, deliver, 7)
    received = lessons_to(smtp, "reader@example.org")
    assert [m["Subject"] for m in received] == [
        "Welcome",
        "Lesson two of the mini course",
        "The last lesson",
    ]
    first, second, last = (stage_token(m) for m in received)
    assert first and second and last is None
    html = received[0].get_body(preferencelist=("html",)).get_content()
    assert "My loved one has started treatment</a>" in html


def test_switching_between_lessons_skips_to_aftercare_from_the_next_lesson(
    settings, clock, smtp, deliver, mini_course
):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    deliver()
    [welcome] = lessons_to(smtp, "reader@example.org")
    enrollment = switch(settings, clock, stage_token(welcome))
    assert enrollment.started_treatment_at is not None and enrollment.next_position == 3
    switch(settings, clock, stage_token(welcome))  # a second click changes nothing
    run_days(clock, deliver, 7)
    received = lessons_to(smtp, "reader@example.org")
    assert [m["Subject"] for m in received] == ["Welcome", "The last lesson"]
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Enrollment)).one().status == "completed"


def test_switching_while_a_lesson_is_in_flight_sends_it_then_moves_to_aftercare(
    settings, clock, smtp, deliver, mini_course
):
    """The click lands after a worker claimed lesson 1 but before it was sent."""
    signup(settings, clock, deliver, smtp, "reader@example.org")
    engine = engine_for(settings.database_url)
    # The reader had a stage link from an earlier email; here we mint the same link directly.
    with session_scope(engine) as session:
        enrollment_id = session.exec(select(Enrollment.id)).one()
    # Lesson 1 is due: the tick claims it (the enrollment has no due time while it is in flight).
    [batch] = delivery.tick(engine, settings, clock)
    from course.tokens import make_token

    switched = switch(
        settings, clock, make_token(settings.secret_key, Purpose.STAGE, enrollment_id, clock)
    )
    assert switched.next_due_at is None and switched.next_position == 1
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    try:
        assert delivery.send_batch(engine, settings, clock, mailer, batch).sent == batch
    finally:
        mailer.close()
    [welcome] = lessons_to(smtp, "reader@example.org")
    assert stage_token(welcome) is None, "no point offering a switch that was already made"
    run_days(clock, deliver, 7)
    received = lessons_to(smtp, "reader@example.org")
    assert [m["Subject"] for m in received] == ["Welcome", "The last lesson"]
    with session_scope(engine) as session:
        positions = session.exec(
            select(Delivery.position).where(Delivery.kind == "lesson").order_by(Delivery.position)
        ).all()
    assert positions == [1, 3]


def test_switching_after_unsubscribing_changes_nothing(settings, clock, smtp, deliver, mini_course):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    deliver()
    [welcome] = lessons_to(smtp, "reader@example.org")
    token = stage_token(welcome)
    with session_scope(engine_for(settings.database_url)) as session:
        verbs.unsubscribe(session, clock, read_token(settings.secret_key, Purpose.STAGE, token))
    enrollment = switch(settings, clock, token)
    assert enrollment.status == "unsubscribed" and enrollment.started_treatment_at is None
    run_days(clock, deliver, 7)
    assert len(lessons_to(smtp, "reader@example.org")) == 1

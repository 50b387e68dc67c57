"""The reader in control, through the real web app and delivery: pause and resume, pace, send
time, discretion, a date that matters, language, stopping one course or all, and a change made
while a lesson is in flight."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from course.authoring import load_sequence, publish
from course.db import engine_for, session_scope
from course.models import Delivery, Enrollment, Subscriber
from course.sending import Mailer, SmtpTarget, send_batch, tick
from tests.support import FIXTURES, confirm_link, lessons_to, run_days

READER = "reader@example.org"


@pytest.fixture
def course(settings, clock):
    """Seven lessons (see tests/fixtures/planning-course), in English and Spanish."""
    with session_scope(engine_for(settings.database_url)) as session:
        for folder in ("planning-course", "planning-course-es"):
            publish(session, load_sequence(FIXTURES / folder), clock)
    settings.default_sequence = "planning-course"
    settings.sequences = {"en": "planning-course", "es": "planning-course-es"}
    return "planning-course"


@pytest.fixture
def client(settings, clock, course, queued):
    from course.web import create_app

    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def reading(client, smtp, deliver, clock, **fields) -> EmailMessage:
    """A reader who signed up and got lesson 1; that lesson."""
    clock.set(datetime(2026, 3, 2, 15, tzinfo=UTC))  # a Monday afternoon in New York
    client.post("/enroll", json={"email": READER, "time_zone": "America/New_York", **fields})
    deliver()
    client.get(confirm_link(smtp.to(READER)[0]))
    deliver()
    return lessons_to(smtp, READER)[-1]


def preferences_link(message: EmailMessage) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https://homeward\.test(/preferences/[\w.\-]+)", text)
    assert found, "every email links to the reader's preferences"
    return found.group(1)


def keys(smtp, course: str = "Lesson ") -> list[str]:
    """The lesson keys the reader received from one course, in order (its subjects name them)."""
    subjects = [str(m["Subject"]) for m in lessons_to(smtp, READER)]
    return [s.removeprefix(course) for s in subjects if s.startswith(course)]


def enrollment(settings) -> Enrollment:
    with session_scope(engine_for(settings.database_url)) as session:
        return session.exec(select(Enrollment)).one()


def test_every_email_links_to_a_preferences_page_that_no_other_link_opens(
    client, smtp, deliver, clock
):
    lesson = reading(client, smtp, deliver, clock)
    page = client.get(preferences_link(lesson))
    assert page.status_code == 200 and "Your emails" in page.text
    assert "Your next email comes on Wednesday" not in page.text  # a date, not a weekday
    assert "March 4, 2026" in page.text
    assert page.headers["cache-control"] == "no-store"
    token = preferences_link(lesson).rsplit("/", 1)[1]
    for path in (
        f"/unsubscribe/{token}",
        f"/confirm/{token}",
        f"/my-data/{token}",
        f"/stage/{token}",
    ):
        assert client.get(path).status_code == 400, path  # its own purpose: it opens nothing else


def test_a_pause_for_a_week_sends_one_email_to_confirm_then_nothing_until_it_ends(
    client, smtp, deliver, clock
):
    lesson = reading(client, smtp, deliver, clock)
    link = preferences_link(lesson)
    answer = client.post(link, data={"action": "pause", "how_long": "week"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith(link)
    assert "paused until March 9, 2026" in client.get(answer.headers["location"]).text
    deliver()
    [paused] = [m for m in smtp.to(READER) if m["Subject"] == "Your emails are paused"]
    text = paused.get_body(preferencelist=("plain",)).get_content()
    assert "They start again on March 9, 2026." in text and f"{link}/resume" in text
    run_days(clock, deliver, 6.5)
    assert keys(smtp) == ["welcome"], "nothing while paused"
    run_days(clock, deliver, 0.5)  # to Monday afternoon
    assert keys(smtp) == ["welcome", "signs"], "then the next lesson, at the send hour"
    sent = lessons_to(smtp, READER)[-1]
    assert sent["Date"] and "Mon, 09 Mar 2026 13:00:00" in str(sent["Date"])  # 09:00 EDT


def test_a_pause_until_i_come_back_waits_for_the_resume_button(client, smtp, deliver, clock):
    link = preferences_link(reading(client, smtp, deliver, clock))
    client.post(link, data={"action": "pause", "how_long": "resumed"})
    run_days(clock, deliver, 30)
    assert keys(smtp) == ["welcome"]
    ask = client.get(f"{link}/resume")  # the button in the email that confirmed the pause
    assert ask.status_code == 200 and "Start your emails again?" in ask.text
    assert keys(smtp) == ["welcome"], "opening the link changes nothing"
    client.post(link, data={"action": "resume"})
    deliver()
    assert keys(smtp) == ["welcome"], "not at once: at the reader's next send hour"
    run_days(clock, deliver, 1)
    assert keys(smtp) == ["welcome", "signs"]


@pytest.mark.parametrize(("pace", "days"), [("1", 1), ("7", 7)])
def test_a_new_pace_times_the_next_lesson(client, settings, smtp, deliver, clock, pace, days):
    link = preferences_link(reading(client, smtp, deliver, clock))
    client.post(link, data={"action": "pace", "pace": pace})
    due = enrollment(settings).next_due_at
    assert due is not None
    local = due.replace(tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    # 09:00 in New York, on both sides of the clocks going forward on March 8
    assert (local.date(), local.hour) == (date(2026, 3, 2 + days), 9)


def test_a_new_send_hour_and_time_zone_retime_the_next_lesson(
    client, settings, smtp, deliver, clock
):
    link = preferences_link(reading(client, smtp, deliver, clock))
    client.post(
        link, data={"action": "time", "send_hour": "20", "time_zone": "America/Los_Angeles"}
    )
    due = enrollment(settings).next_due_at
    assert due is not None and due.replace(tzinfo=UTC) == datetime(2026, 3, 5, 4, tzinfo=UTC)
    with session_scope(engine_for(settings.database_url)) as session:
        reader = session.exec(select(Subscriber)).one()
        assert (reader.send_hour, reader.time_zone) == (20, "America/Los_Angeles")


def test_discreet_mode_makes_the_next_email_plain_outside(client, smtp, deliver, clock):
    lesson = reading(client, smtp, deliver, clock)
    assert "Homeward Test" in str(lesson["From"]) and lesson["Subject"] == "Lesson welcome"
    client.post(preferences_link(lesson), data={"action": "discreet", "discreet": "1"})
    run_days(clock, deliver, 2)
    discreet = lessons_to(smtp, READER)[-1]
    assert str(discreet["From"]).startswith("Notes <") and discreet["Subject"] == "A note for you"
    html_part = discreet.get_body(preferencelist=("html",)).get_content()
    text = discreet.get_body(preferencelist=("plain",)).get_content()
    preview = re.search(r'<span class="preheader"[^>]*>(.*?)</span>', html_part, re.S)
    assert preview and not re.search(r"\w", html.unescape(preview.group(1))), "no preview line"
    assert text.splitlines()[0] == "A note for you", "a plain-text preview shows the subject"
    assert "The signs lesson" in html_part, "inside, the heading still says what it is about"
    assert "This is the signs lesson." in text


def test_discreet_mode_can_be_asked_for_at_sign_up(client, smtp, deliver, clock):
    client.post("/enroll", data={"email": READER, "discreet_shown": "1", "discreet": "1"})
    deliver()
    [confirmation] = smtp.to(READER)
    assert confirmation["Subject"] == "A note for you" and str(confirmation["From"]).startswith(
        "Notes"
    )


def test_with_a_conversation_date_the_preparing_lessons_come_first_and_a_check_in_after(
    client, smtp, deliver, clock
):
    link = preferences_link(reading(client, smtp, deliver, clock))
    client.post(link, data={"action": "dates", "conversation_on": "2026-03-08"})
    run_days(clock, deliver, 20)
    received = lessons_to(smtp, READER)
    assert [str(m["Subject"]).split(" ", 1)[1] for m in received] == [
        "welcome",
        "overdose",  # never skipped: before the date
        "talking",  # it prepares for the conversation: before the date
        "check-in",  # the day after
        "signs",  # then the rest, in order
        "recovery",
        "yourself",
    ]
    days = [m["Date"].datetime.astimezone(UTC).date() for m in received]
    assert days[1] < days[2] < date(2026, 3, 8) and days[3] == date(2026, 3, 9)


def test_a_date_moved_or_cleared_re_times_what_is_left(client, settings, smtp, deliver, clock):
    link = preferences_link(reading(client, smtp, deliver, clock))
    client.post(link, data={"action": "dates", "conversation_on": "2026-03-08"})
    page = client.get(link)
    assert 'value="2026-03-08"' in page.text, "the page shows the date set"
    run_days(clock, deliver, 2)
    assert keys(smtp) == ["welcome", "overdose"]
    client.post(link, data={"action": "dates", "conversation_on": ""})  # the talk is off
    assert enrollment(settings).conversation_on is None
    run_days(clock, deliver, 20)
    # The course goes on in order from what is left, and nobody is asked "how did it go?"
    assert keys(smtp) == ["welcome", "overdose", "signs", "talking", "recovery", "yourself"]


def test_a_treatment_start_date_moves_the_course_to_aftercare_from_that_day(
    client, smtp, deliver, clock
):
    link = preferences_link(reading(client, smtp, deliver, clock))
    client.post(link, data={"action": "dates", "treatment_on": "2026-03-05"})
    run_days(clock, deliver, 20)
    assert keys(smtp) == ["welcome", "signs", "overdose", "recovery", "yourself"]


def test_a_date_in_the_past_or_not_a_date_is_refused_with_the_field_named(
    client, settings, smtp, deliver, clock
):
    link = preferences_link(reading(client, smtp, deliver, clock))
    past = client.post(link, data={"action": "dates", "conversation_on": "2026-02-01"})
    assert past.status_code == 422 and 'id="error-summary"' in past.text
    assert 'id="conversation_on" name="conversation_on" type="date" value=""' in past.text or (
        'aria-invalid="true"' in past.text
    )
    junk = client.post(link, data={"action": "dates", "treatment_on": "soon"})
    assert junk.status_code == 422 and "like 2026-03-15" in junk.text
    assert enrollment(settings).conversation_on is None


def test_the_language_can_change_and_the_next_lesson_comes_in_it(client, smtp, deliver, clock):
    link = preferences_link(reading(client, smtp, deliver, clock))
    client.post(link, data={"action": "language", "locale": "es"})
    run_days(clock, deliver, 3)
    assert [m["Subject"] for m in lessons_to(smtp, READER)] == ["Lesson welcome", "Lección signs"]


def test_stopping_one_course_leaves_the_other_and_stopping_all_stops_everything(
    client, settings, smtp, deliver, clock
):
    link = preferences_link(reading(client, smtp, deliver, clock))
    client.post("/enroll", json={"email": READER, "sequence": "planning-course-es"})
    deliver()
    client.get(confirm_link(smtp.to(READER)[-1]))
    deliver()
    spanish = preferences_link(lessons_to(smtp, READER)[-1])
    assert keys(smtp, "Lección ") == ["welcome"]
    left = client.post(link, data={"action": "leave"})
    assert left.status_code == 200 and "no more emails from this course" in left.text
    run_days(clock, deliver, 3)
    assert keys(smtp) == ["welcome"], "the course the reader left sends nothing more"
    assert keys(smtp, "Lección ") == ["welcome", "signs"], "the other course goes on"
    everything = client.post(spanish, data={"action": "leave_all"})
    assert everything.status_code == 200
    run_days(clock, deliver, 10)
    assert keys(smtp, "Lección ") == ["welcome", "signs"]
    with session_scope(engine_for(settings.database_url)) as session:
        statuses = session.exec(select(Enrollment.status)).all()
    assert set(statuses) == {"unsubscribed"}


def test_a_change_while_a_lesson_is_in_flight_applies_from_the_next_lesson(
    client, settings, smtp, deliver, clock
):
    link = preferences_link(reading(client, smtp, deliver, clock))
    clock.advance(days=2)
    engine = engine_for(settings.database_url)
    [batch] = tick(engine, settings, clock)  # lesson 2 is claimed, not yet sent
    client.post(link, data={"action": "pace", "pace": "7"})
    assert enrollment(settings).replan, "the worker's plan for lesson 3 is now stale"
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    try:
        assert send_batch(engine, settings, clock, mailer=mailer, ids=batch).sent == batch
    finally:
        mailer.close()
    sent_at = clock.now()
    deliver()  # the next tick plans lesson 3 from the new pace
    due = enrollment(settings).next_due_at
    assert not enrollment(settings).replan and due is not None
    assert due.replace(tzinfo=UTC) - sent_at > timedelta(days=6)
    run_days(clock, deliver, 8)
    assert keys(smtp) == ["welcome", "signs", "overdose"]
    with session_scope(engine) as session:
        positions = session.exec(select(Delivery.position).where(Delivery.kind == "lesson")).all()
    assert sorted(positions) == [1, 2, 3], "nothing sent twice"


def test_the_consent_record_says_when_where_and_to_what_and_is_in_the_export(
    client, settings, smtp, deliver, clock
):
    from course.readers.personal_data import export

    client.post("/enroll", data={"email": READER, "lang": "en", "sequence": "planning-course"})
    deliver()
    client.get(confirm_link(smtp.to(READER)[0]))
    with session_scope(engine_for(settings.database_url)) as session:
        consent = export(session, READER)["enrollments"][0]["consent"]
    assert consent["from"] == "form" and consent["wording"].startswith("en-")
    assert consent["given_at"] and consent["confirmed_at"]
    client.post("/enroll", json={"email": "api@example.org"})
    deliver()
    with session_scope(engine_for(settings.database_url)) as session:
        assert export(session, "api@example.org")["enrollments"][0]["consent"]["from"] == "api"

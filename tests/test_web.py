"""The public web routes, as a browser and an API client use them."""

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from course.db import engine_for, session_scope
from course.models import Enrollment, Subscriber
from tests.conftest import confirm_link, unsubscribe_link


@pytest.fixture
def client(settings, clock, mini_course, queued):
    from course.web import create_app

    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def enrollments(settings):
    with session_scope(engine_for(settings.database_url)) as session:
        return session.exec(select(Enrollment)).all()


def test_signup_page_explains_what_happens_and_works_without_javascript(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert '<form method="post" action="/enroll"' in html
    assert 'name="email"' in html and 'name="time_zone"' in html and "<select" in html
    assert "3 short lessons" in html  # the mini course has three
    assert "never share or sell" in html and "unsubscribe" in html.lower()
    assert "911" in html and "988" in html


def test_form_enrollment_shows_check_your_email_and_sends_a_confirmation(
    client, settings, smtp, deliver
):
    answer = client.post(
        "/enroll",
        data={"email": "Parent@Example.org", "first_name": "Rosa", "time_zone": "America/Chicago"},
    )
    assert answer.status_code == 200
    assert "check your email" in answer.text.lower()
    deliver()
    [message] = smtp.to("parent@example.org")
    assert "confirm" in message["Subject"].lower()
    assert "Hi Rosa," in message.get_body(("plain",)).get_content()
    [enrollment] = enrollments(settings)
    assert enrollment.status == "pending"


def test_json_enrollment_answers_the_same_for_new_and_known_addresses(client):
    first = client.post("/enroll", json={"email": "known@example.org"})
    second = client.post("/enroll", json={"email": "known@example.org"})
    other = client.post("/enroll", json={"email": "new@example.org"})
    assert first.status_code == second.status_code == other.status_code == 202
    assert first.json() == second.json() == other.json()


def test_confirming_activates_and_sends_lesson_one_at_once(client, settings, smtp, deliver):
    client.post("/enroll", json={"email": "a@example.org", "first_name": "Ann"})
    deliver()
    link = confirm_link(smtp.to("a@example.org")[0])
    page = client.get(link)
    assert page.status_code == 200 and "first lesson is on its way" in page.text
    deliver()
    subjects = [m["Subject"] for m in smtp.to("a@example.org")]
    assert subjects[-1] == "Welcome, Ann"
    assert client.get(link).status_code == 200  # a second click is harmless
    deliver()
    assert len(smtp.to("a@example.org")) == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"email": "not-an-email"}, "does not look right"),
        ({"email": ""}, "enter your email"),
        ({"email": "a@example.org", "first_name": "Ann\r\nBcc: x@evil.test"}, "letters, spaces"),
        ({"email": "a@example.org\r\nBcc: x@evil.test"}, "does not look right"),
        ({"email": "a@example.org", "time_zone": "Nowhere/Land"}, "Unknown time zone"),
        ({"email": "a@example.org", "send_hour": "25"}, "0 to 23"),
        ({"email": "a@example.org", "relationship": "boss"}, "Unknown relationship"),
    ],
)
def test_bad_input_gets_a_clear_json_error_and_stores_nothing(client, settings, payload, message):
    answer = client.post("/enroll", json=payload)
    assert answer.status_code == 422
    assert message in answer.json()["error"]
    assert enrollments(settings) == []


def test_bad_form_input_redisplays_the_form_with_the_message(client):
    answer = client.post("/enroll", data={"email": "nope", "first_name": "Ann"})
    assert answer.status_code == 422
    assert "does not look right" in answer.text and 'value="Ann"' in answer.text


def test_unknown_sequence_and_oversized_body_are_refused(client, settings):
    unknown = client.post("/enroll", json={"email": "a@example.org", "sequence": "nope"})
    assert unknown.status_code == 404 and "no course called" in unknown.json()["error"]
    huge = client.post("/enroll", json={"email": "a@example.org", "first_name": "x" * 20000})
    assert huge.status_code == 413 and "more information" in huge.json()["error"]
    assert (
        client.post(
            "/enroll", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert enrollments(settings) == []


def test_tampered_and_expired_confirm_links_get_a_page_not_a_traceback(
    client, clock, smtp, deliver
):
    client.post("/enroll", data={"email": "b@example.org"})
    deliver()
    link = confirm_link(smtp.to("b@example.org")[0])
    tampered = client.get(link[:-3] + "xyz")
    assert (
        tampered.status_code == 400
        and "not valid" in tampered.text
        and "Traceback" not in tampered.text
    )
    clock.advance(days=8)
    expired = client.get(link)
    assert expired.status_code == 410 and "expired" in expired.text


def test_one_click_unsubscribe_stops_everything_at_once(client, settings, clock, smtp, deliver):
    client.post("/enroll", json={"email": "c@example.org"})
    deliver()
    client.get(confirm_link(smtp.to("c@example.org")[0]))
    deliver()
    lesson = smtp.to("c@example.org")[-1]
    assert lesson["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = unsubscribe_link(lesson)
    page = client.get(path)
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert enrollments(settings)[0].status == "active"  # a GET (link scanner) changes nothing
    answer = client.post(path, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
    assert answer.status_code == 200 and "unsubscribed" in answer.text
    assert enrollments(settings)[0].status == "unsubscribed"
    clock.advance(days=30)
    deliver()
    assert len(smtp.to("c@example.org")) == 2  # confirmation + lesson 1, nothing after


def test_health_checks_database_and_redis(client):
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_unknown_pages_get_a_friendly_404(client):
    answer = client.get("/no-such-page")
    assert answer.status_code == 404 and "could not find" in answer.text


def test_resubscribing_after_unsubscribe_needs_a_new_confirmation(
    client, settings, clock, smtp, deliver
):
    client.post("/enroll", json={"email": "d@example.org"})
    deliver()
    first = smtp.to("d@example.org")[0]
    client.get(confirm_link(first))
    deliver()
    client.post(unsubscribe_link(smtp.to("d@example.org")[-1]))
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Subscriber)).one().email == "d@example.org"
    clock.advance(minutes=10)
    client.post("/enroll", json={"email": "d@example.org"})
    deliver()
    assert enrollments(settings)[0].status == "pending"
    assert "confirm" in smtp.to("d@example.org")[-1]["Subject"].lower()


def test_repeated_signups_do_not_flood_an_inbox_with_confirmations(client, clock, smtp, deliver):
    for _ in range(5):
        client.post("/enroll", json={"email": "e@example.org"})
    deliver()
    assert len(smtp.to("e@example.org")) == 1
    clock.advance(minutes=6)
    client.post("/enroll", json={"email": "e@example.org"})
    deliver()
    links = {confirm_link(m) for m in smtp.to("e@example.org")}
    assert len(links) == 2  # a fresh link; both work until they expire

"""Pages in the reader's language, and the "my loved one has started treatment" page: what a
Spanish-speaking parent sees from sign-up to the aftercare switch, through the real routes."""

from __future__ import annotations

import pytest
from sqlmodel import select

from course.authoring import load_sequence
from course.db import engine_for, session_scope
from course.models import Delivery, Enrollment
from course.settings import PROJECT_ROOT
from tests.support import confirm_link, selected_course, stage_token, unsubscribe_link, visible

SPANISH = {"Accept-Language": "es-MX,es;q=0.9,en;q=0.5"}
ENGLISH = {"Accept-Language": "en-US,en;q=0.9"}


@pytest.fixture
def client(bilingual):
    return bilingual


def test_an_english_browser_gets_english_and_lang_overrides_the_browser(client):
    english = client.get("/", headers=ENGLISH)
    assert '<html lang="en">' in english.text and "You are not alone" in english.text
    assert selected_course(english.text) == "family-guide"
    spanish = client.get("/?lang=es", headers=ENGLISH)
    assert (
        "No tiene que vivir esto a solas" in spanish.text
        and selected_course(spanish.text) == "family-guide-es"
    )
    assert "You are not alone" in client.get("/?lang=en", headers=SPANISH).text


def test_a_spanish_signup_is_spanish_from_confirmation_email_to_unsubscribe(client, smtp, deliver):
    answer = client.post(
        "/enroll",
        data={"email": "madre@example.org", "sequence": "family-guide-es", "lang": "es"},
        headers=ENGLISH,
    )
    assert answer.status_code == 200 and "revise su correo" in answer.text.lower()
    deliver()
    [confirmation] = smtp.to("madre@example.org")
    assert confirmation["Subject"] == "Confirme su correo para Guía para la familia"
    assert "911" in confirmation.get_body(("plain",)).get_content()
    # The browser is English, but the pages her links open speak her course's language.
    confirmed = client.get(confirm_link(confirmation), headers=ENGLISH)
    assert "Su primera lección va en camino" in confirmed.text
    deliver()
    lesson = smtp.to("madre@example.org")[-1]
    assert lesson["Subject"] == "No tiene que pasar por esto sin apoyo"
    text = lesson.get_body(("plain",)).get_content()
    assert "SI ALGUIEN CORRE PELIGRO AHORA MISMO" in text and "/crisis?lang=es" in text
    link = unsubscribe_link(lesson)
    assert "Dejar de recibir" in client.get(link, headers=ENGLISH).text
    assert "Se dio de baja" in client.post(link, headers=ENGLISH).text


def test_a_bad_address_is_explained_in_the_language_of_the_form(client, settings):
    answer = client.post("/enroll", data={"email": "no-es-un-correo", "lang": "es"})
    assert answer.status_code == 422
    assert "no parece correcto" in answer.text and "No tiene que vivir esto a solas" in answer.text
    api = client.post("/enroll", json={"email": "nope"}, headers=SPANISH)
    assert api.status_code == 422 and api.json()["code"] == "email_invalid"
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Enrollment)).all() == []


def test_error_pages_and_the_crisis_page_speak_spanish(client):
    assert "No encontramos esa página" in client.get("/nowhere", headers=SPANISH).text
    tampered = client.get("/stage/not-a-real-token", headers=SPANISH)
    assert tampered.status_code == 400 and "no es válido" in tampered.text
    crisis = client.get("/crisis?lang=es")
    assert "Qué hacer en una sobredosis" in crisis.text and "naloxona" in crisis.text
    assert "What to do in an overdose" in client.get("/crisis").text


def stage_link(message) -> str:
    token = stage_token(message)
    assert token, "the email offers no stage switch"
    return f"/stage/{token}"


def signed_up(client, smtp, deliver, email: str, sequence: str = "family-guide"):
    client.post("/enroll", data={"email": email, "sequence": sequence})
    deliver()
    client.get(confirm_link(smtp.to(email)[0]))
    deliver()
    return smtp.to(email)[-1]


def next_lesson_position(settings) -> int:
    with session_scope(engine_for(settings.database_url)) as session:
        return session.exec(select(Enrollment.next_position)).one()


def test_confirming_the_stage_switch_sends_the_never_skip_lessons_then_aftercare(
    client, settings, clock, smtp, deliver
):
    welcome = signed_up(client, smtp, deliver, "dad@example.org")
    done = client.post(stage_link(welcome))
    assert done.status_code == 200 and "Thank you for telling us" in done.text
    lessons = load_sequence(PROJECT_ROOT / "lessons" / "family-guide").lessons
    # Overdose (05) and safety (09) still come, whatever the switch: then aftercare.
    never_skip = [lesson.position for lesson in lessons if lesson.never_skip]
    first_aftercare = next(lesson.position for lesson in lessons if lesson.module == "aftercare")
    assert never_skip == [5, 9] and first_aftercare == 14
    assert next_lesson_position(settings) == 5
    again = client.post(stage_link(welcome))
    assert "You have already told us" in again.text
    for _ in range(3):
        clock.advance(days=5)
        deliver()
    received = [m for m in smtp.to("dad@example.org") if "confirm" not in m["Subject"].lower()]
    assert [m["Subject"] for m in received[1:]] == [
        lessons[p - 1].subject for p in (5, 9, first_aftercare)
    ]
    assert all("/stage/" not in m.get_body(("plain",)).get_content() for m in received[1:])
    with session_scope(engine_for(settings.database_url)) as session:
        sent = session.exec(select(Delivery.position).where(Delivery.kind == "lesson")).all()
    assert sorted(sent) == [1, 5, 9, first_aftercare]


def test_the_sign_up_page_claims_no_authors_unless_the_centre_names_them(
    settings, clock, family_guides, queued
):
    from fastapi.testclient import TestClient

    from course.web import create_app

    plain = TestClient(create_app(settings, clock, enqueue=queued.extend, kick=lambda: None))
    page = visible(plain.get("/", headers=ENGLISH).text)
    assert "trusted health sources, such as NIDA, the CDC and SAMHSA" in page
    assert "counsellor" not in page.lower()
    settings.about = "Written by the counsellors of Riverside Recovery Centre."
    named = TestClient(create_app(settings, clock, enqueue=queued.extend, kick=lambda: None))
    assert "Written by the counsellors of Riverside Recovery Centre." in named.get("/").text

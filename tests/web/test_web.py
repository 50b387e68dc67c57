"""The public web routes, as a browser and an API client use them."""

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from course.db import engine_for, session_scope
from course.models import Enrollment, Subscriber
from course.sending import send_batch, tick
from tests.support import (
    confirm_link,
    data_link,
    selected_course,
    stage_token,
    unsubscribe_link,
    visible,
)


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
    assert 'href="tel:911"' in html and 'href="tel:+18006624357"' in html  # one tap on a phone


def test_a_short_course_is_described_as_about_a_week_in_both_languages(client):
    # The mini course's three lessons span a few days: "about 1 weeks" read as a mistake.
    english, spanish = client.get("/?lang=en").text, client.get("/?lang=es").text
    assert "3 short lessons by email, one every few days, over about a week." in english
    assert "durante más o menos una semana" in spanish and "1 semanas" not in spanish


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
    again = client.get(link)  # a second click is harmless, and says where things stand
    assert again.status_code == 200 and "already signed up" in again.text
    assert "first lesson is on its way" not in again.text
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
        ({"email": "a@example.org", "locale": ["es"]}, "single value"),
        ({"email": ["a@example.org"]}, "single value"),
    ],
)
def test_bad_input_gets_a_clear_json_error_and_stores_nothing(client, settings, payload, message):
    answer = client.post("/enroll", json=payload)
    assert answer.status_code == 422
    assert message in answer.json()["error"]
    assert enrollments(settings) == []


def test_a_name_typed_on_a_phone_with_a_curly_apostrophe_is_welcome(client, smtp, deliver):
    answer = client.post(
        "/enroll", json={"email": "s@example.org", "first_name": "Siobhán O’Brien"}
    )
    assert answer.status_code == 202, answer.text
    deliver()
    [message] = smtp.to("s@example.org")
    assert "Hi Siobhán O’Brien," in message.get_body(("plain",)).get_content()


def profile(settings, email: str) -> tuple[str, str, int, str]:
    with session_scope(engine_for(settings.database_url)) as session:
        reader = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        return reader.first_name, reader.time_zone, reader.send_hour, reader.substance


def test_signing_up_again_before_confirming_takes_the_new_form_and_keeps_what_an_api_leaves_out(
    client, settings, smtp, deliver, intake
):
    first = {"email": "f@example.org", "first_name": "Rosa", "time_zone": "America/Chicago"}
    client.post("/enroll", json={**first, "send_hour": 7, "substance": "opioids"})
    client.post("/enroll", json={"email": "F@example.org"})  # an API retry: the address only
    intake()
    assert profile(settings, "f@example.org") == ("Rosa", "America/Chicago", 7, "opioids")
    client.post("/enroll", json={"email": "f@example.org", "send_hour": 0})  # midnight
    intake()
    assert profile(settings, "f@example.org") == ("Rosa", "America/Chicago", 0, "opioids")
    # The form again, as a browser sends it: every field, "" for "prefer not to say".
    form = {**first, "first_name": "Rosalind", "send_hour": "7", "relationship": ""}
    client.post("/enroll", data={**form, "substance": "", "sequence": "mini-course", "lang": "en"})
    deliver()
    [confirmation] = smtp.to("f@example.org")
    assert "Hi Rosalind," in confirmation.get_body(("plain",)).get_content()
    assert profile(settings, "f@example.org") == ("Rosalind", "America/Chicago", 7, "unsure")


def test_once_lessons_flow_a_sign_up_for_another_course_changes_no_details(
    bilingual, settings, clock, smtp, deliver
):
    reader = {"email": "h@example.org", "first_name": "Hana", "time_zone": "Asia/Tokyo"}
    bilingual.post("/enroll", json={**reader, "sequence": "family-guide"})
    deliver()
    bilingual.get(confirm_link(smtp.to("h@example.org")[0]))
    deliver()
    # Anyone can type her address into the form: that must not rename her or move her lessons.
    stranger = {"email": "h@example.org", "first_name": "Nobody", "time_zone": "UTC"}
    assert bilingual.post("/enroll", json={**stranger, "locale": "es"}).status_code == 202
    assert profile(settings, "h@example.org") == ("Hana", "Asia/Tokyo", 9, "unsure")


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


def test_a_reader_gets_a_private_link_to_see_download_and_erase_their_data(
    client, settings, clock, smtp, deliver
):
    client.post("/enroll", json={"email": "Mine@Example.org", "first_name": "Ana"})
    deliver()
    client.get(confirm_link(smtp.to("mine@example.org")[0]))
    deliver()
    unsubscribe = unsubscribe_link(smtp.to("mine@example.org")[-1])
    token = unsubscribe.rsplit("/", 1)[1]
    assert f'action="/my-data/{token}/link"' in client.get(unsubscribe).text  # from every email
    # The unsubscribe link (in every email, maybe forwarded) does not open the data itself.
    assert client.get(f"/my-data/{token}").status_code == 400

    asked = client.post(f"/my-data/{token}/link")
    assert asked.status_code == 200 and "Please check your email" in asked.text
    client.post(f"/my-data/{token}/link")  # pressed twice: still one email
    deliver()
    [email] = [m for m in smtp.to("mine@example.org") if "your data" in m["Subject"]]
    mine = data_link(email)
    assert enrollments(settings)[0].status == "active"  # asking changes nothing

    page = client.get(mine)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "mine@example.org" in page.text and "Ana" in page.text and "3 emails" in page.text
    download = client.get(f"{mine}/download")
    assert "attachment" in download.headers["content-disposition"]
    copy = download.json()
    assert copy["email"] == "mine@example.org" and copy["first_name"] == "Ana"
    assert [e["kind"] for e in copy["enrollments"][0]["emails"]] == ["confirm", "lesson", "data"]

    # Erasing is asked once more, on a page of its own, with a clearly destructive button.
    assert f'class="danger-link" href="{mine}/erase"' in page.text
    ask = client.get(f"{mine}/erase")
    assert ask.status_code == 200 and 'class="danger"' in ask.text
    assert enrollments(settings), "opening the question erases nothing"
    erased = client.post(f"{mine}/erase")
    assert erased.status_code == 200 and "Your data is erased" in erased.text
    again = client.post(f"{mine}/erase")  # a second press: nothing is left to act on
    assert again.status_code == 410 and "This link has ended" in again.text
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Subscriber)).all() == []
        assert session.exec(select(Enrollment)).all() == []
    gone = client.get(mine)
    assert gone.status_code == 410 and "This link has ended" in gone.text
    clock.advance(days=30)
    deliver()
    assert len(smtp.to("mine@example.org")) == 3  # nothing more, ever
    assert client.get(mine[:-3] + "abc").status_code == 400  # a tampered link


def test_the_data_link_expires_after_a_day(client, settings, clock, smtp, deliver):
    client.post("/enroll", json={"email": "late@example.org"})
    deliver()
    client.get(confirm_link(smtp.to("late@example.org")[0]))
    deliver()
    token = unsubscribe_link(smtp.to("late@example.org")[-1]).rsplit("/", 1)[1]
    client.post(f"/my-data/{token}/link")
    deliver()
    mine = data_link(smtp.to("late@example.org")[-1])
    clock.advance(hours=25)
    late = client.get(mine)
    assert late.status_code == 410 and "expired" in late.text
    assert client.post(f"{mine}/erase").status_code == 410
    assert enrollments(settings)  # nothing was erased


def test_health_checks_database_and_redis(client):
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "courses": "ok", "redis": "ok"}


def test_before_a_course_is_published_readers_are_asked_to_come_back_and_health_says_why(
    settings, clock
):
    from course.web import create_app

    with TestClient(create_app(settings, clock, enqueue=lambda _: None, kick=lambda: None)) as c:
        page = c.get("/")
        assert page.status_code == 503 and "Sign-up is not open yet" in page.text
        assert "<form" not in page.text
        api = c.post("/enroll", json={"email": "early@example.org"})
        assert api.status_code == 503 and api.json()["code"] == "not_open"
        health = c.get("/health")
        assert health.status_code == 503
        assert health.json()["courses"] == "none published: run course lessons publish PATH"


def test_a_database_a_newer_release_migrated_is_named_on_health(settings, clock, tmp_path):
    from sqlalchemy import text

    from course.db import upgrade
    from course.web import create_app

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    upgrade(url)
    with engine_for(url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    newer = settings.model_copy(update={"database_url": url})
    app = create_app(newer, clock, enqueue=lambda _: None, kick=lambda: None)
    with TestClient(app) as c:
        health = c.get("/health")
    assert health.status_code == 503
    assert health.json()["database"].startswith("schema is newer than this code")


def test_an_unmigrated_database_is_named_on_health_and_readers_get_a_page(
    settings, clock, tmp_path
):
    from course.web import create_app

    fresh = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'new.db'}"})
    app = create_app(fresh, clock, enqueue=lambda _: None, kick=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as c:
        health = c.get("/health")
        assert health.status_code == 503
        assert health.json()["database"] == "schema out of date: run course db upgrade"
        page = c.get("/")
        assert page.status_code == 503 and "Sign-up is not open yet" in page.text
        form = c.post("/enroll", data={"email": "early@example.org"})
        assert form.status_code == 503 and "Sign-up is not open yet" in form.text


def test_unknown_pages_get_a_friendly_404(client):
    answer = client.get("/no-such-page")
    assert answer.status_code == 404 and "could not find" in answer.text


def test_resubscribing_after_unsubscribe_needs_a_new_confirmation_then_starts_over(
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
    again = smtp.to("d@example.org")[-1]
    assert "confirm" in again["Subject"].lower()
    client.get(confirm_link(again))
    deliver()
    # Lesson 1 once more, as a new message: the first round's copy must not block it.
    lessons = [m for m in smtp.to("d@example.org") if "confirm" not in m["Subject"].lower()]
    assert [m["Subject"] for m in lessons] == [lessons[0]["Subject"]] * 2
    assert lessons[0]["Message-ID"] != lessons[1]["Message-ID"]
    assert enrollments(settings)[0].status == "active"


def test_repeated_signups_do_not_flood_an_inbox_with_confirmations(client, clock, smtp, deliver):
    for _ in range(3):  # pressed again and again (more is refused: COURSE_SIGNUP_ADDRESS_RATE)
        client.post("/enroll", json={"email": "e@example.org"})
    deliver()
    assert len(smtp.to("e@example.org")) == 1
    clock.advance(minutes=6)
    client.post("/enroll", json={"email": "e@example.org"})
    deliver()
    links = {confirm_link(m) for m in smtp.to("e@example.org")}
    assert len(links) == 2  # a fresh link; both work until they expire


# --- pages in the reader's language ----------------------------------------------------------

SPANISH = {"Accept-Language": "es-419,es;q=0.9,en;q=0.4"}
ENGLISH = {"Accept-Language": "en-US,en;q=0.9"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("es", "es"),
        ("es-MX", "es"),
        ("es-419,en;q=0.5", "es"),
        ("en-US,en;q=0.9,es;q=0.8", "en"),
        ("en;q=0.5, es;q=0.9", "es"),  # the order written is not the order preferred
        ("fr-FR, es;q=0.3, en;q=0.2", "es"),
        ("es;q=0, en;q=0.1", "en"),  # q=0 means "not this one"
        ("fr, de", None),
        ("", None),
    ],
)
def test_the_browser_language_respects_preferences(header, expected):
    from course.web import i18n

    assert i18n.from_accept_language(header) == expected


def test_an_explicit_lang_beats_the_course_and_the_course_beats_the_browser():
    from course.web import i18n

    assert i18n.pick("en", "es", "es") == "en"
    assert i18n.pick("ES-mx", None, "en") == "es"
    assert i18n.pick(None, "es", "en-US") == "es"
    assert i18n.pick("fr", None, "es-MX") == "es"
    assert i18n.pick(None, None, "fr") == "en"


def test_every_word_a_template_or_error_uses_is_in_both_catalogs():
    from course import errors
    from course.web import i18n

    en, es = i18n.catalog("en"), i18n.catalog("es")
    assert en.keys() == es.keys()
    templates = Path(i18n.__file__).parent / "templates"
    for template in templates.glob("*.html"):
        source = template.read_text(encoding="utf-8")
        for key in re.findall(r"\bt\('([\w.]+)'\)", source):
            assert key in en, f"{template.name} uses {key!r}"
        for prefix in re.findall(r"\bt\('([\w.]+)' ~", source):
            assert any(k.startswith(prefix) for k in en), f"{template.name} uses {prefix!r}"
    # Every stable code a reader can be shown has words in both languages.
    raised = re.compile(
        r'(?:InvalidInput|TokenInvalid|CourseError)\(\s*f?"[^"]*",\s*"(\w+)"(?:,\s*"?\w+"?)?,?\s*\)'
    )
    from course.web import errors as web_errors

    codes = {
        c.default_code
        for module in (errors, web_errors)
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, errors.CourseError)
    } - {""}
    assert {"not_open", "too_large", "unsupported", "not_found", "link_ended"} <= codes
    for module in (Path(errors.__file__).parent).rglob("*.py"):
        if "staff" in module.parts:
            continue  # the staff pages are in English: their messages are shown as written
        codes |= set(raised.findall(module.read_text(encoding="utf-8")))
    assert {"email_invalid", "name_chars", "send_hour", "link_invalid", "link_expired"} <= codes
    assert {f"errors.{code}" for code in codes} <= en.keys()
    assert "adict" not in " ".join(es.values()).lower()  # person-first words only


def test_a_spanish_browser_gets_the_spanish_form_and_the_spanish_course(bilingual):
    page = bilingual.get("/", headers=SPANISH)
    assert page.status_code == 200 and '<html lang="es">' in page.text
    assert "Aprenda a ayudar" in page.text and "Quiero inscribirme" in page.text
    assert selected_course(page.text) == "family-guide-es"
    # Counted in the Spanish course (the check-in goes only to readers who set a date), and
    # its weeks from its own delays.
    assert (
        "16 lecciones cortas por correo. Le llega una cada pocos días, por unas 6 semanas"
        in page.text
    )
    assert "Guía para la familia" in page.text  # its own title
    assert 'hreflang="en"' in page.text and ">English</a>" in page.text


def test_lang_in_the_address_overrides_the_browser(bilingual):
    english = bilingual.get("/?lang=en", headers=SPANISH)
    assert '<html lang="en">' in english.text and "You are not alone" in english.text
    assert selected_course(english.text) == "family-guide"
    assert ">Español</a>" in english.text
    spanish = bilingual.get("/?lang=es", headers=ENGLISH)
    assert selected_course(spanish.text) == "family-guide-es"


def test_only_a_language_with_a_published_course_is_offered(client):
    page = client.get("/", headers=SPANISH)
    assert '<html lang="es">' in page.text  # the page is Spanish ...
    assert 'id="sequence"' not in page.text  # ... but there is no Spanish course to offer
    assert '<input type="hidden" name="sequence" value="mini-course">' in page.text
    assert "3 lecciones cortas" in page.text


@pytest.mark.parametrize("path", ["/", "/crisis", "/no-such-page"])
def test_every_page_links_to_the_other_language_without_javascript(client, path):
    spanish = client.get(path, headers=SPANISH)
    assert '<html lang="es">' in spanish.text and "llame al 911" in visible(spanish.text)
    assert "marque 2 para español" in visible(spanish.text)
    switch = re.search(r'<a class="lang" href="([^"]+)"', spanish.text).group(1)
    assert switch == f"{path}?lang=en"
    english = client.get(switch, headers=SPANISH)
    assert '<html lang="en">' in english.text and "call 911" in visible(english.text)


def test_after_a_spanish_form_the_check_email_page_is_spanish_and_its_switch_works(client):
    answer = client.post("/enroll", data={"email": "tia@example.org", "lang": "es"})
    assert answer.status_code == 200 and "Por favor, revise su correo" in answer.text
    # The page answered a POST: its switch must not lead to a GET /enroll (405).
    switch = re.search(r'<a class="lang" href="([^"]+)"', answer.text).group(1)
    assert switch == "/?lang=en"
    assert client.get(switch).status_code == 200


def test_a_spanish_signup_gets_a_spanish_email_and_spanish_pages(
    bilingual, settings, smtp, deliver
):
    answer = bilingual.post(
        "/enroll",
        data={"email": "abuela@example.org", "sequence": "family-guide-es", "lang": "es"},
    )
    assert answer.status_code == 200 and '<html lang="es">' in answer.text
    deliver()
    [confirmation] = smtp.to("abuela@example.org")
    assert confirmation["Subject"].startswith("Confirme su correo")
    # Her browser says English; the pages her links open follow her course.
    confirmed = bilingual.get(confirm_link(confirmation), headers=ENGLISH)
    assert (
        '<html lang="es">' in confirmed.text and "Su primera lección va en camino" in confirmed.text
    )
    deliver()
    path = unsubscribe_link(smtp.to("abuela@example.org")[-1])
    assert "¿Dejar de recibir las lecciones?" in bilingual.get(path, headers=ENGLISH).text
    done = bilingual.post(path, headers=ENGLISH)
    assert "Se dio de baja" in done.text and "1-800-662-4357" in visible(done.text)
    assert "You are unsubscribed" in bilingual.post(f"{path}?lang=en").text
    asked = bilingual.post("/my-data/" + path.rsplit("/", 1)[1] + "/link", headers=ENGLISH)
    assert "Por favor, revise su correo" in asked.text
    deliver()
    email = smtp.to("abuela@example.org")[-1]
    assert email["Subject"] == "Su enlace para ver o borrar sus datos"
    mine = bilingual.get(data_link(email), headers=ENGLISH)
    assert "Lo que guardamos sobre usted" in mine.text and "Borrar mis datos" in mine.text


def test_a_reader_who_skips_the_substance_question_gets_the_not_sure_wording(
    bilingual, settings, smtp, deliver
):
    answer = bilingual.post(
        "/enroll", data={"email": "skip@example.org", "substance": "", "sequence": "family-guide"}
    )
    assert answer.status_code == 200, answer.text
    deliver()
    bilingual.get(confirm_link(smtp.to("skip@example.org")[0]))
    deliver()
    lesson = smtp.to("skip@example.org")[-1].get_body(preferencelist=("plain",)).get_content()
    assert "Maybe you don't know what your loved one is taking" in lesson
    assert "We talk most about opioids" not in lesson  # not the wording for opioids


def test_the_api_can_choose_the_course_by_language(bilingual, settings, smtp, deliver, intake):
    answer = bilingual.post("/enroll", json={"email": "primo@example.org", "locale": "es"})
    assert answer.status_code == 202
    intake()
    [enrollment] = enrollments(settings)
    assert enrollment.sequence_slug == "family-guide-es"
    deliver()
    assert smtp.to("primo@example.org")[0]["Subject"].startswith("Confirme su correo")
    named = bilingual.post("/enroll", json={"email": "tio@example.org", "sequence": "family-guide"})
    assert named.status_code == 202
    intake()
    assert {e.sequence_slug for e in enrollments(settings)} == {"family-guide", "family-guide-es"}


@pytest.mark.parametrize(
    ("fields", "spanish", "code"),
    [
        (
            {"email": "no-es-un-correo"},
            "Ese correo electrónico no parece correcto",
            "email_invalid",
        ),
        ({"email": ""}, "escriba su correo", "email_missing"),
        (
            {"email": "a@example.org", "first_name": "R2-D2"},
            "solo puede tener letras",
            "name_chars",
        ),
        ({"email": "a@example.org", "send_hour": "25"}, "de 0 a 23", "send_hour"),
        ({"email": "a@example.org", "time_zone": "Nowhere/Land"}, "zona horaria", "time_zone"),
    ],
)
def test_bad_input_is_explained_in_spanish(client, settings, fields, spanish, code):
    page = client.post("/enroll", data=fields, headers=SPANISH)
    assert page.status_code == 422 and '<html lang="es">' in page.text
    assert spanish in page.text and 'id="error-summary"' in page.text
    if "first_name" in fields:
        assert 'value="R2-D2"' in page.text  # what they typed is kept for them to fix
    api = client.post("/enroll", json=fields, headers=SPANISH)
    assert api.status_code == 422 and api.json()["code"] == code
    assert api.json()["error"]  # the detailed English message stays for API clients
    assert enrollments(settings) == []


def test_errors_and_broken_links_are_explained_in_spanish(client, clock, smtp, deliver):
    assert "No encontramos esa página" in client.get("/nada", headers=SPANISH).text
    not_allowed = client.get("/enroll", headers=SPANISH)
    assert not_allowed.status_code == 405 and "no está disponible" in not_allowed.text
    assert client.get("/nada", headers={"Accept": "application/json"}).json() == {
        "error": "We could not find that page.",
        "code": "not_found",
    }
    client.post("/enroll", data={"email": "f@example.org"})
    deliver()
    link = confirm_link(smtp.to("f@example.org")[0])
    tampered = client.get(link[:-3] + "xyz", headers=SPANISH)
    assert tampered.status_code == 400 and "Este enlace no es válido" in tampered.text
    clock.advance(days=8)
    expired = client.get(link, headers=SPANISH)
    assert expired.status_code == 410 and "Este enlace ya venció" in expired.text
    assert "This link has expired" in client.get(f"{link}?lang=en", headers=SPANISH).text


# --- "my loved one has started treatment" ----------------------------------------------------


def stage_link(message) -> str:
    token = stage_token(message)
    assert token, "the email offers no stage switch"
    return f"/stage/{token}"


def receiving_lessons(client, smtp, deliver, email: str):
    """Sign up, confirm and get lesson 1 (a Recognize lesson, which carries the stage link)."""
    client.post("/enroll", data={"email": email})
    deliver()
    client.get(confirm_link(smtp.to(email)[0]))
    deliver()
    return smtp.to(email)[-1]


def test_opening_the_stage_link_asks_first_and_changes_nothing(client, settings, smtp, deliver):
    link = stage_link(receiving_lessons(client, smtp, deliver, "g@example.org"))
    for _ in range(2):  # mail scanners and link previews open links too
        page = client.get(link)
        assert page.status_code == 200 and "Has your loved one started treatment?" in page.text
        assert f'<form method="post" action="{link}">' in page.text and "<button" in page.text
        assert "may still arrive" in page.text
    [enrollment] = enrollments(settings)
    assert enrollment.started_treatment_at is None and enrollment.next_position == 2


def test_saying_treatment_started_makes_the_next_lesson_the_first_aftercare_one(
    client, settings, clock, smtp, deliver
):
    link = stage_link(receiving_lessons(client, smtp, deliver, "h@example.org"))
    done = client.post(link)
    assert done.status_code == 200 and "Thank you for telling us" in done.text
    assert "ups and downs" in done.text
    [enrollment] = enrollments(settings)
    assert enrollment.started_treatment_at is not None and enrollment.next_position == 3
    again = client.post(link)
    assert again.status_code == 200 and "You have already told us" in again.text
    assert "You have already told us" in client.get(link).text
    clock.advance(days=10)
    deliver()
    subjects = [m["Subject"] for m in smtp.to("h@example.org")]
    assert subjects[1:] == ["Welcome", "The last lesson"]  # lesson 2 (Act) is skipped


def test_a_lesson_already_on_its_way_still_arrives_then_aftercare_follows(
    client, settings, clock, smtp, deliver
):
    from course.sending.mailer import Mailer, SmtpTarget

    link = stage_link(receiving_lessons(client, smtp, deliver, "i@example.org"))
    clock.advance(days=2)
    engine = engine_for(settings.database_url)
    in_flight = tick(engine, settings, clock)  # lesson 2 is claimed, not yet sent
    assert in_flight
    assert "Thank you for telling us" in client.post(link).text
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    try:
        for batch in in_flight:
            send_batch(engine, settings, clock, mailer=mailer, ids=batch)
    finally:
        mailer.close()
    clock.advance(days=10)
    deliver()
    subjects = [m["Subject"] for m in smtp.to("i@example.org")]
    assert subjects[1:] == ["Welcome", "Lesson two of the mini course", "The last lesson"]


def test_the_stage_link_after_unsubscribing_says_the_course_has_ended(
    client, settings, smtp, deliver
):
    lesson = receiving_lessons(client, smtp, deliver, "j@example.org")
    client.post(unsubscribe_link(lesson))
    link = stage_link(lesson)
    for answer in (client.get(link), client.post(link)):
        assert answer.status_code == 200 and "This course has ended" in answer.text
        assert "<form" not in answer.text.split("</header>", 1)[1]
    assert enrollments(settings)[0].started_treatment_at is None


def test_the_stage_pages_are_spanish_for_a_spanish_course(bilingual, smtp, deliver):
    bilingual.post("/enroll", data={"email": "k@example.org", "sequence": "family-guide-es"})
    deliver()
    bilingual.get(confirm_link(smtp.to("k@example.org")[0]))
    deliver()
    link = stage_link(smtp.to("k@example.org")[-1])
    ask = bilingual.get(link, headers=ENGLISH)
    assert '<html lang="es">' in ask.text and "Sí, ya empezó un tratamiento" in ask.text
    done = bilingual.post(link, headers=ENGLISH)
    assert "Gracias por contarnos" in done.text and "altibajos" in done.text
    assert "Ya nos lo había dicho" in bilingual.post(link).text


def test_a_tampered_or_wrong_stage_link_gets_a_friendly_400(client, smtp, deliver):
    lesson = receiving_lessons(client, smtp, deliver, "l@example.org")
    link = stage_link(lesson)
    for bad in (link[:-3] + "xyz", "/stage/" + unsubscribe_link(lesson).rsplit("/", 1)[1]):
        for method in (client.get, client.post):
            page = method(bad)
            assert page.status_code == 400 and "This link is not valid" in page.text
            assert "Traceback" not in page.text and "Go to the sign-up page" in page.text
    api = client.post(link[:-3] + "xyz", headers={"Accept": "application/json"})
    assert api.status_code == 400 and api.json()["code"] == "link_invalid"


def test_a_sign_up_meets_a_database_that_never_answers_with_an_answer_not_a_wait(
    redis_url, clock, caplog
):
    """A database host that takes the connection and then says nothing (hung, or a full proxy
    in front of it): the reader hears back within the connection time limit instead of
    waiting for minutes, and the log names the trouble. The readers right behind them hear
    back at once, and a few seconds later the database is tried again."""
    import socket
    import time

    from course.db import CONNECT_TIMEOUT_SECONDS
    from course.settings import Settings
    from course.web import create_app
    from course.web.routes.signup import UNREACHABLE_SECONDS

    try_again = (
        "We cannot take sign-ups for a moment, and nothing was saved."
        " Please try again in a few minutes."
    )
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # the kernel takes connections in; nothing ever answers on them
    url = f"postgresql://homeward@127.0.0.1:{hung.getsockname()[1]}/homeward"
    silent = Settings(database_url=url, redis_url=redis_url, secret_key="test-" + "k" * 32)
    app = create_app(silent, clock, enqueue=lambda _: None, kick=lambda: None)

    def sign_up(email: str) -> tuple[int, str, float]:
        started = time.monotonic()
        answer = c.post("/enroll", json={"email": email})
        return answer.status_code, answer.json()["error"], time.monotonic() - started

    with TestClient(app, raise_server_exceptions=False) as c:
        try:
            first = sign_up("waiting@example.org")
            right_behind = sign_up("next@example.org")
        finally:
            hung.close()  # from now on the port refuses: a new try fails at once
        seen = caplog.text
        clock.advance(seconds=UNREACHABLE_SECONDS + 1)
        caplog.clear()
        later = sign_up("later@example.org")
    # Asked once, not again: sign-up cannot be taken for now, and says so.
    assert first[:2] == (503, try_again), first
    assert CONNECT_TIMEOUT_SECONDS * 0.9 <= first[2] < CONNECT_TIMEOUT_SECONDS * 1.5, first
    assert "connection timeout expired" in seen, seen[-2000:]
    # The next reader is not made to wait out the same limit.
    assert right_behind[:2] == (503, try_again) and right_behind[2] < 1.0, right_behind
    assert "answered 'try again' untried" in seen
    # A few seconds on, the database is tried again (and now refuses).
    assert later[:2] == (503, try_again), later
    assert "Connection refused" in caplog.text, caplog.text[-2000:]

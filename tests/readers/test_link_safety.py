"""An old link never reaches another person: links name an unguessable key of their own, ids are
never handed out twice, and a link whose reader is gone ends, changing nothing.

The story the issue reproduced on SQLite: Maria signs up and erases her data; Lucía signs up and
was given Maria's old row id; Maria's links then opened, and erased, Lucía's data.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import col, select

from course.db import engine_for, session_scope
from course.models import Delivery, Enrollment, Subscriber, row_id
from course.tokens import Purpose, TokenMaker
from tests.support import confirm_link, data_link, stage_token, unsubscribe_link


@pytest.fixture
def client(settings, clock, mini_course, queued):
    from course.web import create_app

    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def reader_with_every_link(client, smtp, deliver, email: str, first_name: str) -> dict[str, str]:
    """Sign up, confirm and get lesson 1 and a data link, as a reader would; every link they
    were sent, by name."""
    client.post("/enroll", json={"email": email, "first_name": first_name})
    deliver()
    confirm = confirm_link(smtp.to(email)[0])
    assert "on its way" in client.get(confirm).text
    deliver()
    lesson = smtp.to(email)[-1]
    unsubscribe = unsubscribe_link(lesson)
    stage = "/stage/" + str(stage_token(lesson))
    client.post("/my-data/" + unsubscribe.rsplit("/", 1)[1] + "/link")
    deliver()
    [data_email] = [m for m in smtp.to(email) if "your data" in m["Subject"]]
    return {
        "confirm": confirm,
        "unsubscribe": unsubscribe,
        "stage": stage,
        "data": data_link(data_email),
    }


def snapshot(settings) -> list[dict[str, Any]]:
    """Everything stored about every reader, to show that nothing changed."""
    with session_scope(engine_for(settings.database_url)) as session:
        people = session.exec(select(Subscriber).order_by(col(Subscriber.id))).all()
        courses = session.exec(select(Enrollment).order_by(col(Enrollment.id))).all()
        emails = session.exec(select(Delivery).order_by(col(Delivery.id))).all()
        return (
            [p.model_dump() for p in people]
            + [e.model_dump() for e in courses]
            + [d.model_dump() for d in emails]
        )


def test_an_erased_readers_links_end_and_never_act_on_the_next_reader(
    client, settings, smtp, deliver
):
    maria = reader_with_every_link(client, smtp, deliver, "maria@example.org", "Maria")
    with session_scope(engine_for(settings.database_url)) as session:
        marias_id = session.exec(select(Enrollment.id)).one()
    assert "Your data is erased" in client.post(maria["data"] + "/erase").text

    lucia = reader_with_every_link(client, smtp, deliver, "lucia@example.org", "Lucía")
    with session_scope(engine_for(settings.database_url)) as session:
        [luciasc] = session.exec(select(Enrollment)).all()
        assert luciasc.id != marias_id, "an erased reader's id went to the next sign-up"
    before = snapshot(settings)

    opened = [
        client.get(maria["confirm"]),
        client.get(maria["unsubscribe"]),
        client.post(maria["unsubscribe"]),
        client.get(maria["stage"]),
        client.post(maria["stage"]),
        client.post("/my-data/" + maria["unsubscribe"].rsplit("/", 1)[1] + "/link"),
        client.get(maria["data"]),
        client.get(maria["data"] + "/download"),
        client.get(maria["data"] + "/erase"),
        client.post(maria["data"] + "/erase"),
    ]
    for answer in opened:
        assert answer.status_code == 410, answer.request.url
        assert "This link has ended" in answer.text and "Lucía" not in answer.text
        assert "lucia@example.org" not in answer.text
    json = client.get(maria["data"] + "/download", headers={"Accept": "application/json"})
    assert json.json()["code"] == "link_ended"
    deliver()
    assert snapshot(settings) == before, "an ended link changed something"
    assert len(smtp.to("maria@example.org")) == 3  # confirmation, lesson 1, data link: no more

    # Lucía's own links still work, for her.
    mine = client.get(lucia["data"])
    assert mine.status_code == 200 and "lucia@example.org" in mine.text
    assert client.get(lucia["stage"]).status_code == 200


def test_sqlite_never_hands_an_erased_rows_id_to_a_new_row(client, settings, smtp, deliver):
    """AUTOINCREMENT: the highest id, deleted, is not given out again (on PostgreSQL a
    sequence never gives an id twice)."""
    reader_with_every_link(client, smtp, deliver, "first@example.org", "Ann")
    engine = engine_for(settings.database_url)
    with session_scope(engine) as session:
        before = {
            "subscriber": session.exec(select(Subscriber.id)).one(),
            "enrollment": session.exec(select(Enrollment.id)).one(),
            "delivery": max(session.exec(select(Delivery.id)).all()),
        }
    with session_scope(engine) as session:
        session.execute(text("DELETE FROM delivery"))
        session.execute(text("DELETE FROM enrollment"))
        session.execute(text("DELETE FROM subscriber"))
    reader_with_every_link(client, smtp, deliver, "second@example.org", "Bea")
    with session_scope(engine) as session:
        assert session.exec(select(Subscriber.id)).one() > before["subscriber"]
        assert session.exec(select(Enrollment.id)).one() > before["enrollment"]
        assert min(session.exec(select(Delivery.id)).all()) > before["delivery"]


def legacy_token(settings, clock, purpose: Purpose, enrollment_id: int) -> str:
    """A link as emails sent before link keys carried it: the enrollment id itself."""
    return TokenMaker(settings.secret_key, purpose, clock)._serializer.dumps(enrollment_id)


def test_a_link_from_before_link_keys_works_only_for_the_enrollment_that_existed_then(
    client, settings, clock, smtp, deliver
):
    # Signed before this reader's row existed: it was made for whoever had the id then.
    early = clock.now() - timedelta(minutes=5)
    clock.set(early)
    client.post("/enroll", json={"email": "early@example.org"})  # (the clock moves on below)
    deliver()
    with session_scope(engine_for(settings.database_url)) as session:
        session.execute(text("DELETE FROM delivery"))
        session.execute(text("DELETE FROM enrollment"))
        session.execute(text("DELETE FROM subscriber"))
    clock.advance(minutes=5)
    client.post("/enroll", json={"email": "now@example.org"})
    deliver()
    with session_scope(engine_for(settings.database_url)) as session:
        enrollment_id = row_id(session.exec(select(Enrollment)).one())
    clock.set(early)
    before_the_row = legacy_token(settings, clock, Purpose.UNSUBSCRIBE, enrollment_id)
    clock.advance(minutes=10)
    after_the_row = legacy_token(settings, clock, Purpose.UNSUBSCRIBE, enrollment_id)

    refused = client.post(f"/unsubscribe/{before_the_row}")
    assert refused.status_code == 410 and "This link has ended" in refused.text
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Enrollment.status)).one() == "pending"
    # A link signed while this enrollment existed is its own: unsubscribe keeps working
    # (CAN-SPAM asks for 30 days at least) for emails sent before the upgrade.
    honoured = client.post(f"/unsubscribe/{after_the_row}")
    assert honoured.status_code == 200 and "You are unsubscribed" in honoured.text
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Enrollment.status)).one() == "unsubscribed"


def test_links_name_the_random_key_and_not_the_row_id(client, settings, smtp, deliver):
    links = reader_with_every_link(client, smtp, deliver, "key@example.org", "Kay")
    with session_scope(engine_for(settings.database_url)) as session:
        enrollment = session.exec(select(Enrollment)).one()
    from course.tokens import read_token

    for name, path in links.items():
        token = path.rsplit("/", 1)[1]
        purpose = {"data": Purpose.DATA}.get(name, Purpose(name))
        link = read_token(settings.secret_key, purpose, token)
        assert link.key == enrollment.link_key and link.legacy_id is None, name
    assert not re.search(rf"\b{enrollment.id}\b", enrollment.link_key)

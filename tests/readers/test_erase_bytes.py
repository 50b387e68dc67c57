"""Erased means gone: after an erase, through the web or the CLI, not one copy of the reader's
address or name is left in any file of an SQLite database (the database, its write-ahead log,
its shared memory)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from course.authoring import load_sequence, publish
from course.db import engine_for, session_scope, upgrade
from course.settings import PROJECT_ROOT
from tests.support import FIXTURES, confirm_link, data_link, unsubscribe_link


@pytest.fixture
def own_database(settings, tmp_path: Path, clock) -> Path:
    """A database file of this test's own, so every byte in it is this test's."""
    path = tmp_path / "erase.db"
    settings.database_url = f"sqlite:///{path}"
    upgrade(settings.database_url)
    with session_scope(engine_for(settings.database_url)) as session:
        publish(session, load_sequence(FIXTURES / "mini-course"), clock)
    return path


def files_of(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def copies(path: Path, *words: str) -> dict[str, int]:
    """How many times each word is in the database's files, as UTF-8 or UTF-16 (SQLite's
    text encodings)."""
    found = dict.fromkeys(words, 0)
    for file in files_of(path):
        data = file.read_bytes()
        for word in words:
            for encoded in (word.encode(), word.encode("utf-16-le"), word.encode("utf-16-be")):
                found[word] += data.count(encoded)
    return found


def a_reader(client: TestClient, smtp, deliver, *, email: str, name: str) -> None:
    client.post("/enroll", json={"email": email, "first_name": name})
    deliver()
    client.get(confirm_link(smtp.to(email)[0]))
    deliver()


def test_an_erase_from_the_web_leaves_no_byte_of_the_reader_in_any_file(
    settings, clock, own_database, smtp, deliver, queued
):
    from course.web import create_app

    email, name = f"erase.{uuid.uuid4().hex[:8]}@example.org", "Zebulonia"
    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app) as client:
        a_reader(client, smtp, deliver, email=email, name=name)
        assert copies(own_database, email, name)[email] > 0, "the scan finds what is there"
        token = unsubscribe_link(smtp.to(email)[-1]).rsplit("/", 1)[1]
        client.post(f"/my-data/{token}/link")
        deliver()
        mine = data_link([m for m in smtp.to(email) if "your data" in m["Subject"]][0])
        erased = client.post(f"{mine}/erase")
        assert erased.status_code == 200 and "Your data is erased" in erased.text
        # Straight after the answer, with the app (and its open connections) still running.
        assert copies(own_database, email, name) == {email: 0, name: 0}
        assert files_of(own_database), "the database is still there"


def test_an_erase_from_the_cli_leaves_no_byte_of_the_reader_in_any_file(
    settings, clock, own_database, smtp, deliver, queued
):
    from course.web import create_app

    email, name = f"cli.{uuid.uuid4().hex[:8]}@example.org", "Quintessa"
    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app) as client:
        a_reader(client, smtp, deliver, email=email, name=name)
        kept = "kept.reader@example.org"
        a_reader(client, smtp, deliver, email=kept, name="Bartholomew")
        done = subprocess.run(
            [sys.executable, "-m", "course.cli", "subscriber", "erase", email],
            cwd=PROJECT_ROOT,
            env={**os.environ, "COURSE_DATABASE_URL": settings.database_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0 and f"Erased everything stored for {email}" in done.stdout
        assert copies(own_database, email, name) == {email: 0, name: 0}
        assert copies(own_database, kept)[kept] > 0, "the other reader is untouched"

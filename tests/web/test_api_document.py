"""The OpenAPI document is honest: schemathesis (its own command, as an outsider would run it)
sends generated requests, valid and not, to every route the document lists, with every check it
has: no 5xx, each status, body, content type and header as documented, bad input refused, good
input taken. Seeded and bounded, so a run is repeatable and short."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from tests.staff.support import add_staff, api_token
from tests.web.browser import LiveServer

CONFIG = Path(__file__).with_name("schemathesis.toml")
SENDGRID_PUBLIC = base64.b64encode(
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()


@pytest.fixture
def site(settings, clock, mini_course, queued, smtp) -> Any:
    from course.web import create_app

    settings.sequences = {"en": "mini-course"}
    # Thousands of generated sign-ups from one client: the limits are tested elsewhere.
    settings.signup_rate = settings.signup_address_rate = "1000000/minute"
    settings.data_link_rate = "1000000/minute"
    # The webhooks are on, so their signature checks are what answers.
    settings.mailgun_signing_key = "key-document-test"
    settings.sendgrid_public_key = SENDGRID_PUBLIC
    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with LiveServer(app) as live:
        yield live


def test_every_route_answers_as_its_document_says(site, settings, clock, tmp_path: Path) -> None:
    # Signed in as an admin, so the staff API answers what it does, not only 401.
    add_staff(settings, clock, "admin@centre.org", "admin")
    [auth] = api_token(settings, clock, "admin@centre.org").items()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            f"{site.url}/api/openapi.json",
            "--checks",
            "all",
            "--header",
            f"{auth[0]}: {auth[1]}",
        ],
        cwd=tmp_path,  # where schemathesis keeps its cache
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]


def test_a_method_a_route_does_not_take_is_refused_with_the_methods_it_does(
    settings, clock, mini_course, queued
):
    from course.web import create_app

    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with TestClient(app) as client:
        answer = client.request("TRACE", "/enroll")
        assert answer.status_code == 405 and answer.headers["allow"] == "POST"

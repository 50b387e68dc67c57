"""Signing staff in as they would: an account, the emailed one-time link, the press on its
page; and the CSRF token each page's forms carry."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from course.db import engine_for, session_scope
from course.staff import accounts, sign_in


def add_staff(settings: Any, clock: Any, email: str, role: str) -> None:
    with session_scope(engine_for(settings.database_url)) as session:
        accounts.add(session, clock, email=email, role=role)


def sign_in_link(smtp: Any, email: str) -> str:
    [message] = [m for m in smtp.to(email) if "sign-in link" in str(m["Subject"])][-1:]
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https://homeward\.test(/staff/sign-in/[\w\-]+(?:\?next=\S+)?)", text)
    assert found, text
    return found.group(1)


def signed_in(client: TestClient, smtp: Any, email: str) -> TestClient:
    """`client`, signed in as the staff member with this address."""
    asked = client.post("/staff/sign-in", data={"email": email})
    assert asked.status_code == 200 and "Check your email" in asked.text
    link = sign_in_link(smtp, email)
    assert "Sign in" in client.get(link).text
    done = client.post(link, follow_redirects=False)
    assert done.status_code == 303, done.text
    return client


def csrf(page_html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page_html)
    assert found, "every staff form carries its CSRF token"
    return found.group(1)


def api_token(settings: Any, clock: Any, email: str) -> dict[str, str]:
    with session_scope(engine_for(settings.database_url)) as session:
        member = accounts.find(session, email)
        assert member is not None
        _, secret = sign_in.create_token(session, clock, staff=member, name="tests")
    return {"Authorization": f"Bearer {secret}"}

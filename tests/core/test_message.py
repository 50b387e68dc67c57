"""The MIME writer: what any mail client parses back is exactly what was rendered."""

from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

import pytest

from course.errors import InvalidInput
from course.message import build_encoded, encode_body

TEXT = "Hola, María:\n\nUna línea muy larga " + "con palabras " * 20 + "al final.\n.\nFin =) \n"
HTML = "<p>Hola, <strong>María</strong> — ¿cómo está?</p>\n" + "<p>" + "x" * 300 + "</p>\n"


def build(subject: str = "¿Cómo ayudar a su ser querido?", sender: str = "Homeward Ñandú") -> bytes:
    return build_encoded(
        subject=subject,
        text_body=encode_body(TEXT),
        html_body=encode_body(HTML),
        from_address="lessons@homeward.test",
        sender_name=sender,
        to="maria@example.org",
        message_id="<lesson.1.2.abc@homeward.test>",
        unsubscribe_url="https://homeward.test/unsubscribe/" + "t" * 120,
        unsubscribe_mailto=None,
        date=datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
    )


def test_non_ascii_subject_sender_and_bodies_round_trip():
    raw = build()
    assert raw.isascii()  # 7-bit safe on any relay
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = message_from_bytes(raw, policy=default)
    assert msg["Subject"] == "¿Cómo ayudar a su ser querido?"
    assert msg["From"].addresses[0].display_name == "Homeward Ñandú"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == TEXT
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == HTML
    assert msg["Message-ID"] == "<lesson.1.2.abc@homeward.test>"
    assert str(msg["List-Unsubscribe"]) == "<https://homeward.test/unsubscribe/" + "t" * 120 + ">"
    assert not msg.defects


@pytest.mark.parametrize(
    "subject", ["Hello\r\nBcc: victim@example.org", "Hi\nthere", "tab\x00null"]
)
def test_header_injection_is_refused(subject):
    with pytest.raises(InvalidInput):
        build(subject=subject)
    with pytest.raises(InvalidInput):
        build(sender=subject)

"""Links in emails: signed, bound to one purpose, and confirm links expire."""

import pytest

from course.clock import ManualClock
from course.errors import TokenExpired, TokenInvalid
from course.tokens import Purpose, make_token, read_token

KEY = "a-long-test-secret-key"


def test_a_token_carries_its_enrollment_back():
    assert read_token(KEY, Purpose.CONFIRM, make_token(KEY, Purpose.CONFIRM, 42)) == 42


def test_an_unsubscribe_token_cannot_confirm():
    token = make_token(KEY, Purpose.UNSUBSCRIBE, 42)
    with pytest.raises(TokenInvalid):
        read_token(KEY, Purpose.CONFIRM, token)


def test_a_tampered_token_is_refused():
    token = make_token(KEY, Purpose.CONFIRM, 42)
    with pytest.raises(TokenInvalid, match="not valid"):
        read_token(KEY, Purpose.CONFIRM, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    with pytest.raises(TokenInvalid):
        read_token("another-secret-key-entirely", Purpose.CONFIRM, token)


def test_confirm_links_expire_and_unsubscribe_links_do_not():
    clock = ManualClock()
    confirm = make_token(KEY, Purpose.CONFIRM, 7, clock)
    unsubscribe = make_token(KEY, Purpose.UNSUBSCRIBE, 7, clock)
    clock.advance(days=8)
    with pytest.raises(TokenExpired, match="expired"):
        read_token(KEY, Purpose.CONFIRM, confirm, 7 * 86400, clock)
    clock.advance(days=365)
    assert read_token(KEY, Purpose.UNSUBSCRIBE, unsubscribe, clock=clock) == 7

"""Links in emails: signed, bound to one purpose, naming a key that is never reused, and
confirm links expire."""

import pytest

from course.clock import ManualClock
from course.errors import TokenExpired, TokenInvalid
from course.models import new_link_key
from course.tokens import Purpose, TokenMaker, make_token, read_token

KEY = "a-long-test-secret-key"
LINK = new_link_key()


def test_a_token_carries_its_link_key_and_signing_time_back():
    clock = ManualClock()
    link = read_token(KEY, Purpose.CONFIRM, make_token(KEY, Purpose.CONFIRM, LINK, clock=clock))
    assert (link.key, link.legacy_id, link.signed_at) == (LINK, None, clock.now())


def test_a_link_signed_before_link_keys_existed_still_reads_as_the_id_it_named():
    # What links in emails sent before migration 0004 carry: the enrollment's id. Whether it is
    # honoured is decided against the enrollment's creation time (test_link_safety.py).
    old = TokenMaker(KEY, Purpose.UNSUBSCRIBE)._serializer.dumps(42)
    link = read_token(KEY, Purpose.UNSUBSCRIBE, old)
    assert (link.key, link.legacy_id) == (None, 42)


def test_link_keys_are_unguessable_and_distinct():
    keys = {new_link_key() for _ in range(1000)}
    assert len(keys) == 1000 and all(len(k) == 22 for k in keys)


def test_an_unsubscribe_token_cannot_confirm():
    token = make_token(KEY, Purpose.UNSUBSCRIBE, LINK)
    with pytest.raises(TokenInvalid):
        read_token(KEY, Purpose.CONFIRM, token)


def test_a_tampered_token_is_refused():
    token = make_token(KEY, Purpose.CONFIRM, LINK)
    with pytest.raises(TokenInvalid, match="not valid"):
        read_token(KEY, Purpose.CONFIRM, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    with pytest.raises(TokenInvalid):
        read_token("another-secret-key-entirely", Purpose.CONFIRM, token)


def test_confirm_links_expire_and_unsubscribe_links_do_not():
    clock = ManualClock()
    confirm = make_token(KEY, Purpose.CONFIRM, LINK, clock=clock)
    unsubscribe = make_token(KEY, Purpose.UNSUBSCRIBE, LINK, clock=clock)
    clock.advance(days=8)
    with pytest.raises(TokenExpired, match="expired"):
        read_token(KEY, Purpose.CONFIRM, confirm, max_age_seconds=7 * 86400, clock=clock)
    clock.advance(days=365)
    assert read_token(KEY, Purpose.UNSUBSCRIBE, unsubscribe, clock=clock).key == LINK

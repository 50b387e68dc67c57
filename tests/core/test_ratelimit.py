"""The rate limits counted in Redis (course.ratelimit): several rules at once in one round
trip count exactly as the same rules one by one, and keep counting after Redis loses its scripts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from course.cli.embedded_redis import EmbeddedRedis
from course.ratelimit import RedisLimiter

RULES = {"client": "3/minute;10/day", "address": "2/hour"}


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A redis-server of this test's own, as its scripts are flushed (never the shared one's)."""
    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


def test_rules_counted_together_refuse_as_soon_as_any_is_full(redis_url):
    limiter = RedisLimiter(redis_url, RULES)
    both = [limiter.allow_all(("client", "10.0.0.1"), ("address", "a")) for _ in range(3)]
    assert both == [True, True, False], "the address rule (2 an hour) is full at the third"
    assert limiter.allow_all(("client", "10.0.0.1"), ("address", "b")) is False, (
        "the client's third and fourth were counted although the address refused the third"
    )
    assert limiter.allow_all(("client", "10.0.0.2"), ("address", "b")) is True
    # The library's own counting, one window at a time, and ours are the same counts in the
    # same windows.
    library = MovingWindowRateLimiter(storage_from_string(redis_url))
    for item in parse_many(RULES["client"]):
        assert library.hit(item, "client", "10.0.0.2") is True
        assert library.hit(item, "client", "10.0.0.2") is True
    assert limiter.allow_all(("client", "10.0.0.2"), ("address", "c")) is False
    assert library.test(parse_many(RULES["client"])[0], "client", "10.0.0.2") is False


def test_limits_keep_counting_after_redis_loses_its_scripts(private_redis):
    limiter = RedisLimiter(private_redis, RULES)
    assert limiter.allow_all(("client", "10.0.0.1"), ("address", "a")) is True
    redis.Redis.from_url(private_redis).script_flush()
    assert limiter.allow_all(("client", "10.0.0.1"), ("address", "a")) is True
    assert limiter.allow_all(("client", "10.0.0.1"), ("address", "a")) is False, (
        "the two before the flush were both counted, once each"
    )


def test_when_redis_cannot_be_reached_a_family_is_let_through(private_redis, caplog):
    limiter = RedisLimiter(private_redis, RULES)
    assert limiter.allow_all(("address", "a"), ("address", "a")) is True
    redis.Redis.from_url(private_redis).shutdown(nosave=True)  # its port then refuses
    answers = [limiter.allow_all(("client", "x"), ("address", "a")) for _ in range(3)]
    assert answers == [True, True, True]
    assert "rate limits cannot be counted" in caplog.text

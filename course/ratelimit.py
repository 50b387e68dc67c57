"""Rate limits on the public routes that could be abused: sign-ups, and requests for a data link.

A Protocol the web app depends on, and a limiter that keeps its counts in Redis (the `limits`
library, moving windows), so every web process on every host shares them. If Redis cannot be
reached the limiter lets requests through and says so in the log: a family must not be turned
away because a counter is down.
"""

from __future__ import annotations

import logging
from typing import Protocol

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)


class Limiter(Protocol):
    def allow(self, rule: str, who: str) -> bool:
        """Count one request by `who` against `rule`; False once the rule's limit is reached."""
        ...


class RedisLimiter:
    def __init__(self, redis_url: str, rules: dict[str, str]) -> None:
        self._storage = storage_from_string(redis_url)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._rules: dict[str, list[RateLimitItem]] = {
            name: parse_many(text) for name, text in rules.items()
        }

    def allow(self, rule: str, who: str) -> bool:
        try:
            # Every window is counted, even once one is full, as a bot's retries should be.
            return all([self._limiter.hit(item, rule, who) for item in self._rules[rule]])
        except Exception:
            log.warning("rate limits cannot be counted (Redis?); letting it through", exc_info=True)
            return True

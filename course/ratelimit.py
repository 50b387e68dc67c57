"""Rate limits on the public routes that could be abused: sign-ups, and requests for a data link.

A Protocol the web app depends on, and a limiter that keeps its counts in Redis (the `limits`
library, moving windows), so every web process on every host shares them. If Redis cannot be
reached the limiter lets requests through and says so in the log: a family must not be turned
away because a counter is down.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol, cast

from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage, storage_from_string
from redis import Redis
from redis.exceptions import NoScriptError

log = logging.getLogger(__name__)


class Limiter(Protocol):
    def allow(self, rule: str, who: str) -> bool:
        """Count one request by `who` against `rule`; False once the rule's limit is reached."""
        ...


class RedisLimiter:
    def __init__(self, redis_url: str, rules: dict[str, str]) -> None:
        storage = storage_from_string(redis_url)
        assert isinstance(storage, RedisStorage), redis_url
        self._storage = storage
        self._rules: dict[str, list[RateLimitItem]] = {
            name: parse_many(text) for name, text in rules.items()
        }

    def allow(self, rule: str, who: str) -> bool:
        return self.allow_all((rule, who))

    def allow_all(self, *checks: tuple[str, str]) -> bool:
        """Count one request against each (rule, who); False once any of them is full."""
        try:
            # Every window is counted, even once one is full, as a bot's retries should be.
            return all(self._hit_together(checks))
        except Exception:
            log.warning("rate limits cannot be counted (Redis?); letting it through", exc_info=True)
            return True

    def _hit_together(self, checks: tuple[tuple[str, str], ...]) -> list[bool]:
        """Every window of every check counted in one round trip to Redis (a sign-up's limits
        have two each): the library's own moving-window script, sent down one pipeline."""
        script = self._storage.lua_acquire_moving_window
        redis = cast(Redis, self._storage.get_connection())

        def counted() -> list[bool]:
            pipe = redis.pipeline(transaction=False)
            now = time.time()
            for rule, who in checks:
                for item in self._rules[rule]:
                    key = self._storage.prefixed_key(item.key_for(rule, who))
                    pipe.evalsha(script.sha, 1, key, now, item.amount, item.get_expiry(), 1)
            return [bool(acquired) for acquired in pipe.execute()]

        try:
            return counted()
        except NoScriptError:
            # Redis restarted or its scripts were flushed: loaded again, then asked again. No
            # window was counted, as a script that is not there runs nothing.
            redis.script_load(script.script)
            return counted()

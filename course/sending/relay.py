"""What the mail provider allows, shared by every worker on every host through Redis.

- A sending rate (COURSE_SMTP_RATE, messages per second): each message takes the next free
  moment from a schedule kept in Redis, evenly spaced (a GCRA-style reservation in one Lua
  script: `limits`, used for the web's limits, only has windows, which let a second's worth go
  at once), so that all the workers together never send faster than that.
- A cap on open connections (COURSE_SMTP_MAX_CONNECTIONS): a counting semaphore in Redis whose
  places expire, so a killed worker's places come back by themselves.
- A circuit breaker: a 421 or 451 ("slow down"), or a relay that cannot be reached, pauses the
  whole relay for every worker, doubling from COURSE_RELAY_PAUSE_SECONDS, instead of each of
  thousands of messages finding out on its own and spending one of its attempts on it.

Redis trouble never stops mail: each check lets the message through and says so in the log, as
the web app's rate limits do (if Redis is gone, so is the broker, and little is being sent).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import cast

import redis

from course import metrics
from course.settings import Settings

log = logging.getLogger(__name__)

_PREFIX = "homeward:relay:"
PAUSED_UNTIL = _PREFIX + "paused_until"
TRIPS = _PREFIX + "trips"
CONNECTIONS = _PREFIX + "connections"
WAITING = _PREFIX + "waiting"
RATE = _PREFIX + "next_slot"
# How long a connection's place is held without being renewed: a worker killed with connections
# open gives them back after this.
PLACE_SECONDS = 60.0
# How stale this process's idea of the pause may be: one Redis read per message would cost more
# than the message on a relay next door, and a pause lasts seconds at least.
PAUSE_CHECK_SECONDS = 0.2

# The next free moment to send, one every `interval` microseconds, by Redis's clock (the same
# for every host): the caller waits until then. Evenly spaced, unlike a window that lets a
# second's worth go at once, which a provider's own meter can see as a burst over its limit.
_NEXT_SLOT = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now_us)
redis.call('SET', KEYS[1], string.format('%d', slot + tonumber(ARGV[1])), 'PX', 60000)
return slot - now_us
"""

# Take a place if fewer than the cap are held (expired places are dropped first).
_TAKE_PLACE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('EXPIRE', KEYS[1], 3600)
  return 1
end
return 0
"""


# Start a pause unless one is on (then a connection meeting the same trouble does not make it
# longer): each pause after a trouble-free spell starts short, then doubles while it lasts.
# Numbers go back as strings: Redis would cut a Lua number down to an integer.
_TRIP = """
local now = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > now then
  return {tostring(current), redis.call('GET', KEYS[2]) or '1', '0'}
end
local trips = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local pause = math.min(tonumber(ARGV[2]) * 2 ^ (trips - 1), tonumber(ARGV[3]))
local ends = now + pause
redis.call('SET', KEYS[1], string.format('%.3f', ends), 'PX', math.ceil(pause * 1000) + 1000)
return {string.format('%.3f', ends), tostring(trips), '1'}
"""


@dataclass
class RelayGuard:
    """One per worker process, shared by its sending threads."""

    settings: Settings
    redis_url: str
    _client: redis.Redis = field(init=False, repr=False)
    _paused_until: float = field(init=False, default=0.0)
    _checked_at: float = field(init=False, default=float("-inf"))
    # Whether this process has seen the relay paused since it last saw it recover: only then is
    # a sent message worth a Redis write to say so.
    _troubled: bool = field(init=False, default=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        self._take_place = self._client.register_script(_TAKE_PLACE)
        self._trip = self._client.register_script(_TRIP)
        self._next_slot = self._client.register_script(_NEXT_SLOT)

    # The sending rate.

    def wait_turn(self) -> None:
        """Wait for this message's turn under the provider's rate."""
        if self.settings.smtp_rate <= 0:
            return
        interval_us = max(int(1_000_000 / self.settings.smtp_rate), 1)
        try:
            wait_us = cast(int, self._next_slot(keys=[RATE], args=[interval_us]))
        except redis.RedisError:
            log.warning(
                "the sending rate cannot be counted (Redis?); sending anyway", exc_info=True
            )
            return
        if wait_us > 0:
            time.sleep(wait_us / 1_000_000)  # a provider's limit: waiting is the point
            metrics.rate_wait(wait_us / 1_000_000)

    # The connection cap.

    def take_place(self, owner: str, *, patience: float) -> bool:
        """A place for one more open connection (`owner` names it); False if none came free
        within `patience` seconds."""
        cap = self.settings.smtp_max_connections
        if cap <= 0:
            return True
        give_up = time.monotonic() + patience
        try:
            while True:
                now = time.time()
                if self._take_place(
                    keys=[CONNECTIONS], args=[now, now + PLACE_SECONDS, cap, owner]
                ):
                    return True
                if time.monotonic() >= give_up:
                    return False
                # Seen by connections between batches, which then make way (others_waiting).
                self._client.zadd(WAITING, {owner: now + 5})
                time.sleep(0.05)  # a place comes free when another worker closes a connection
        except redis.RedisError:
            log.warning("the connection cap cannot be counted (Redis?); connecting anyway")
            return True
        finally:
            with contextlib.suppress(redis.RedisError):
                self._client.zrem(WAITING, owner)

    def keep_place(self, owner: str) -> None:
        if self.settings.smtp_max_connections > 0:
            try:
                self._client.zadd(CONNECTIONS, {owner: time.time() + PLACE_SECONDS}, xx=True)
            except redis.RedisError:
                log.warning("cannot renew a connection's place (Redis?)")

    def give_place(self, owner: str) -> None:
        if self.settings.smtp_max_connections > 0:
            try:
                self._client.zrem(CONNECTIONS, owner)
            except redis.RedisError:
                log.warning("cannot give back a connection's place (Redis?); it expires")

    def others_waiting(self) -> bool:
        """Whether a connection waits for a place: one between batches should make way."""
        if self.settings.smtp_max_connections <= 0:
            return False
        try:
            return cast(int, self._client.zcount(WAITING, time.time(), "+inf")) > 0
        except redis.RedisError:
            return False

    # The circuit breaker.

    def paused_until(self) -> float:
        """When the relay may be tried again (epoch seconds), or 0 if it is not paused."""
        now = time.monotonic()
        if now - self._checked_at >= PAUSE_CHECK_SECONDS:
            try:
                raw = cast(bytes | None, self._client.get(PAUSED_UNTIL))
                until = float(raw) if raw else 0.0
            except (redis.RedisError, ValueError):
                until = 0.0
            with self._lock:
                self._paused_until, self._checked_at = until, now
                self._troubled = self._troubled or until > 0
        return self._paused_until if self._paused_until > time.time() else 0.0

    def trip(self, reason: str) -> float:
        """The relay said "slow down" or could not be reached: pause it for every worker.
        Returns when it may be tried again (epoch seconds)."""
        settings = self.settings
        try:
            answer = cast(
                list[bytes],
                self._trip(
                    keys=[PAUSED_UNTIL, TRIPS],
                    args=[
                        time.time(),
                        settings.relay_pause_seconds,
                        settings.relay_pause_max_seconds,
                        int(settings.relay_pause_max_seconds * 4) + 60,
                    ],
                ),
            )
            until, trips, started = float(answer[0]), int(answer[1]), answer[2] == b"1"
        except (redis.RedisError, ValueError, IndexError):
            log.warning("cannot share the relay's pause (Redis?); pausing this worker only")
            until, trips, started = time.time() + settings.relay_pause_seconds, 1, True
        with self._lock:
            self._paused_until, self._checked_at = until, time.monotonic()
            self._troubled = True
        if started:  # once per pause, not once per connection that met the same trouble
            metrics.breaker(True)
            log.error(
                "SMTP relay paused for %.0f s for every worker (pause %d in a row): %s",
                until - time.time(),
                trips,
                reason,
            )
        return until

    def recovered(self) -> None:
        """A message went through: the next trouble starts the pauses from the shortest again."""
        if not self._troubled:
            return
        self._troubled = False
        try:
            if self._client.delete(TRIPS):
                metrics.breaker(False)
                log.warning("SMTP relay accepting mail again; the pause is over")
        except redis.RedisError:
            pass


def place_owner() -> str:
    return uuid.uuid4().hex

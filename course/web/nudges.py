"""Nudging the workers from a request, at most a few times a second per process.

A sign-up or a confirmation asks for a tick at once, so the reader's email goes out in seconds
rather than at the next beat. In a burst that was a Celery message per request: nearly half of a
sign-up's CPU, and a queue of ticks each finding the work the one before it had taken. One
nudge now covers every request that committed before it runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

# The longest a request waits for its nudge: a tick is asked for at once, or this long after the
# last one (the tick itself then takes in everything committed by then).
EVERY_SECONDS = 0.25


class Coalesced:
    """`action` at once, unless it ran less than `every` seconds ago; then once more when that
    time is up, for every call made meanwhile. A caller has committed what the action must see
    before calling, so the action that follows the call (at once or later) sees it."""

    def __init__(self, action: Callable[[], None], every: float = EVERY_SECONDS) -> None:
        self._action = action
        self._every = every
        self._lock = threading.Lock()
        self._last = -math.inf
        self._pending = False

    def __call__(self) -> None:
        with self._lock:
            if self._pending:
                return  # the action still to come runs after this call's commit
            now = time.monotonic()
            wait = self._last + self._every - now
            if wait <= 0:
                self._last = now
            else:
                self._pending = True
        if wait <= 0:
            self._action()
            return
        timer = threading.Timer(wait, self._later)
        timer.daemon = True  # at exit a nudge may be lost: beat's next tick does the same work
        timer.start()

    def _later(self) -> None:
        with self._lock:
            self._pending = False
            self._last = time.monotonic()
        self._action()

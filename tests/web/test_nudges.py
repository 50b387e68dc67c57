"""A burst of sign-ups nudges the workers a few times, not once per request, and never leaves
the last request of a burst without a nudge after it."""

from __future__ import annotations

import time

from course.web.nudges import Coalesced
from tests.support import wait_for


def test_a_lone_call_nudges_at_once():
    ran: list[float] = []
    nudge = Coalesced(lambda: ran.append(time.monotonic()), every=0.2)
    nudge()
    assert len(ran) == 1


def test_a_burst_nudges_once_at_once_and_once_after_its_last_call():
    ran: list[float] = []
    nudge = Coalesced(lambda: ran.append(time.monotonic()), every=0.2)
    for _ in range(100):
        nudge()
    last_call = time.monotonic()
    assert len(ran) == 1
    wait_for(lambda: len(ran) == 2, 5, "the nudge that follows the burst")
    assert ran[1] >= last_call

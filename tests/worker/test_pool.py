"""A worker's many SMTP connections and the provider's limits, with real workers, a real Redis
and a real SMTP server: the exactly-once window per connection, the sending rate shared by two
worker processes, and the relay paused for everyone on "421 slow down", then resumed."""

from __future__ import annotations

import itertools
import os
import re
import signal
import statistics
import time
from collections import Counter
from typing import cast

import redis
from sqlmodel import func, select

from course.clock import SystemClock
from course.db import engine_for, session_scope
from course.models import Delivery
from course.sending.relay import PAUSED_UNTIL, TRIPS
from tests.support import SmtpSink, active_readers, wait_for
from tests.worker.conftest import lesson_count

LESSONS = 3  # in the mini course


def _all_lessons(smtp: SmtpSink, readers: list[str]) -> bool:
    counts = lesson_count(smtp)
    return all(counts[r] >= LESSONS for r in readers)


def _lesson_ids(smtp: SmtpSink) -> Counter[str]:
    with smtp.lock:
        return Counter(
            str(m["Message-ID"])
            for m in smtp.received
            if "confirm" not in str(m["Subject"]).lower()
        )


def test_a_worker_killed_with_many_connections_open_resends_at_most_one_per_connection(
    settings, smtp, mini_course, env, processes
):
    connections = 4
    readers = active_readers(settings, SystemClock(), 40)
    smtp.delay = 0.1  # slow enough that every connection has a message in the server at the kill
    env["COURSE_SMTP_CONNECTIONS"] = str(connections)
    worker = processes("worker", name="doomed", concurrency=connections)
    processes("beat")
    wait_for(lambda: sum(lesson_count(smtp).values()) >= 12, 30, "the first lessons to go out")
    # The worker really sends on several connections at once.
    assert smtp.most_in_flight >= 2
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert sum(lesson_count(smtp).values()) < len(readers) * LESSONS, "finished before the kill"
    smtp.delay = 0
    processes("worker", name="rescuer", concurrency=connections)
    wait_for(lambda: _all_lessons(smtp, readers), 60, "every lesson for every reader")
    ids = _lesson_ids(smtp)
    # Every lesson arrived, under as many Message-IDs as lessons: a message sent again went out
    # with its stored Message-ID, so the reader's mail program shows it once.
    assert len(ids) == len(readers) * LESSONS
    duplicates = sum(n - 1 for n in ids.values())
    assert max(ids.values()) <= 2
    # At most the one accepted-but-unrecorded message per open connection.
    assert duplicates <= connections, ids.most_common(connections + 1)
    with session_scope(engine_for(settings.database_url)) as session:
        sent = session.exec(select(func.count()).where(Delivery.status == "sent")).one()
    assert sent == len(readers) * LESSONS


def test_the_sending_rate_holds_across_two_worker_processes(
    settings, smtp, mini_course, env, processes, tmp_path
):
    rate = 25
    readers = active_readers(settings, SystemClock(), 40)  # 120 lessons: about 5 s at 25/s
    env["COURSE_SMTP_RATE"] = str(rate)
    env["COURSE_SEND_BATCH"] = "3"
    started = time.monotonic()
    processes("worker", name="w1", concurrency=4)
    processes("worker", name="w2", concurrency=4)
    processes("beat")
    wait_for(lambda: _all_lessons(smtp, readers), 60, "every lesson at the provider's rate")
    with smtp.lock:
        accepted = sorted(t for t in smtp.accepted_at if t >= started)
    # Over the run the two workers together kept to the rate, within 5%.
    achieved = (len(accepted) - 1) / (accepted[-1] - accepted[0])
    assert achieved <= rate * 1.05, achieved
    # And used what it allows: the limit paces the workers, it does not choke them. The typical
    # gap between two messages is the rate's own; the run as a whole may fall a little short,
    # as a busy machine can leave the workers without work for a moment (on SQLite the tick's
    # claim holds the write lock the workers' "sent" needs), which is no fault of the limit.
    gaps = sorted(later - earlier for earlier, later in itertools.pairwise(accepted))
    assert statistics.median(gaps) <= 1.1 / rate, gaps
    assert achieved >= rate * 0.8, achieved
    # Evenly, too: no burst of a second's worth at once. Each sending thread holds at most one
    # turn at a time, so a busy machine that wakes threads late can bunch at most one message per
    # thread (8 here) into any stretch beyond what the rate allows.
    threads = 2 * 4
    busiest = max(
        sum(1 for t in accepted[i:] if t < start + 2.0) for i, start in enumerate(accepted)
    )
    assert busiest <= 2 * rate + threads, busiest
    # Both workers sent: the limit is shared, not each worker's own.
    for name in ("w1", "w2"):
        log = (tmp_path / f"worker-{name}.log").read_text(errors="replace")
        assert re.search(r"homeward\.send\[[^]]+\] succeeded in [0-9.]+s: [1-9]", log), name


def test_a_relay_saying_421_pauses_every_connection_then_sending_resumes(
    settings, smtp, mini_course, env, processes, redis_url
):
    readers = active_readers(settings, SystemClock(), 30)
    env["COURSE_RELAY_PAUSE_SECONDS"] = "1"
    env["COURSE_RETRY_BASE_SECONDS"] = "1"
    smtp.data_answer = "421 4.7.0 Too many messages, slow down"
    processes("worker", concurrency=4)
    processes("beat")
    shared = redis.Redis.from_url(redis_url)
    # The breaker opens: the pause is shared in Redis, for every worker on every host.
    wait_for(lambda: shared.get(PAUSED_UNTIL) is not None, 20, "the relay to be paused")
    trouble_started = smtp.refused_data
    wait_for(lambda: int(cast(bytes, shared.get(TRIPS) or 0)) >= 2, 20, "a second, longer pause")
    # While paused nobody knocks: a handful of tries per pause, not one per waiting lesson.
    assert smtp.refused_data - trouble_started < len(readers)
    smtp.data_answer = None
    wait_for(lambda: _all_lessons(smtp, readers), 60, "every lesson once the relay recovers")
    # The breaker closes: the next trouble starts again from the shortest pause.
    wait_for(lambda: shared.get(TRIPS) is None, 10, "the relay to be marked recovered")
    counts = lesson_count(smtp)
    assert all(counts[r] == LESSONS for r in readers), counts
    # The lessons that met "421" were tried again, each spending one attempt at most per pause;
    # the rest waited without spending any.
    with session_scope(engine_for(settings.database_url)) as session:
        attempts = session.exec(select(func.max(Delivery.attempts))).one()
    assert attempts is not None and attempts <= 3

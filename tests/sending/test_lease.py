"""Short leases kept alive: a batch that takes longer than the lease is never handed to a second
worker while its own is alive, and one that stalled past it sends none of what it lost."""

from __future__ import annotations

import threading
import time
from collections import Counter

from sqlalchemy import update
from sqlmodel import col

from course.clock import SystemClock
from course.db import engine_for
from course.models import Delivery, DeliveryStatus
from course.sending import Mailer, SmtpTarget, send_batch, tick
from course.sending.dispatch import release_expired
from course.sending.jobs import claim_and_load
from course.sending.lease import LeaseKeeper
from course.settings import Settings
from tests.support import active_readers


def test_the_default_lease_gives_a_dead_workers_work_to_another_within_a_minute():
    assert Settings().lease_seconds <= 60


def test_a_batch_slower_than_its_lease_stays_with_its_worker_and_nothing_goes_twice(
    settings, smtp, mini_course
):
    clock = SystemClock()
    settings.lease_seconds = 1  # renewed every third of a second
    settings.send_batch = 6
    engine = engine_for(settings.database_url)
    active_readers(settings, clock, 6)
    [batch] = tick(engine, settings, clock)
    smtp.delay = 0.4  # six messages: 2.4 s, more than twice the lease
    first = threading.Thread(
        target=lambda: send_batch(
            engine,
            settings,
            clock,
            mailer=Mailer(SmtpTarget.from_url(settings.smtp_url)),
            ids=batch,
        )
    )
    first.start()
    # A second worker, over and over: everything the ticks hand out while the first one sends.
    others = Mailer(SmtpTarget.from_url(settings.smtp_url))
    taken_by_others: list[int] = []
    try:
        while first.is_alive():
            for handed in tick(engine, settings, clock):
                taken_by_others += send_batch(
                    engine, settings, clock, mailer=others, ids=handed
                ).sent
            time.sleep(0.05)  # the beat's interval, shortened; nothing is waited for here
    finally:
        first.join()
        others.close()
    counts = Counter(smtp.message_ids())
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
    assert taken_by_others == [], "nothing was taken from a worker that was alive"


def test_a_worker_that_stalled_past_its_lease_holds_none_of_what_was_handed_on(
    settings, clock, smtp, mini_course
):
    engine = engine_for(settings.database_url)
    active_readers(settings, clock, 3)
    [batch] = tick(engine, settings, clock)
    jobs, _ = claim_and_load(engine, settings, clock, ids=batch, owner="stalled")
    keeper = LeaseKeeper(engine, clock, owner="stalled", ids=batch, seconds=settings.lease_seconds)
    keeper.renew_now()
    assert all(keeper.holds(i) for i in batch), "alive and renewing: the rows stay its own"
    clock.advance(seconds=settings.lease_seconds + 1)  # it stalled: no renewal came in time
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    try:
        rescued = [
            i
            for b in tick(engine, settings, clock)
            for i in send_batch(engine, settings, clock, mailer=mailer, ids=b).sent
        ]
    finally:
        mailer.close()
    assert sorted(rescued) == sorted(batch), "another worker sent them"
    keeper.renew_now()  # the stalled worker wakes up
    assert not any(keeper.holds(i) for i in batch), "and sends none of them again"
    assert len(smtp.message_ids()) == len(set(smtp.message_ids())) == 3


def test_lost_emails_are_handed_out_again_a_limited_number_at_a_time(settings, clock, mini_course):
    """Lost in two ways (a lease run out, or none at all), seven emails wait; a tick that may
    hand out five hands out five, and the next the other two, each once."""
    active_readers(settings, clock, 7)
    engine = engine_for(settings.database_url)
    with engine.begin() as conn:  # their confirmations went out
        conn.execute(update(Delivery).values(status=DeliveryStatus.SENT, lease_until=None))
    claimed = [i for batch in tick(engine, settings, clock) for i in batch]
    assert len(claimed) == 7
    with engine.begin() as conn:
        conn.execute(
            update(Delivery).where(col(Delivery.id).in_(claimed[:3])).values(lease_until=None)
        )
    clock.advance(seconds=settings.lease_seconds + 1)  # the other four run out
    first = release_expired(engine, settings, clock, limit=5)
    second = release_expired(engine, settings, clock, limit=5)
    assert len(first) == 5 and len(set(first)) == 5
    assert sorted(first + second) == sorted(claimed)
    assert release_expired(engine, settings, clock, limit=5) == [], "each leased anew"

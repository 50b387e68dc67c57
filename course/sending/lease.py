"""Short leases, kept alive while a batch is being sent.

A worker holds each delivery of its batch by a lease (owner, until). If the worker dies, the
lease runs out and the next tick hands the delivery to another worker: the shorter the lease,
the sooner readers get their lesson after a crash. So the lease is short (COURSE_LEASE_SECONDS,
30 s by default) and a thread beside the send loop renews it every third of that, for as long
as the process lives and the deliveries are not yet done.

A renewal only extends rows this worker still owns. A row it lost (the process stalled past
its lease, and the tick gave the row to someone else) is no longer held, and the send loop
checks `holds()` before each message: two workers never send the same delivery on purpose.
What remains is the message in flight when a worker stalls or dies, at most one per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from types import TracebackType
from typing import Self

from sqlalchemy import Engine, update
from sqlmodel import col

from course.clock import Clock
from course.models import Delivery, pending_named

log = logging.getLogger(__name__)


def renew(
    engine: Engine, *, ids: Iterable[int], owner: str, clock: Clock, seconds: float
) -> set[int]:
    """Extend the lease on the rows of `ids` that `owner` still holds; returns those."""
    wanted = list(ids)
    if not wanted:
        return set()
    with engine.begin() as conn:
        kept = conn.execute(
            update(Delivery)
            .where(
                col(Delivery.id).in_(wanted),
                col(Delivery.lease_owner) == owner,
                pending_named(),
            )
            .values(lease_until=clock.now() + timedelta(seconds=seconds))
            .returning(col(Delivery.id))
        )
        return {i for i in kept.scalars() if i is not None}


class LeaseKeeper:
    """Renews the batch's leases in the background until the batch is done (a context manager).

    The send loop calls `done(id)` once a delivery needs no lease (sent, retried, bounced) and
    `holds(id)` before sending one."""

    def __init__(
        self, engine: Engine, clock: Clock, *, owner: str, ids: Iterable[int], seconds: float
    ) -> None:
        self._engine, self._clock, self._owner, self._seconds = engine, clock, owner, seconds
        self._held = set(ids)
        self._finished: set[int] = set()
        # When the last renewal began (the claim itself, at first): the lease runs from then.
        self._renewed_at = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{owner[:8]}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def holds(self, delivery_id: int) -> bool:
        """Whether the delivery is still this worker's. If the last renewal is too old to trust
        (the process stalled, and the thread with it), it is renewed first."""
        if time.monotonic() - self._renewed_at > self._seconds * 2 / 3:
            self.renew_now()
        with self._lock:
            return delivery_id in self._held

    def done(self, delivery_id: int) -> None:
        with self._lock:
            self._held.discard(delivery_id)
            self._finished.add(delivery_id)

    def renew_now(self) -> None:
        started = time.monotonic()
        with self._lock:
            wanted = set(self._held)
        kept = renew(
            self._engine, ids=wanted, owner=self._owner, clock=self._clock, seconds=self._seconds
        )
        with self._lock:
            # A row finished while the renewal ran is not lost: it is simply no longer held.
            lost = wanted - kept - self._finished
            self._held -= lost
            self._renewed_at = max(self._renewed_at, started)
        if lost:
            log.warning("lost the lease on %d deliveries (another worker has them)", len(lost))

    def _run(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            try:
                self.renew_now()
            except Exception:
                # A database blip: try again next time; the lease is not lost for a while yet.
                log.warning("could not renew leases", exc_info=True)

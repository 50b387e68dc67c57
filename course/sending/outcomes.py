"""Every outcome of a send other than "sent" (see recording): a temporary error retried with
backoff, a permanent one that suppresses the address, work handed back, a delivery finished."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, update
from sqlmodel import col

from course import suppression
from course.models import Delivery, DeliveryStatus
from course.sending.jobs import Job
from course.sending.mailer import SendError
from course.settings import Settings

log = logging.getLogger(__name__)


def backoff(settings: Settings, attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th temporary error: doubling from a minute, at most
    six hours."""
    return timedelta(seconds=min(settings.retry_base_seconds * 2 ** (attempts - 1), 6 * 3600))


@dataclass(frozen=True)
class Outcomes:
    """The writes for one batch, made as the lease holder `owner`: a row someone else has taken
    since is never touched."""

    engine: Engine
    settings: Settings
    owner: str

    def finish(self, ids: list[int], status: str, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            self._finish_in(conn, ids, status, error=error)

    def _finish_in(
        self, conn: Connection, ids: list[int], status: str, *, error: str | None
    ) -> None:
        conn.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(ids), col(Delivery.lease_owner) == self.owner)
            .values(status=status, lease_owner=None, lease_until=None, last_error=error)
        )

    def bounce(self, job: Job, now: datetime, exc: SendError) -> None:
        """A permanent refusal: stop this person's courses and never write to the address again."""
        reason = str(exc)[:500]
        with self.engine.begin() as conn:
            self._finish_in(conn, [job.delivery.id], DeliveryStatus.BOUNCED, error=reason)
            suppression.suppress(conn, subscriber_id=job.subscriber.id, now=now, reason=reason)
        log.warning("hard bounce for delivery %s: %s", job.delivery.id, reason)

    def retry(self, job: Job, now: datetime, exc: SendError) -> bool:
        """A temporary failure: try again after an exponential backoff, up to max_attempts.
        Returns False when it gives up."""
        attempts = job.delivery.attempts + 1
        give_up = attempts >= self.settings.max_attempts
        self._again(job, now, tries=attempts, give_up=give_up, error=str(exc), attempts=attempts)
        if give_up:
            log.error("delivery %s failed %d times, giving up: %s", job.delivery.id, attempts, exc)
        return not give_up

    def render_failed(self, job: Job, now: datetime, error: str, *, most: int) -> bool:
        """The email could not be rendered: try again after the same backoff as a temporary
        error, up to `most` tries that failed so, counted apart from the relay's. Returns False
        when it gives up."""
        failures = job.delivery.render_failures + 1
        give_up = failures >= most
        self._again(
            job,
            now,
            tries=failures,
            give_up=give_up,
            error=f"render: {error}",
            render_failures=failures,
        )
        if give_up:
            log.error(
                "delivery %s cannot be rendered (%d tries), giving up", job.delivery.id, failures
            )
        return not give_up

    def _again(
        self, job: Job, now: datetime, *, tries: int, give_up: bool, error: str, **count: int
    ) -> None:
        """Hand the delivery back for its `tries`-th backoff, or mark it failed; `count` is the
        tally of tries that went up."""
        with self.engine.begin() as conn:
            conn.execute(
                update(Delivery)
                .where(col(Delivery.id) == job.delivery.id, col(Delivery.lease_owner) == self.owner)
                .values(
                    **count,
                    last_error=error[:500],
                    lease_owner=None,
                    status=DeliveryStatus.FAILED if give_up else DeliveryStatus.PENDING,
                    lease_until=None if give_up else now + backoff(self.settings, tries),
                )
            )

    def release(self, ids: list[int], when: datetime) -> list[int]:
        """Hand `ids` back, to be taken again from `when` on."""
        if ids:
            with self.engine.begin() as conn:
                conn.execute(
                    update(Delivery)
                    .where(col(Delivery.id).in_(ids), col(Delivery.lease_owner) == self.owner)
                    .values(lease_owner=None, lease_until=when)
                )
        return ids

"""The send loop: take a batch, send each email over a kept-open SMTP connection, and record
each outcome as it happens.

Exactly once: a delivery is claimed by one worker (lease owner) before sending, its short lease
kept alive while the batch is sent (course.sending.lease), and marked sent in the moment the SMTP
server accepts it, together with the enrollment's next due time. The only duplicate left is a
message the server accepted just before its worker died (or stalled past its lease), before the
commit: at most one per SMTP connection the killed worker had open (COURSE_SMTP_CONNECTIONS),
each sent again with its stored Message-ID.

The provider's limits (course.sending.relay) are checked before each message: its rate, and a
pause of the whole relay after it said "slow down".
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from course import metrics
from course.catalog import LessonPlan
from course.clock import Clock
from course.models import DeliveryKind, DeliveryStatus, EnrollmentStatus
from course.sending.compose import Composer
from course.sending.jobs import Job, claim_and_load
from course.sending.lease import LeaseKeeper
from course.sending.mailer import (
    ConnectionProblem,
    Mailer,
    NoPlace,
    PermanentError,
    SendError,
    TransientError,
)
from course.sending.outcomes import Outcomes, backoff
from course.sending.recording import GroupRecorder, RecordHandle
from course.settings import Settings

log = logging.getLogger(__name__)

# Tries of an email that cannot be rendered, a minute apart then two (outcomes.backoff), before
# it waits for an operator: long enough for a passing cause, short enough to be seen that day.
RENDER_ATTEMPTS = 3


@dataclass
class BatchResult:
    sent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    bounced: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def _sendable(job: Job) -> bool:
    if job.subscriber.suppressed_at is not None:
        return False
    if job.delivery.kind == DeliveryKind.CONFIRM:
        return job.enrollment.status == EnrollmentStatus.PENDING
    if job.delivery.kind == DeliveryKind.DATA:
        return True  # asked for just now, whatever the course's state
    if job.delivery.kind == DeliveryKind.PAUSED:
        return job.enrollment.status == EnrollmentStatus.ACTIVE
    if job.delivery.kind == DeliveryKind.RESEND:
        # Asked for on the phone, also after the last lesson; never once they have left.
        return job.lesson is not None and job.enrollment.status in (
            EnrollmentStatus.ACTIVE,
            EnrollmentStatus.COMPLETED,
        )
    return job.enrollment.status == EnrollmentStatus.ACTIVE and job.lesson is not None


def send_batch(
    engine: Engine,
    settings: Settings,
    clock: Clock,
    *,
    mailer: Mailer,
    ids: list[int],
    composer: Composer | None = None,
    recorder: GroupRecorder | None = None,
) -> BatchResult:
    """Send the deliveries in `ids` that this worker can claim, recording each outcome at once.

    A worker passes the recorder its sending threads share; without one the batch has its own.
    """
    result = BatchResult()
    owner = uuid.uuid4().hex
    jobs, plan = claim_and_load(engine, settings, clock, ids=ids, owner=owner)
    result.skipped = sorted(set(ids) - {j.delivery.id for j in jobs})
    if not jobs:
        return result
    outcomes = Outcomes(engine, settings, owner)
    cancel = [j.delivery.id for j in jobs if not _sendable(j)]
    if cancel:
        outcomes.finish(cancel, DeliveryStatus.CANCELLED)
        result.skipped.extend(cancel)
    pending = [j for j in jobs if _sendable(j)]
    keeper = LeaseKeeper(
        engine,
        clock,
        owner=owner,
        ids=[j.delivery.id for j in pending],
        seconds=settings.lease_seconds,
    )
    with keeper, ExitStack() as resources:
        if recorder is None:
            recorder = resources.enter_context(GroupRecorder(engine))
        batch = _Batch(
            settings=settings,
            clock=clock,
            mailer=mailer,
            composer=composer or Composer(settings, clock),
            recorder=recorder.handle(),
            outcomes=outcomes,
            plan=plan,
            result=result,
            lease=keeper,
        )
        _send_each(batch, pending)
    return result


@dataclass(frozen=True)
class _Batch:
    """What the send loop works with for one batch."""

    settings: Settings
    clock: Clock
    mailer: Mailer
    composer: Composer
    recorder: RecordHandle
    outcomes: Outcomes
    plan: LessonPlan
    result: BatchResult
    lease: LeaseKeeper


def _send_each(batch: _Batch, pending: list[Job]) -> None:
    settings, clock, mailer, composer = batch.settings, batch.clock, batch.mailer, batch.composer
    recorder, outcomes, plan, result = batch.recorder, batch.outcomes, batch.plan, batch.result
    owner, lease = outcomes.owner, batch.lease
    ahead: bytes | Exception | None = None  # the next job's email, composed in the SMTP wait
    # The message the server accepted last, and when. Its "sent" write goes out while the server
    # reads the next MAIL command, and is waited for before the next message's data goes out,
    # so before that one can be accepted: at most one accepted message is ever unrecorded, as
    # when recording each one straight away.
    accepted: tuple[Job, datetime] | None = None
    writing = False

    def write_accepted() -> None:
        nonlocal writing
        if accepted is not None and not writing:
            recorder.record_sent(settings, accepted[0], owner=owner, now=accepted[1], plan=plan)
            writing = True

    def record_accepted() -> None:
        nonlocal accepted, writing
        write_accepted()
        if accepted is not None:
            (job, at), accepted, writing = accepted, None, False
            recorder.wait()
            lease.done(job.delivery.id)
            result.sent.append(job.delivery.id)
            metrics.sent(job.delivery.kind)
            metrics.lag((at - _aware(job.delivery.created_at)).total_seconds())

    guard = mailer.guard

    def data_may_go() -> None:
        record_accepted()
        if guard is not None:
            # The turn under the provider's rate is taken just before the data goes out, so
            # that what the provider counts (messages accepted) keeps the pace; taken earlier,
            # a database write waited for in between would bunch them up.
            guard.wait_turn()

    for index, job in enumerate(pending):
        delivery_id = job.delivery.id
        if guard is not None and (paused := guard.paused_until()):
            # The relay asked everyone to slow down: the rest waits for the pause to end,
            # without spending an attempt on it.
            _hand_back(batch, pending[index:], until=_wall_to_clock(clock, paused))
            break
        message = ahead if ahead is not None else _compose(composer, job)
        ahead = None
        if not lease.holds(delivery_id):  # this worker stalled past the lease: it is another's
            result.skipped.append(delivery_id)
            continue
        if isinstance(message, Exception):  # a lesson that cannot render must not block the rest
            record_accepted()
            lease.done(delivery_id)
            # What cannot render now may render in a minute (a layout file being replaced by a
            # deploy, a database hiccup, a race): tried again a few times with backoff, then
            # left for an operator (`course deliveries failed`) within minutes, not days.
            kind = job.delivery.kind
            if outcomes.render_failed(job, clock.now(), str(message), most=RENDER_ATTEMPTS):
                result.retried.append(delivery_id)
                metrics.retried(kind)
            else:
                result.failed.append(delivery_id)
                metrics.failed(kind)
            continue

        try:
            # Both run whatever happens, before the data goes out or start() raises.
            mailer.start(
                message,
                composer.envelope_sender,
                job.subscriber.email,
                meanwhile=data_may_go,
                first=write_accepted,
            )
            # The server is taking in the message: build the next one meanwhile.
            if index + 1 < len(pending):
                ahead = _compose(composer, pending[index + 1])
            mailer.finish()
        except PermanentError as exc:
            lease.done(delivery_id)
            outcomes.bounce(job, clock.now(), exc)
            result.bounced.append(delivery_id)
            metrics.bounced(job.delivery.kind)
        except NoPlace:
            # Not the relay's fault nor the reader's: no attempt spent, the batch waits its turn.
            _hand_back(batch, pending[index:], until=clock.now() + timedelta(seconds=5))
            break
        except TransientError as exc:
            lease.done(delivery_id)
            if outcomes.retry(job, clock.now(), exc):
                result.retried.append(delivery_id)
                metrics.retried(job.delivery.kind)
            else:
                result.failed.append(delivery_id)
                metrics.failed(job.delivery.kind)
            if guard is not None and _slow_down(exc):
                until = _wall_to_clock(clock, guard.trip(str(exc)))
                _hand_back(batch, pending[index + 1 :], until=until)
                break
            if isinstance(exc, ConnectionProblem):
                # The server is down for everyone: don't burn through the batch, say so loudly.
                log.error(
                    "SMTP server unreachable (%s); %d deliveries left for later",
                    exc,
                    len(pending) - index - 1,
                )
                _hand_back(batch, pending[index + 1 :], until=clock.now() + backoff(settings, 1))
                break
        else:
            accepted = (job, clock.now())
            if guard is not None:
                guard.recovered()
    record_accepted()


def _slow_down(exc: SendError) -> bool:
    """Trouble of the relay's, not of one address: it pauses the relay for every worker."""
    return isinstance(exc, ConnectionProblem) or exc.code in (421, 451)


def _hand_back(batch: _Batch, jobs: list[Job], *, until: datetime) -> None:
    ids = [j.delivery.id for j in jobs]
    for handed_back in ids:
        batch.lease.done(handed_back)
    batch.result.released.extend(batch.outcomes.release(ids, until))


def _wall_to_clock(clock: Clock, epoch: float) -> datetime:
    """A moment in wall-clock seconds (as Redis shares it) on the service's clock."""
    return clock.now() + timedelta(seconds=max(epoch - time.time(), 0.0))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _compose(composer: Composer, job: Job) -> bytes | Exception:
    """The job's email, or why it cannot be rendered (logged here, recorded by the caller)."""
    try:
        return composer.compose(job)
    except Exception as exc:
        log.exception("delivery %s cannot be rendered", job.delivery.id)
        return exc

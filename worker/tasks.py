"""Thin task shims over course.sending: all logic is testable without a broker."""

from __future__ import annotations

import gc
import logging
import sys
from functools import lru_cache

from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from course.clock import SystemClock
from course.db import engine_for, scrub
from course.outbound import forget_posted, post_due, sweep
from course.queue import PURGE_TASK, SEND_TASK, TICK_TASK, WEBHOOKS_TASK, broker_url, enqueue_sends
from course.readers.personal_data import purge_unconfirmed
from course.sending import Composer, SmtpTarget, send_batch
from course.sending import tick as dispatch_tick
from course.sending.connections import ConnectionPool
from course.sending.recording import GroupRecorder
from course.sending.relay import RelayGuard
from course.settings import get_settings
from worker.app import app

log = logging.getLogger(__name__)

# Sending threads mostly wait on sockets; one that wakes with a reply must not wait the default
# 5 ms for a thread that is rendering an email to hand over the interpreter (the "convoy"
# effect), or every round trip to the relay grows by that much.
sys.setswitchinterval(0.0005)


@lru_cache
def _connections() -> ConnectionPool:
    # The process's SMTP connections, one per sending thread, each reused by every batch that
    # thread sends; the provider's limits are shared through the broker's Redis.
    settings = get_settings()
    guard = RelayGuard(settings, broker_url())
    return ConnectionPool(SmtpTarget.from_url(settings.smtp_url), guard=guard)


@lru_cache
def _recorder() -> GroupRecorder:
    return GroupRecorder(engine_for(get_settings().database_url))


@lru_cache
def _composer() -> Composer:
    return Composer(get_settings(), SystemClock())


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # A forked child (the prefork pool) must not share its parent's database or SMTP sockets.
    engine_for.cache_clear()
    _connections.cache_clear()
    _recorder.cache_clear()
    # Everything loaded so far (Celery, SQLAlchemy, the app) lives as long as the process: keep
    # it out of the collector's full passes, which otherwise stall a send for ~10 ms each.
    gc.freeze()


@worker_ready.connect
def _settled(**_: object) -> None:
    gc.freeze()  # the threads pool has no process_init: freeze once the worker is up


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close(**_: object) -> None:
    _connections().close()
    _recorder().close()


@app.task(name=TICK_TASK)
def tick() -> int:
    settings = get_settings()
    engine = engine_for(settings.database_url)
    batches = dispatch_tick(engine, settings, SystemClock(), hand_out=enqueue_sends)
    return sum(len(b) for b in batches)


@app.task(name=SEND_TASK)
def send(ids: list[int]) -> int:
    settings = get_settings()
    mailer = _connections().mailer()
    result = send_batch(
        engine_for(settings.database_url),
        settings,
        SystemClock(),
        mailer=mailer,
        ids=ids,
        composer=_composer(),
        recorder=_recorder(),
    )
    mailer.between_batches()
    return len(result.sent)


@app.task(name=PURGE_TASK)
def purge() -> int:
    settings = get_settings()
    engine = engine_for(settings.database_url)
    purged = purge_unconfirmed(engine, SystemClock(), days=settings.unconfirmed_days)
    forgotten = forget_posted(engine, SystemClock(), days=settings.webhook_keep_days)
    if forgotten:
        log.info(
            "deleted %d webhook posts older than %d days", forgotten, settings.webhook_keep_days
        )
    # What erases and purges deleted, unreadable on disk too (see course.db.scrub).
    scrub(engine, vacuum=True)
    return purged


@app.task(name=WEBHOOKS_TASK)
def webhooks() -> int:
    """Sent lessons into the outbox, then every due webhook message posted once."""
    settings = get_settings()
    engine = engine_for(settings.database_url)
    sweep(engine, SystemClock())
    delivered, _ = post_due(engine, SystemClock())
    return delivered

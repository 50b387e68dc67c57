"""Thin task shims over course.sending: all logic is testable without a broker."""

from __future__ import annotations

import gc
from functools import lru_cache

from celery.signals import worker_process_init, worker_process_shutdown

from course.clock import SystemClock
from course.db import engine_for, scrub
from course.outbound import post_due, sweep
from course.queue import PURGE_TASK, SEND_TASK, TICK_TASK, WEBHOOKS_TASK, enqueue_sends
from course.readers.personal_data import purge_unconfirmed
from course.sending import Composer, Mailer, SmtpTarget, send_batch
from course.sending import tick as dispatch_tick
from course.settings import get_settings
from worker.app import app


@lru_cache
def _mailer() -> Mailer:
    # One kept-open SMTP connection per worker process, reused by every batch it sends.
    return Mailer(SmtpTarget.from_url(get_settings().smtp_url))


@lru_cache
def _composer() -> Composer:
    return Composer(get_settings(), SystemClock())


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # A forked child must not share its parent's database or SMTP sockets.
    engine_for.cache_clear()
    _mailer.cache_clear()
    # Everything loaded so far (Celery, SQLAlchemy, the app) lives as long as the process: keep
    # it out of the collector's full passes, which otherwise stall a send for ~10 ms each.
    gc.freeze()


@worker_process_shutdown.connect
def _close(**_: object) -> None:
    _mailer().close()


@app.task(name=TICK_TASK)
def tick() -> int:
    settings = get_settings()
    engine = engine_for(settings.database_url)
    batches = dispatch_tick(engine, settings, SystemClock(), hand_out=enqueue_sends)
    return sum(len(b) for b in batches)


@app.task(name=SEND_TASK)
def send(ids: list[int]) -> int:
    settings = get_settings()
    result = send_batch(
        engine_for(settings.database_url),
        settings,
        SystemClock(),
        mailer=_mailer(),
        ids=ids,
        composer=_composer(),
    )
    return len(result.sent)


@app.task(name=PURGE_TASK)
def purge() -> int:
    settings = get_settings()
    engine = engine_for(settings.database_url)
    purged = purge_unconfirmed(engine, SystemClock(), days=settings.unconfirmed_days)
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

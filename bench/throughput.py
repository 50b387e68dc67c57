#!/usr/bin/env python3
"""Delivered lessons per second next to the raw SMTP limit, measured in the same run.

    python bench/throughput.py --n 20000 [--database-url postgresql://postgres@127.0.0.1/homeward_bench]

1. Starts a local SMTP server (aiosmtpd, its own process) that accepts and discards mail.
2. Raw limit: pre-rendered messages pushed with smtplib over reused connections, one client
   process per worker process, into that server; measured before and after step 3.
3. Service: N confirmed readers whose lesson 1 is due, a real Celery worker (same concurrency)
   over Redis, the real tick; timed until every delivery row is marked sent.
Prints both rates and their ratio. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def smtp_server(port: int, ready: Event, accepted: Any) -> None:
    import asyncio

    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server, session, envelope):
            accepted.value += 1  # only this thread writes it
            return "250 OK"

    controller = Controller(Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    signal.sigwait([signal.SIGTERM])
    controller.stop()
    asyncio.get_event_loop_policy()


def push_raw(port: int, message: bytes, *, count: int, go: Barrier) -> None:
    conn = smtplib.SMTP("127.0.0.1", port)
    go.wait()
    for n in range(count):
        conn.sendmail("lessons@bench.test", [f"raw{n}@example.org"], message)
    conn.quit()


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (Linux), to see how busy the SMTP server was."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_wait(pid: int) -> float:
    """Seconds a process's threads have been ready to run but waiting for a CPU (Linux): on a
    machine the SMTP server shares, this is the time others took the CPU from it."""
    waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        waited += int((task / "schedstat").read_text().split()[1])
    return waited / 1e9


def machine_idle() -> float:
    """Seconds all CPUs have been idle so far (Linux)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def raw_limit(port: int, message: bytes, *, total: int, clients: int) -> float:
    # Spawned, not forked: by the second measurement this process runs threads (Celery's
    # client), and a forked child can inherit one of their locks held.
    ctx = mp.get_context("spawn")
    per = total // clients
    go = ctx.Barrier(clients + 1)
    procs = [
        ctx.Process(target=push_raw, args=(port, message), kwargs={"count": per, "go": go})
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    go.wait()  # every client connected: time the sending only
    started = time.perf_counter()
    for p in procs:
        p.join()
    return per * clients / (time.perf_counter() - started)


def seed(database_url: str, n: int, slug: str) -> None:
    """N confirmed readers with lesson 1 due now, written set-based."""
    from sqlalchemy import insert, select
    from sqlmodel import col

    from course.db import engine_for, session_scope
    from course.models import Enrollment, EnrollmentStatus, SequenceVersion, Subscriber

    now = datetime.now(UTC)
    engine = engine_for(database_url)
    with session_scope(engine) as session:
        version_id = session.execute(
            select(col(SequenceVersion.id)).where(col(SequenceVersion.slug) == slug)
        ).scalar_one()
        session.execute(
            insert(Subscriber),
            [
                {
                    "email": f"reader{i}@example.org",
                    "first_name": "Sam",
                    "time_zone": "America/Chicago",
                    "send_hour": 9,
                    "relationship": "parent",
                    "substance": "opioids",
                    "created_at": now,
                }
                for i in range(n)
            ],
        )
        ids = session.execute(select(col(Subscriber.id))).scalars().all()
        session.execute(
            insert(Enrollment),
            [
                {
                    "subscriber_id": sid,
                    "sequence_slug": slug,
                    "version_id": version_id,
                    "status": EnrollmentStatus.ACTIVE,
                    "next_position": 1,
                    "next_due_at": now,
                    "created_at": now,
                    "confirmed_at": now,
                }
                for sid in ids
            ],
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument(
        "--concurrency", type=int, default=2, help="worker processes (one per core), raw clients"
    )
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", default=None, help="default: an embedded redis-server")
    parser.add_argument(
        "--sequence", default=str(ROOT / "lessons" / "family-guide"), help="a sequence folder"
    )
    args = parser.parse_args()

    from course.cli.embedded_redis import EmbeddedRedis, free_port

    workdir = Path(tempfile.mkdtemp(prefix="homeward-bench-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    embedded = None
    redis_url = args.redis_url
    if not redis_url:
        embedded = EmbeddedRedis().start()
        redis_url = embedded.url
    port = free_port()
    env = {
        **os.environ,
        "COURSE_DATABASE_URL": database_url,
        "COURSE_REDIS_URL": redis_url,
        "COURSE_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "COURSE_BASE_URL": "https://homeward.bench",
        "COURSE_SECRET_KEY": "bench-secret-key-0123456789",
        "COURSE_POSTAL_ADDRESS": "Homeward, 1 Bench Street",
        "COURSE_SEND_BATCH": "200",
        # On loopback a message costs CPU, not waiting: a few connections per process suffice.
        "COURSE_SMTP_CONNECTIONS": os.environ.get("COURSE_SMTP_CONNECTIONS", "4"),
        "COURSE_CLAIM_BATCH": "5000",
    }
    os.environ.update(env)

    from sqlalchemy import create_engine, func, select
    from sqlmodel import col

    from course.authoring import check, publish
    from course.clock import SystemClock
    from course.db import engine_for, normalize_url, session_scope, upgrade
    from course.models import Delivery, DeliveryStatus, Subscriber
    from course.settings import get_settings

    settings = get_settings()
    upgrade(database_url)
    with engine_for(database_url).connect() as conn:
        if conn.execute(select(col(Subscriber.id)).limit(1)).first() is not None:
            shutil.rmtree(workdir)
            raise SystemExit(
                "bench: the database already holds readers (an earlier run's?). The benchmark"
                " enrolls its own: give it an empty database (drop it and create it again)."
            )
    from course.render import Layout

    sequence, reports = check(Path(args.sequence), Layout.load(ROOT / "lessons" / "_layout"))
    with session_scope(engine_for(database_url)) as session:
        publish(session, sequence, SystemClock())
    seed(database_url, args.n, sequence.slug)

    ready = mp.Event()
    accepted = mp.RawValue("q", 0)  # messages the SMTP server has accepted so far
    server = mp.Process(target=smtp_server, args=(port, ready, accepted), daemon=True)
    server.start()
    assert server.pid is not None
    server_pid = server.pid
    ready.wait(10)

    # The raw limit: the same lesson, pre-rendered once, pushed over kept-open connections.
    from course.message import build_encoded, encode_body

    rendered = reports[0].samples[0]
    sample = build_encoded(
        subject=rendered.subject,
        text_body=encode_body(rendered.text),
        html_body=encode_body(rendered.html),
        from_address=settings.from_address,
        sender_name="Homeward",
        to="raw@example.org",
        message_id="<raw@bench>",
        unsubscribe_url="https://homeward.bench/u/x",
        unsubscribe_mailto=None,
        date=datetime.now(UTC),
    )

    def measure_raw() -> tuple[float, float, float]:
        """The raw limit, how busy the SMTP server was meanwhile (share of one core), and the
        share of the time it waited for a CPU."""
        cpu_before, wall_before = cpu_seconds(server_pid), time.perf_counter()
        wait_before = cpu_wait(server_pid)
        limit = raw_limit(port, sample, total=args.n, clients=args.concurrency)
        wall = time.perf_counter() - wall_before
        return (
            limit,
            (cpu_seconds(server_pid) - cpu_before) / wall,
            (cpu_wait(server_pid) - wait_before) / wall,
        )

    # Measured before and after the service run: on a shared machine the limit drifts by
    # 10-20% from minute to minute, and the ratio is against the mean of the two.
    raw_before, raw_busy, raw_waiting = measure_raw()

    # A worker host as the README runs one on this machine: a worker process per core, each
    # with its sending threads (COURSE_SMTP_CONNECTIONS).
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "--loglevel=WARNING",
                f"--logfile={workdir / f'worker{n}.log'}",
                "-n",
                f"bench{n}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        for n in range(args.concurrency)
    ]
    try:
        from course.queue import app, enqueue_sends
        from course.sending import tick

        app.conf.update(broker_url=redis_url)
        engine = engine_for(database_url)
        # Wait for the worker to be up, so its start-up time is not counted.
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=0.5) or []) < len(workers):
            if time.monotonic() > deadline:
                raise SystemExit("worker did not start")
        started = time.perf_counter()
        cpu_before, idle_before = cpu_seconds(server_pid), machine_idle()
        wait_before = cpu_wait(server_pid)
        first_enqueued: list[float] = []
        ticks, tick_seconds = 0, 0.0

        def hand_out(batches: list[list[int]]) -> None:
            enqueue_sends(batches)
            if not first_enqueued:
                first_enqueued.append(time.perf_counter() - started)

        # The tick runs every COURSE_TICK_SECONDS, as beat runs it. The end is when no
        # delivery is pending. The database is asked that four times a second (a lesson that
        # fails never reaches the SMTP server), and every 20 ms once the server has taken in
        # all N: asked every 20 ms throughout, the question took ~2% of a core from the
        # machine the measured service runs on. It is a one-row index probe on a plain
        # engine: the service's own transactions all begin IMMEDIATE on SQLite, and a probe
        # taking the write lock would stall the very workers it measures. A plain read in
        # WAL mode takes no lock.
        unsent = (
            select(col(Delivery.id)).where(col(Delivery.status) == DeliveryStatus.PENDING).limit(1)
        )
        probe = create_engine(normalize_url(database_url))
        all_accepted = accepted.value + args.n
        next_tick = next_probe = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now >= next_tick:
                tick(engine, settings, SystemClock(), hand_out=hand_out)
                ticks += 1
                tick_seconds += time.perf_counter() - now
                next_tick = now + settings.tick_seconds
            if accepted.value >= all_accepted or now >= next_probe:
                next_probe = now + 0.25
                with probe.connect() as conn:
                    if conn.execute(unsent).first() is None:
                        break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        busy = (cpu_seconds(server_pid) - cpu_before) / elapsed
        waiting = (cpu_wait(server_pid) - wait_before) / elapsed
        idle = (machine_idle() - idle_before) / elapsed / (os.cpu_count() or 1)
        probe.dispose()
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
        raw_after, _, _ = measure_raw()
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)
        server.terminate()
        if embedded:
            embedded.stop()
    with session_scope(engine_for(database_url)) as session:
        sent = session.execute(
            select(func.count())
            .select_from(Delivery)
            .where(col(Delivery.status) == DeliveryStatus.SENT)
        ).scalar_one()
    if sent != args.n:
        print(f"warning: {sent:,} of {args.n:,} lessons were sent; the workers' logs: {workdir}")
    else:
        shutil.rmtree(workdir)
    rate = sent / elapsed
    db = "postgresql" if database_url.startswith("postgres") else "sqlite"
    print(f"readers: {args.n}  worker processes: {args.concurrency}  database: {db}")
    raw = (raw_before + raw_after) / 2
    print(
        f"raw SMTP limit (smtplib, pre-rendered, reused connections): {raw:,.0f} msg/s "
        f"(before {raw_before:,.0f}, after {raw_after:,.0f})"
    )
    print(f"delivered lessons (render + send + record, real worker):    {rate:,.0f} lessons/s")
    print(f"ratio: {rate / raw:.2f}")
    print(
        f"  SMTP server busy: {raw_busy:.0%} of a core (raw), {busy:.0%} (service); "
        f"machine idle during the service run: {idle:.0%}"
    )
    print(
        f"  SMTP server ready but waiting for a CPU: {raw_waiting:.0%} of the time (raw), "
        f"{waiting:.0%} (service)"
    )
    if first_enqueued:
        print(
            f"  of {elapsed:.2f} s: the first batch was handed out after "
            f"{first_enqueued[0]:.2f} s; {ticks} ticks took {tick_seconds:.2f} s in all"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""One worker host against a provider across the internet, next to raw SMTP, in the same run.

    python bench/provider.py --n 20000 [--rtt-ms 20] [--connections 32]
        [--database-url postgresql://postgres@127.0.0.1/homeward_bench_relay]

1. Starts bench/relay.py: an SMTP sink that offers PIPELINING and records every Message-ID it
   accepts, behind a proxy that delays each chunk by half the round trip (20 ms by default).
2. Raw: 32 plain smtplib connections, kept open, each sending pre-rendered messages with
   sendmail() (a round trip per command: four a message) through the same proxy; measured
   before and after step 3, and the ratio is against the mean of the two.
3. Service: N confirmed readers whose lesson 1 is due, one real worker host started as an
   operator starts one (`celery -A worker worker`, its own defaults for pool, processes and
   COURSE_SMTP_CONNECTIONS unless --smtp-connections is given), the real tick run here every
   COURSE_TICK_SECONDS as beat runs it; timed until no delivery is pending.

Prints lessons/s against raw messages/s and their ratio next to the target (>= 0.85), the peak
memory of the worker host (the sum of RSS over its process and all its children, sampled four
times a second from its start to its end) next to 300 MB, what was sent twice or lost (the
relay's record of Message-IDs against the database), how busy the proxy was (so it is seen not
to be the limit), and the load average before and after. A benchmark, not a test: it asserts
nothing, but exits 1 if a lesson was lost or sent twice.

The database is a fresh SQLite file unless --database-url names an empty one (PostgreSQL
supported); Redis is a private embedded redis-server unless --redis-url is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    TreeMemory,
    audit,
    code_version,
    drive_ticks,
    loadavg,
    machine_idle,
    prepare,
    raw_rate,
    sample_message,
    service_env,
    start_worker,
    stop_worker,
    wait_for_workers,
)
from bench.relay import Relay  # noqa: E402

TARGET_RATIO = 0.85
TARGET_MEMORY_MB = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=10000, help="readers, and raw messages")
    parser.add_argument("--connections", type=int, default=32, help="raw kept-open connections")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="the relay's round trip")
    parser.add_argument(
        "--smtp-connections",
        type=int,
        default=None,
        help="COURSE_SMTP_CONNECTIONS for the worker (default: the service's own default)",
    )
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", default=None, help="default: an embedded redis-server")
    parser.add_argument(
        "--sequence", default=str(ROOT / "lessons" / "family-guide"), help="a sequence folder"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args()

    from course.cli.embedded_redis import EmbeddedRedis

    load_before = loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="homeward-provider-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    embedded = None
    relay = Relay(record=workdir / "message-ids.txt", rtt_ms=args.rtt_ms)
    worker = None
    log = workdir / "worker.log"
    ok = False
    try:
        redis_url = args.redis_url
        if not redis_url:
            embedded = EmbeddedRedis().start()
            redis_url = embedded.url
        relay.start()
        extra = {}
        if args.smtp_connections:
            extra["COURSE_SMTP_CONNECTIONS"] = str(args.smtp_connections)
        env = service_env(
            database_url=database_url, redis_url=redis_url, smtp_url=relay.url, **extra
        )
        os.environ.update(env)
        message = sample_message(prepare(database_url, n=args.n, sequence_dir=Path(args.sequence)))

        def measure_raw() -> tuple[float, float]:
            """Raw messages/s, and the proxy's CPU use meanwhile (share of one core)."""
            cpu, wall = relay.cpu()["proxy"], time.perf_counter()
            rate = raw_rate(
                relay.host, relay.port, message, total=args.n, connections=args.connections
            )
            return rate, (relay.cpu()["proxy"] - cpu) / (time.perf_counter() - wall)

        raw_before, proxy_raw = measure_raw()

        from course.queue import app

        app.conf.update(broker_url=redis_url)
        worker = start_worker(env, name="host1", log=log)
        with TreeMemory([worker.pid]) as memory:
            wait_for_workers(app, ["host1"], [worker])
            base = relay.accepted
            cpu_before, waited_before = relay.cpu(), relay.waited()
            idle_before = machine_idle()
            drive = drive_ticks(
                database_url, accepted=lambda: relay.accepted, expected=base + args.n
            )
            cpu_after, waited_after = relay.cpu(), relay.waited()
            idle = (machine_idle() - idle_before) / drive.elapsed / (os.cpu_count() or 1)
            stop_worker(worker)
        raw_after, _ = measure_raw()
        result = audit(database_url, relay.message_ids())
        ok = result.clean
    finally:
        if worker is not None:
            stop_worker(worker)
        relay.stop()
        if embedded:
            embedded.stop()
    load_after = loadavg()

    raw = (raw_before + raw_after) / 2
    rate = result.sent / drive.elapsed
    db = "postgresql" if database_url.startswith("postgres") else "sqlite"
    mb = memory.peak / 1e6
    proxy = (cpu_after["proxy"] - cpu_before["proxy"]) / drive.elapsed
    sink = (cpu_after["sink"] - cpu_before["sink"]) / drive.elapsed
    proxy_wait = (waited_after["proxy"] - waited_before["proxy"]) / drive.elapsed
    print(
        f"readers: {args.n:,}  relay round trip: {args.rtt_ms:g} ms  database: {db}  "
        f"worker code: {code_version()}"
    )
    print(
        f"raw, {args.connections} kept-open smtplib connections (sendmail, 4 round trips a "
        f"message): {raw:,.0f} msg/s (before {raw_before:,.0f}, after {raw_after:,.0f})"
    )
    print(
        f"service, one worker host (celery -A worker worker"
        f"{', COURSE_SMTP_CONNECTIONS=' + str(args.smtp_connections) if args.smtp_connections else ''}"
        f"): {rate:,.1f} lessons/s"
    )
    print(f"ratio: {rate / raw:.2f}   (target >= {TARGET_RATIO})")
    print(
        f"worker host memory, peak sum of RSS: {mb:,.0f} MB over {memory.peak_processes} "
        f"processes   (target <= {TARGET_MEMORY_MB} MB)"
    )
    print(f"relay record vs database: {result.line()}")
    print(
        f"  latency proxy busy: {proxy_raw:.0%} of a core (raw), {proxy:.0%} (service), ready but "
        f"waiting for a CPU {proxy_wait:.0%} of the time; SMTP sink busy {sink:.0%} (service); "
        f"machine idle during the service run: {idle:.0%}"
    )
    print(
        f"  of {drive.elapsed:.2f} s: the first batch was handed out after "
        f"{drive.first_handed_out or 0:.2f} s; {drive.ticks} ticks took "
        f"{drive.tick_seconds:.2f} s in all"
    )
    print(f"  load average (1, 5, 15 min): before {load_before}, after {load_after}")
    if ok and not args.keep:
        shutil.rmtree(workdir)
    else:
        print(f"  work folder kept (logs, Message-ID record): {workdir}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

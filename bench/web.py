#!/usr/bin/env python3
"""How many sign-ups and sign-up page views `course web` answers at once, and how fast.

    .venv/bin/python bench/web.py                  # 20 seconds for each route
    .venv/bin/python bench/web.py --seconds 3      # what CI runs

Starts `course web` (as an operator would: --workers left to its default, one per core, access
log off) against a PostgreSQL database of its own (`homeward_bench_web` on the local server, made
anew, dropped at the end) and a Redis db of its own (14, emptied before and after), publishes
the bundled courses, then keeps 16 clients busy on `POST /enroll` (each sign-up a new address,
JSON, the real path: rate limits counted in Redis, the sign-up written, a tick nudged through
the broker) and then on `GET /`. The sign-up rate limits are raised so that the run measures
the app, not the limiter. After the load, the sign-ups are taken in as a tick would (each gets
its confirmation email written as a delivery), and the count is checked.

The 16 clients are one asyncio process speaking HTTP/1.1 on kept-open connections, written to
cost as little CPU as it can: on this 2-core machine it shares the cores with the server, and
the figures say how much of them it took. A benchmark, not a test: it asserts nothing but that
every request was answered as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NAME = "homeward_bench_web"
CLIENTS = 16
# (route, req/s at least, p99 at most in ms): issue 16's targets.
TARGETS = {"POST /enroll": (600.0, 50.0), "GET /": (1500.0, 30.0)}
COURSES = ("family-guide", "family-guide-es")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, one per answer
    wrong: dict[int, int] = field(default_factory=dict)  # status -> count, when unexpected


class Connection:
    """One kept-open HTTP/1.1 connection: a request out, its answer read whole."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def enroll_request(port: int, email: str) -> bytes:
    body = json.dumps({"email": email}).encode()
    return (
        f"POST /enroll HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def home_request(port: int) -> bytes:
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\n"
        "Accept-Language: en\r\n\r\n"
    ).encode()


async def load(
    port: int, *, seconds: float, expect: int, make: Callable[[int, int], bytes]
) -> tuple[Tally, float]:
    """CLIENTS connections, each sending `make(client, n)` as soon as its last answer came,
    for `seconds`; the answers and the time they took."""
    tally = Tally()
    stop_at = time.perf_counter() + seconds

    async def client(number: int) -> None:
        conn = Connection(port)
        n = 0
        try:
            while time.perf_counter() < stop_at:
                raw = make(number, n)
                n += 1
                began = time.perf_counter()
                status = await conn.request(raw)
                tally.latencies.append(time.perf_counter() - began)
                if status != expect:
                    tally.wrong[status] = tally.wrong.get(status, 0) + 1
        finally:
            await conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return tally, time.perf_counter() - began


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of `pid` and every process under it, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        here = todo.pop()
        todo += children.get(here, [])
        with contextlib.suppress(OSError):
            fields = (Path("/proc") / str(here) / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Figure:
    route: str
    answers: int
    seconds: float
    p50_ms: float
    p99_ms: float
    wrong: dict[int, int]
    server_cpu: float
    generator_cpu: float

    @property
    def rate(self) -> float:
        return self.answers / self.seconds

    def line(self) -> str:
        least, most = TARGETS[self.route]
        met = self.rate >= least and self.p99_ms <= most
        wrong = f", UNEXPECTED answers {self.wrong}" if self.wrong else ""
        return (
            f"{self.route:<13} {self.rate:7.0f} req/s (target >= {least:,.0f})   "
            f"p50 {self.p50_ms:5.1f} ms   p99 {self.p99_ms:5.1f} ms (target <= {most:.0f})   "
            f"{'meets the target' if met else 'BELOW the target'}{wrong}\n"
            f"{'':13} {self.answers} answers in {self.seconds:.1f} s; CPU: server "
            f"{self.server_cpu:.1f} s, load generator {self.generator_cpu:.1f} s, of "
            f"{self.seconds * (os.cpu_count() or 1):.1f} s the machine's cores had"
        )


def measure(
    route: str,
    server_pid: int,
    port: int,
    *,
    seconds: float,
    expect: int,
    make: Callable[..., bytes],
) -> Figure:
    cpu_before, mine_before = cpu_seconds(server_pid), time.process_time()
    tally, elapsed = asyncio.run(load(port, seconds=seconds, expect=expect, make=make))
    cpu_after, mine_after = cpu_seconds(server_pid), time.process_time()
    cuts = statistics.quantiles(tally.latencies, n=100, method="inclusive")
    return Figure(
        route=route,
        answers=len(tally.latencies),
        seconds=elapsed,
        p50_ms=cuts[49] * 1000,
        p99_ms=cuts[98] * 1000,
        wrong=tally.wrong,
        server_cpu=cpu_after - cpu_before,
        generator_cpu=mine_after - mine_before,
    )


def wait_healthy(port: int, server: subprocess.Popen[bytes], *, timeout: float) -> None:
    import httpx

    give_up = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < give_up:
        if server.poll() is not None:
            raise SystemExit(f"course web exited ({server.returncode}) before it was ready")
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            if answer.status_code == 200:
                return
            last = answer.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise SystemExit(f"course web was not healthy within {timeout:.0f} s: {last}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn's supervisor and its workers), then make
    sure nothing of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="of load per route")
    parser.add_argument(
        "--workers", type=int, default=None, help="passed to course web (default: its own)"
    )
    parser.add_argument("--redis-db", type=int, default=14)
    args = parser.parse_args()

    import redis
    from sqlalchemy import create_engine, func, select, text

    from course.authoring import check, publish
    from course.cli.serve import cpu_count
    from course.clock import SystemClock
    from course.db import engine_for, session_scope, upgrade
    from course.models import Delivery, SignupRequest
    from course.readers.intake import take_in
    from course.render import Layout
    from course.settings import Settings

    workers = args.workers or cpu_count()
    load_before = os.getloadavg()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{NAME}"
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{NAME}"'))
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()  # this run's own db: the ticks it nudges must not reach a later run
    port = free_port()
    env = {
        **os.environ,
        "COURSE_DATABASE_URL": url,
        "COURSE_REDIS_URL": redis_url,
        "COURSE_SECRET_KEY": "bench-web-" + os.urandom(8).hex(),
        "COURSE_POSTAL_ADDRESS": "Homeward bench, 1 Example Street, Springfield",
        "COURSE_BASE_URL": f"http://127.0.0.1:{port}",
        # Every request comes from 127.0.0.1: without these the limiter, not the app, is measured.
        "COURSE_SIGNUP_RATE": "100000000/minute",
        "COURSE_SIGNUP_ADDRESS_RATE": "100000000/hour",
    }
    env.pop("COURSE_DEV", None)
    server: subprocess.Popen[bytes] | None = None
    figures: list[Figure] = []
    try:
        upgrade(url)
        lessons = ROOT / "lessons"
        engine = engine_for(url)
        for slug in COURSES:
            sequence, _ = check(
                lessons / slug, Layout.load(lessons / "_layout"), lessons / "_language"
            )
            with session_scope(engine) as session:
                publish(session, sequence, SystemClock())

        argv = [str(ROOT / ".venv" / "bin" / "course"), "web", "--host", "127.0.0.1"]
        argv += ["--port", str(port)]
        if args.workers:
            argv += ["--workers", str(args.workers)]
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-web-{port}.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_healthy(port, server, timeout=60)
        except SystemExit as exc:
            raise SystemExit(f"{exc} (its output: {log})") from None
        home = home_request(port)
        # Every worker process warmed up (templates compiled, pools filled, catalogue read).
        asyncio.run(load(port, seconds=1, expect=200, make=lambda _c, _n: home))
        asyncio.run(
            load(
                port,
                seconds=1,
                expect=202,
                make=lambda c, n: enroll_request(port, f"warm.{c}.{n}@example.org"),
            )
        )
        figures.append(
            measure(
                "POST /enroll",
                server.pid,
                port,
                seconds=args.seconds,
                expect=202,
                make=lambda c, n: enroll_request(port, f"reader.{c}.{n}@example.org"),
            )
        )
        figures.append(
            measure(
                "GET /",
                server.pid,
                port,
                seconds=args.seconds,
                expect=200,
                make=lambda _c, _n: home,
            )
        )
        stop(server)
        server = None

        # What the next ticks do with the burst: each sign-up becomes a reader with a
        # confirmation email written, ready to send.
        settings = Settings(
            database_url=url,
            redis_url=redis_url,
            secret_key=env["COURSE_SECRET_KEY"],
            postal_address=env["COURSE_POSTAL_ADDRESS"],
            base_url=env["COURSE_BASE_URL"],
        )
        with session_scope(engine) as session:
            waiting = session.scalar(select(func.count()).select_from(SignupRequest)) or 0
        began = time.perf_counter()
        confirmations = 0
        while batch := take_in(engine, settings, SystemClock(), limit=1000):
            confirmations += len(batch)
        took = time.perf_counter() - began
        with session_scope(engine) as session:
            written = session.scalar(select(func.count()).select_from(Delivery)) or 0
        engine.dispose()
    finally:
        if server is not None:
            stop(server)
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)'))
        admin.dispose()
        broker.flushdb()
    load_after = os.getloadavg()

    cores = os.cpu_count() or 1
    print(
        f"course web: {workers} worker processes{'' if args.workers else ' (its default here)'}, access log off, "
        f"PostgreSQL over loopback TCP, Redis db {args.redis_db}; {CLIENTS} concurrent clients "
        f"on kept-open connections, {args.seconds:g} s per route."
    )
    print(
        f"The load generator is one process on the same {cores} cores: what it uses is taken "
        "from the server (see CPU below)."
    )
    for figure in figures:
        print(figure.line())
    print(
        f"Then the ticks' part: {waiting} sign-ups taken in, {confirmations} confirmation emails "
        f"written ({written} deliveries in all) in {took:.1f} s, one process."
    )
    print(
        "Load average (1, 5, 15 min): before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(
            *load_before, *load_after
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

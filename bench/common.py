"""Pieces the benchmarks share: the service's environment, a database with N readers due, the
raw SMTP limit over many kept-open connections, a worker host started and stopped, the real
tick driven until nothing is pending, a worker's memory sampled, and what the relay received
checked against the database (nothing lost, nothing sent twice).

Not a benchmark itself. bench/throughput.py keeps its own copies of some of these for now.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.throughput import seed  # noqa: E402  (after the path is set)

__all__ = ["seed"]

# The Message-ID of every raw message: left out when the relay's record is checked.
RAW_MESSAGE_ID = "<raw@bench.relay>"


def service_env(
    *, database_url: str, redis_url: str, smtp_url: str, **extra: str
) -> dict[str, str]:
    """What a worker host (and the benchmark's own tick) runs with: as bench/throughput.py."""
    env = {
        **os.environ,
        "COURSE_DATABASE_URL": database_url,
        "COURSE_REDIS_URL": redis_url,
        "COURSE_SMTP_URL": smtp_url,
        "COURSE_BASE_URL": "https://homeward.bench",
        "COURSE_SECRET_KEY": "bench-secret-key-0123456789",
        "COURSE_POSTAL_ADDRESS": "Homeward, 1 Bench Street",
        "COURSE_SEND_BATCH": "200",
        "COURSE_CLAIM_BATCH": "5000",
    }
    env.update(extra)
    return env


def prepare(database_url: str, *, n: int, sequence_dir: Path) -> Any:
    """Migrate an empty database, publish the sequence, enroll N confirmed readers with lesson
    1 due now. Returns the checker's reports (their samples are rendered lessons)."""
    from sqlalchemy import select
    from sqlmodel import col

    from course.authoring import check, publish
    from course.clock import SystemClock
    from course.db import engine_for, session_scope, upgrade
    from course.models import Subscriber
    from course.render import Layout

    upgrade(database_url)
    with engine_for(database_url).connect() as conn:
        if conn.execute(select(col(Subscriber.id)).limit(1)).first() is not None:
            raise SystemExit(
                "bench: the database already holds readers (an earlier run's?). The benchmark"
                " enrolls its own: give it an empty database (drop it and create it again)."
            )
    sequence, reports = check(sequence_dir, Layout.load(ROOT / "lessons" / "_layout"))
    with session_scope(engine_for(database_url)) as session:
        publish(session, sequence, SystemClock())
    seed(database_url, n, sequence.slug)
    return reports


def sample_message(reports: Any) -> bytes:
    """Lesson 1 as the worker would send it, rendered once: what the raw clients push."""
    from course.message import build_encoded, encode_body
    from course.settings import get_settings

    rendered = reports[0].samples[0]
    return build_encoded(
        subject=rendered.subject,
        text_body=encode_body(rendered.text),
        html_body=encode_body(rendered.html),
        from_address=get_settings().from_address,
        sender_name="Homeward",
        to="raw@example.org",
        message_id=RAW_MESSAGE_ID,
        unsubscribe_url="https://homeward.bench/u/x",
        unsubscribe_mailto=None,
        date=datetime.now(UTC),
    )


# --- the raw limit ----------------------------------------------------------------------------


def _push_threads(*, host: str, port: int, message: bytes, counts: list[int], go: Barrier) -> None:
    """One process: a thread per connection, each opened first, then sendmail() `count` times."""
    conns = [smtplib.SMTP(host, port) for _ in counts]
    for conn in conns:
        conn.ehlo()

    def push(conn: smtplib.SMTP, count: int) -> None:
        for n in range(count):
            conn.sendmail("lessons@bench.test", [f"raw{n}@example.org"], message)

    threads = [
        threading.Thread(target=push, args=(conn, count))
        for conn, count in zip(conns, counts, strict=True)
    ]
    go.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for conn in conns:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            conn.quit()


def raw_rate(
    host: str, port: int, message: bytes, *, total: int, connections: int, processes: int = 0
) -> float:
    """Messages per second through `connections` plain smtplib connections kept open, each
    sending with sendmail() (a round trip per command), timed from when all are open."""
    processes = processes or min(connections, os.cpu_count() or 1)
    per = [total // connections] * connections
    for i in range(total % connections):
        per[i] += 1
    groups = [per[i::processes] for i in range(processes)]
    # Spawned, not forked: the caller may run threads (Celery's client), and a forked child can
    # inherit one of their locks held.
    ctx = mp.get_context("spawn")
    go = ctx.Barrier(processes + 1)
    procs = [
        ctx.Process(
            target=_push_threads,
            kwargs={"host": host, "port": port, "message": message, "counts": g, "go": go},
        )
        for g in groups
    ]
    for p in procs:
        p.start()
    go.wait(120)  # every connection open: time the sending only
    started = time.perf_counter()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    if any(p.exitcode for p in procs):
        raise RuntimeError("a raw client failed")
    return total / elapsed


# --- worker hosts -----------------------------------------------------------------------------


def worker_command(*, name: str, log: Path) -> list[str]:
    """A worker host, as operators start one (`celery -A worker worker`), named so that several
    on one machine can be told apart, and without mingle and gossip, as bench/throughput.py."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "--loglevel=WARNING",
        f"--logfile={log}",
        f"--hostname={name}@%h",
        "--without-mingle",
        "--without-gossip",
    ]


def start_worker(
    env: dict[str, str], *, name: str, log: Path, netns: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a worker host in its own session (so its whole tree can be signalled), in a
    network namespace if one is given (`ip netns exec` execs, so the pid is the worker's)."""
    command = worker_command(name=name, log=log)
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    # Celery's banner and warnings (running as root, say) go beside the log, not to our output.
    with open(log.with_suffix(".out"), "ab") as out:
        return subprocess.Popen(
            command, env=env, cwd=ROOT, start_new_session=True, stdout=out, stderr=out
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM (a warm shutdown: what is being sent finishes), SIGKILL if it will not end."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_for_workers(
    app: Any, names: Sequence[str], procs: Sequence[subprocess.Popen[bytes]], *, timeout: float = 90
) -> None:
    """Until every named worker answers a ping (its start-up time is then not counted)."""
    deadline = time.monotonic() + timeout
    waiting = set(names)
    while waiting:
        for reply in app.control.ping(timeout=0.5) or []:
            for node in reply:
                waiting.discard(node.split("@", 1)[0])
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker host exited while starting; see its log")
        if waiting and time.monotonic() > deadline:
            raise SystemExit(f"worker hosts did not start: {sorted(waiting)}")


def descendants(pid: int) -> list[int]:
    """The process and every process under it (Linux, from /proc)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class TreeMemory:
    """Samples the sum of RSS over a process and its children, in a thread, keeping the peak.
    The tree is walked every two seconds; the RSS of what it found, four times a second."""

    def __init__(self, pids: Sequence[int], interval: float = 0.25) -> None:
        self.roots = list(pids)
        self.interval = interval
        self.peak = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        members: list[int] = []
        walked = 0.0
        while not self._stop.is_set():
            if time.monotonic() - walked > 2:
                members = [p for root in self.roots for p in descendants(root)]
                walked = time.monotonic()
            total = sum(rss_bytes(p) for p in members)
            if total > self.peak:
                self.peak, self.peak_processes = total, len(members)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the service run --------------------------------------------------------------------------


@dataclass
class Drive:
    elapsed: float  # seconds from the first tick until nothing was pending
    ticks: int
    tick_seconds: float
    first_handed_out: float | None


def drive_ticks(database_url: str, *, accepted: Callable[[], int], expected: int) -> Drive:
    """Run the real tick every COURSE_TICK_SECONDS, as beat runs it, until no delivery is
    pending: as bench/throughput.py does. The database is asked four times a second, and every
    20 ms once the relay has taken in `expected` messages (accepted() counts them)."""
    from sqlalchemy import create_engine, select
    from sqlmodel import col

    from course.clock import SystemClock
    from course.db import engine_for, normalize_url
    from course.models import Delivery, DeliveryStatus
    from course.queue import enqueue_sends
    from course.sending import tick
    from course.settings import get_settings

    settings = get_settings()
    engine = engine_for(database_url)
    started = time.perf_counter()
    first: list[float] = []
    ticks, tick_seconds = 0, 0.0

    def hand_out(batches: list[list[int]]) -> None:
        enqueue_sends(batches)
        if not first:
            first.append(time.perf_counter() - started)

    unsent = select(col(Delivery.id)).where(col(Delivery.status) == DeliveryStatus.PENDING).limit(1)
    # A plain engine: on SQLite a read in WAL mode takes no lock (the service's own
    # transactions begin IMMEDIATE, and a probe taking the write lock would stall them).
    probe = create_engine(normalize_url(database_url))
    next_tick = next_probe = time.perf_counter()
    try:
        while True:
            now = time.perf_counter()
            if now >= next_tick:
                tick(engine, settings, SystemClock(), hand_out=hand_out)
                ticks += 1
                tick_seconds += time.perf_counter() - now
                next_tick = now + settings.tick_seconds
            if accepted() >= expected or now >= next_probe:
                next_probe = now + 0.25
                with probe.connect() as conn:
                    if conn.execute(unsent).first() is None:
                        break
            time.sleep(0.02)  # the polling interval, not a wait for something
    finally:
        probe.dispose()
    return Drive(time.perf_counter() - started, ticks, tick_seconds, first[0] if first else None)


@dataclass
class Audit:
    sent: int  # deliveries the database has as sent
    pending: int  # neither sent nor given up
    other: int  # failed, bounced, cancelled
    received: int  # service messages the relay accepted (duplicates counted)
    duplicates: int  # messages the relay accepted more than once
    lost: int  # recorded as sent, never accepted by the relay
    unrecorded: int  # accepted by the relay, not recorded as sent

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.lost or self.unrecorded or self.pending or self.other)

    def line(self) -> str:
        return (
            f"sent twice: {self.duplicates}  lost: {self.lost}  accepted but not recorded: "
            f"{self.unrecorded}  still pending: {self.pending}  failed/bounced: {self.other}"
        )


def audit(database_url: str, received: Sequence[str]) -> Audit:
    """The relay's record of Message-IDs (raw messages left out) against the deliveries."""
    from sqlalchemy import select
    from sqlmodel import col

    from course.db import engine_for
    from course.models import Delivery, DeliveryStatus

    with engine_for(database_url).connect() as conn:
        rows = conn.execute(select(col(Delivery.message_id), col(Delivery.status))).all()
    sent = {mid for mid, status in rows if status == DeliveryStatus.SENT}
    pending = sum(1 for _, status in rows if status == DeliveryStatus.PENDING)
    counts = collections.Counter(mid for mid in received if mid != RAW_MESSAGE_ID)
    return Audit(
        sent=len(sent),
        pending=pending,
        other=len(rows) - len(sent) - pending,
        received=sum(counts.values()),
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        lost=len(sent - counts.keys()),
        unrecorded=len(counts.keys() - sent),
    )


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine_idle() -> float:
    """Seconds all CPUs have been idle so far (Linux)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def code_version() -> str:
    """The commit the worker runs, and whether the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "course", "worker"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.split()
    except OSError:
        return "unknown"
    changed = sorted({d for d in dirty if "/" in d})
    return f"{head} + uncommitted changes to {', '.join(changed)}" if changed else head

#!/usr/bin/env python3
"""The fault matrix: the whole service, real processes only, through one fault at a time.

    .venv/bin/python bench/faults.py --short            # CI: 10 readers, 10 s outages, ~6 min
    .venv/bin/python bench/faults.py                    # the full matrix: 50 readers, ~1 hour
    .venv/bin/python bench/faults.py --short --database sqlite --scenario smtp-down

Everything runs on private parts this script starts and removes, even on Ctrl-C (never the
shared servers on 127.0.0.1:5432 and :6379): per run a redis-server, a PostgreSQL cluster of its
own (copied from one made with initdb, run as the `postgres` user when we are root: initdb
refuses root) that the run may restart, or an SQLite file (on a 64 MB tmpfs for disk-full), a
capture SMTP server (aiosmtpd, on a thread of this process) that keeps the To and Message-ID of
every message it accepts and can refuse, defer or bounce on demand, and the service itself:
`course web`, Celery workers (concurrency 2) and beat, with compressed course days. Runs have
nothing in common, so `--jobs` of them run at once (2 with --short, else 1).

Each run (one scenario on one database): the schema is migrated and the family guide published
(`course db upgrade`, `course lessons publish`, once per database kind, then copied), N readers
enroll and confirm through HTTP as a person would (POST /enroll, the link from the confirmation
email), the course runs, ONE fault is applied mid-course and cleared, and the run ends when the
database says every enrollment is completed (or unsubscribed / bounced where the scenario makes
it so) and nothing is pending, or at a deadline, which fails the run.

Scenarios (`--scenario NAME`):
  kill          SIGKILL a worker's process group at the moment one of its processes hands a
                message's data to the server (before the server answers: the worst moment),
                10 times, a new worker started each time
  sigterm       SIGTERM a worker's main process mid-batch (a deploy: Celery's warm shutdown), 3
                times, a new worker started each time; nothing may be sent twice
  redis         kill redis-server mid-course and start an empty one on the same port
  postgres      PostgreSQL stopped with `-m immediate`, down 2 minutes (--short: 10 s)
  smtp-down     the SMTP server closes its port (connections refused) for 5 minutes (10 s)
  451-storm     30% of messages answered 451 for a minute (10 s)
  550           every fifth reader's address answered 550 from mid-course on
  two-beats     two beats and three workers for the whole run (no fault)
  unsubscribe   every third reader clicks one-click unsubscribe (RFC 8058 POST) mid-course
  disk-full     SQLite only: a filler file takes all free space of the tmpfs under the database
                for a minute (10 s), then is removed

Columns:
  readers          readers enrolled and confirmed through HTTP
  lessons expected per reader: every lesson of the course except the conversation check-in
                   (lesson 13 goes only to readers who set a date); for a reader who bounced,
                   the lessons accepted before their first 550; for one who unsubscribed, the
                   lessons accepted before the unsubscribe POST was answered
  delivered        distinct lesson Message-IDs the SMTP server accepted for those readers
  lost             expected lessons never accepted
  sent twice       accepted copies of a lesson beyond the first
  allowed twice    the documented window: a message the server accepted whose "sent" write was
                   never committed, at most one per SMTP connection of a worker cut off with it
                   open: killed (kill), or with its database gone from under it
                   (postgres, disk-full: the write fails instead of the process); 0 elsewhere.
                   Checked per connection, not only in total: every copy of a lesson but the
                   last (an acceptance never recorded) must have come over a connection the
                   fault cut, at most one over each
  recover          "A / B": A is the time from the fault being cleared (for kill and sigterm:
                   applied) to the next lesson the server accepted; B the time until every
                   lesson that was due at that moment (a pending delivery, or an active
                   enrollment whose next lesson was due) had been accepted. kill and sigterm
                   show the worst of their rounds; "-" where nothing was cut off
  failed           deliveries `course deliveries failed` lists at the end (gave up after 12
                   temporary errors)
  notes            anything else seen: late lessons after an unsubscribe, errors in the logs,
                   a run cut short

Exits 1, naming the rows, if a lesson is lost, a duplicate falls outside the window, a reader
ends in the wrong state, a worker or beat dies unasked (it is started again, as a supervisor
would, and the run goes on; the shipped docker-compose.yml has no restart policy), or a run
times out or errs. The lease (COURSE_LEASE_SECONDS, 5 s), tick, course day (0.2 s with
--short, 0.5 s otherwise) and retry backoff (from 2 s with --short, the service's 60 s
otherwise) are printed above the table. Linux only (it reads /proc); root for the tmpfs.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course.cli.embedded_redis import free_port  # noqa: E402
from course.cli.table import print_table  # noqa: E402
from course.db import normalize_url  # noqa: E402
from course.models import (  # noqa: E402
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Lesson,
    Subscriber,
)

BIN = ROOT / ".venv" / "bin"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SEQUENCE = ROOT / "lessons" / "family-guide"
CONCURRENCY = 2
SEND_BATCH = 5  # small, so that ten readers' lessons spread over several processes
TERMINAL = {EnrollmentStatus.COMPLETED, EnrollmentStatus.UNSUBSCRIBED, EnrollmentStatus.BOUNCED}
LESSON_ID = re.compile(r"<lesson\.(\d+)\.(\d+)\.")

Key = tuple[int, int]  # (enrollment id, lesson position): one lesson for one reader
T = TypeVar("T")


class BenchError(Exception):
    """The bench could not do what a run needs (a part did not start, a deadline passed)."""


# Set on Ctrl-C or SIGTERM: every wait of every run gives up, and each run cleans up.
STOP = threading.Event()


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    every: float = 0.1,
    tick: Callable[[], None] | None = None,
) -> None:
    """Poll `predicate` until it holds; BenchError at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if STOP.is_set():
            raise BenchError(f"interrupted while waiting for {what}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        if tick is not None:
            tick()
        time.sleep(every)


# --- processes -------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_has(self, marker: str) -> bool:
        return self.log.exists() and marker in self.log.read_text(errors="replace")


def spawn(name: str, argv: list[str], *, env: dict[str, str], log: Path) -> Child:
    """Start a process in a session of its own (so a Ctrl-C in the terminal reaches only this
    script, which then stops it, and a kill can take its whole group)."""
    out = log.with_suffix(".out")
    with out.open("ab") as sink:
        popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Child(name, popen, log)


def stop(child: Child, *, timeout: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after `timeout`."""
    if child.alive():
        with suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout)
    # Whatever is left of the group (a pool process whose parent was SIGKILLed, say).
    with suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        child.popen.wait(5)


def as_user(argv: list[str], user: str) -> list[str]:
    # initdb and pg_ctl refuse to run as root: as root, run them as the cluster's owner.
    return ["runuser", "-u", user, "--", *argv] if os.geteuid() == 0 else argv


def run_quietly(argv: list[str], *, env: dict[str, str] | None = None, what: str) -> str:
    done = subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, start_new_session=True
    )
    if done.returncode != 0:
        raise BenchError(f"{what} failed ({done.returncode}): {done.stdout}{done.stderr}".strip())
    return done.stdout


# --- /proc: which process holds a connection to the SMTP server --------------------------------


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def smtp_sockets(smtp_port: int) -> dict[int, int]:
    """socket inode -> local port, for every established TCP connection to 127.0.0.1:smtp_port."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
        if state == "01" and int(remote.split(":")[1], 16) == smtp_port:
            found[inode] = int(local.split(":")[1], 16)
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def smtp_ports_of(pid: int, smtp_port: int) -> set[int]:
    """Local ports of the connections `pid` holds to the SMTP server."""
    sockets = smtp_sockets(smtp_port)
    return {sockets[i] for i in socket_inodes(pid) if i in sockets}


# --- private servers ---------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this run's own, nothing on disk; restartable empty on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(self.dir)),
        ]
        self.child = spawn("redis", argv, env=dict(os.environ), log=self.dir / "redis.log")
        wait_for(self._answers, timeout=10, what=f"redis-server on port {self.port}", every=0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.child is not None:
            os.killpg(self.child.pid, signal.SIGKILL)
            self.child.popen.wait(10)

    def close(self) -> None:
        if self.child is not None:
            stop(self.child, timeout=5)


class PrivatePostgres:
    """A PostgreSQL cluster of the bench's own in a temp dir, restartable: made once with initdb
    (the template, migrated and published), then copied for each run, so that a run can stop
    its cluster without touching another run's."""

    def __init__(self) -> None:
        # A directory of its own, not under the bench's (mkdtemp makes that 0700, which the
        # postgres user could not traverse).
        self.root = Path(tempfile.mkdtemp(prefix="homeward-faults-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.port = free_port()
        self.running = False

    def url(self, database: str = "homeward") -> str:
        # The Unix socket, as the README recommends for a database on the same machine.
        return f"postgresql://postgres@/{database}?host={self.sockets}&port={self.port}"

    def _own(self) -> None:
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            # initdb and pg_ctl refuse root: the cluster belongs to the postgres OS user, who
            # must own (and so be able to reach) its directories.
            for path in (self.root, self.sockets):
                shutil.chown(path, "postgres", "postgres")

    def init(self) -> None:
        self._own()
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        # --no-sync: a throwaway cluster need not survive a power cut while it is created.
        run_quietly(as_user([*initdb, "--no-sync"], "postgres"), what="initdb")
        self.start()
        self.execute("CREATE DATABASE homeward")

    @classmethod
    def copy_of(cls, template: PrivatePostgres) -> PrivatePostgres:
        """A cluster of its own with the template's data (stopped cleanly, so a plain copy)."""
        pg = cls()
        # cp -a keeps the owner (postgres) and the 0700 mode PostgreSQL insists on.
        run_quietly(["cp", "-a", str(template.data), str(pg.data)], what="copying the cluster")
        pg._own()
        pg.start()
        return pg

    def _ctl(self, *args: str) -> None:
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log")]
        run_quietly(as_user([*argv, *args], "postgres"), what=f"pg_ctl {args[-1]}")

    def start(self) -> None:
        self._ctl(
            "-o", f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1", "-w", "start"
        )
        self.running = True

    def stop(self, *, mode: str = "immediate") -> None:
        self._ctl("-m", mode, "-w", "stop")
        self.running = False

    def execute(self, statement: str) -> None:
        import psycopg

        conninfo = f"host={self.sockets} port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement.encode())

    def close(self) -> None:
        if self.running:
            with suppress(BenchError):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def tmpfs(path: Path, *, size: str = "64m") -> Iterator[bool]:
    """A small tmpfs mounted on `path` while the block runs; False if it cannot be mounted."""
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted and subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach


def fill(directory: Path) -> Path:
    """A file taking every free byte of the file system under `directory`."""
    filler = directory / "filler"
    stat = os.statvfs(directory)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with suppress(OSError):
            os.posix_fallocate(fd, 0, stat.f_bavail * stat.f_frsize)
        with suppress(OSError):  # whatever fallocate left: zeros until ENOSPC (unbuffered)
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


# --- the capture SMTP server -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    at: float  # time.monotonic() when the server accepted it
    client_port: int  # names the connection it came over (one per worker process)
    to: str
    message_id: str
    raw: bytes

    @property
    def lesson(self) -> Key | None:
        found = LESSON_ID.match(self.message_id)
        return (int(found.group(1)), int(found.group(2))) if found else None


class CaptureSmtp:
    """A real SMTP server (aiosmtpd, on a thread of this process) that keeps every message it
    accepts and, on demand, is down, defers a share of messages (451) or refuses addresses (550).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.accepted: list[Accepted] = []
        self.refuse: frozenset[str] = frozenset()
        self.first_refused: dict[str, float] = {}
        self.defer_share = 0.0
        self.deferred = 0
        # Called with the client's port as a message's data arrives, before it is accepted.
        self.on_data: Callable[[int], None] | None = None
        self._random = random.Random(451)
        self._controller: Any = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Close the port and drop every connection: clients now get "connection refused"."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_RCPT(  # noqa: PLR0917 (aiosmtpd calls hooks positionally)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            with self.lock:
                self.first_refused.setdefault(address, time.monotonic())
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.defer_share and self._random.random() < self.defer_share:
            self.deferred += 1
            return "451 4.3.0 Try again later"
        hook = self.on_data
        if hook is not None:
            hook(int(session.peer[1]))
        raw = bytes(envelope.original_content or envelope.content)
        head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        found = re.search(r"^Message-ID:\s*(\S+)", head, re.M | re.I)
        accepted = Accepted(
            time.monotonic(),
            int(session.peer[1]),
            envelope.rcpt_tos[0],
            found.group(1) if found else "",
            raw,
        )
        with self.lock:
            self.accepted.append(accepted)
        return "250 OK"

    def snapshot(self) -> list[Accepted]:
        with self.lock:
            return list(self.accepted)

    def lessons(self) -> int:
        """Distinct lessons accepted so far."""
        return len({a.message_id for a in self.snapshot() if a.lesson is not None})

    def latest(self, to: str, *, prefix: str) -> Accepted | None:
        mine = [a for a in self.snapshot() if a.to == to and a.message_id.startswith(prefix)]
        return mine[-1] if mine else None


def text_part(raw: bytes) -> str:
    message = message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


def unsubscribe_url(raw: bytes) -> str:
    message = message_from_bytes(raw, policy=default_policy)
    found = re.search(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))
    if not found:
        raise BenchError("a lesson without an http(s) List-Unsubscribe target")
    return found.group(1)


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    readers: int
    day_seconds: float
    tick_seconds: float
    lease_seconds: int
    retry_base_seconds: int
    kills: int
    terms: int
    outages: dict[str, float]  # scenario -> seconds the fault lasts

    @classmethod
    def of(cls, args: argparse.Namespace) -> Config:
        short = bool(args.short)
        outages: dict[str, float]
        if short:
            outages = dict.fromkeys(("postgres", "smtp-down", "451-storm", "disk-full"), 10.0)
        else:
            outages = {"postgres": 120, "smtp-down": 300, "451-storm": 60, "disk-full": 60}
        return cls(
            readers=args.readers or (10 if short else 50),
            day_seconds=args.day_seconds or (0.2 if short else 0.5),
            tick_seconds=args.tick_seconds,
            lease_seconds=args.lease_seconds,
            # Short: backoff from 2 s, so a 10 s outage is not followed by a minute's wait;
            # full: the service's own default.
            retry_base_seconds=args.retry_base_seconds or (2 if short else 60),
            kills=args.kills,
            terms=args.terms,
            outages=outages,
        )

    def service_env(
        self, *, database_url: str, redis_url: str, smtp_port: int, web_port: int
    ) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
        return {
            **inherited,
            "COURSE_DATABASE_URL": database_url,
            "COURSE_REDIS_URL": redis_url,
            "COURSE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}?timeout=10",
            "COURSE_BASE_URL": f"http://127.0.0.1:{web_port}",
            "COURSE_SECRET_KEY": "faults-bench-secret-key-0123456789",
            "COURSE_POSTAL_ADDRESS": "Homeward, 1 Bench Street",
            "COURSE_DAY_SECONDS": str(self.day_seconds),
            "COURSE_TICK_SECONDS": str(self.tick_seconds),
            "COURSE_LEASE_SECONDS": str(self.lease_seconds),
            "COURSE_RETRY_BASE_SECONDS": str(self.retry_base_seconds),
            "COURSE_SEND_BATCH": str(SEND_BATCH),
            # Every reader signs up from this one client address.
            "COURSE_SIGNUP_RATE": "100000/minute",
        }


@dataclass(frozen=True)
class Course:
    """What the published course means for a reader who set no date."""

    positions: frozenset[int]
    days: int  # course days from the first lesson to the last

    def seconds(self, config: Config) -> float:
        # The lessons' delays, plus up to a tick and a send for each lesson.
        return self.days * config.day_seconds + len(self.positions) * (config.tick_seconds + 0.2)


# --- the service under test --------------------------------------------------------------------


class Service:
    """The web app, workers and beats of one run, all real processes."""

    def __init__(self, *, env: dict[str, str], logs: Path, web_port: int) -> None:
        self.env = env
        self.logs = logs
        self.web_port = web_port
        # The capture server's thread takes a signalled worker off this list: under the lock.
        self.lock = threading.Lock()
        self.workers: dict[str, Child] = {}  # running, and meant to be
        self.beats: dict[str, Child] = {}
        self.started: list[Child] = []
        self._count = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def cli(self, *args: str) -> str:
        return run_quietly([str(BIN / "course"), *args], env=self.env, what=f"course {args[0]}")

    def start_web(self) -> Child:
        argv = [str(BIN / "course"), "web", "--host", "127.0.0.1", "--port", str(self.web_port)]
        child = spawn("web", argv, env=self.env, log=self.logs / "web.log")
        self.started.append(child)
        return child

    def start_worker(self) -> Child:
        self._count += 1
        name = f"w{self._count}"
        log = self.logs / f"worker-{name}.log"
        argv = [
            *(str(BIN / "celery"), "-A", "worker", "worker", f"--concurrency={CONCURRENCY}"),
            *("-n", f"{name}@%h", "--without-mingle", "--without-gossip"),
            *("--loglevel=INFO", f"--logfile={log}"),
        ]
        child = spawn(name, argv, env=self.env, log=log)
        self.started.append(child)
        with self.lock:
            self.workers[name] = child
        return child

    def start_beat(self, name: str) -> Child:
        log = self.logs / f"beat-{name}.log"
        argv = [
            *(str(BIN / "celery"), "-A", "worker", "beat"),
            *("--schedule", str(self.logs / f"beat-{name}.schedule")),
            *("--loglevel=INFO", f"--logfile={log}"),
        ]
        child = spawn(name, argv, env=self.env, log=log)
        self.started.append(child)
        self.beats[name] = child
        return child

    def supervise(self) -> list[str]:
        """Start again any worker or beat that exited on its own, as systemd's Restart= or
        compose's restart: would (the shipped docker-compose.yml sets no restart policy, so
        there nothing would). Returns what happened, with the last fatal line of each log."""
        happened = []
        with self.lock:
            everyone = [*self.workers.items(), *self.beats.items()]
        for name, child in everyone:
            if child.alive():
                continue
            fatal = [
                line for line in self.lines_of(child) if re.search(r"CRITICAL|Unrecoverable", line)
            ]
            why = fatal[-1][:200] if fatal else f"exit status {child.popen.returncode}"
            happened.append(f"{name} exited on its own ({why}); started again")
            if name in self.workers:
                with self.lock:
                    self.workers.pop(name, None)
                self.start_worker()
            else:
                del self.beats[name]
                self.start_beat(f"{name}r")
        return happened

    def lines_of(self, child: Child) -> list[str]:
        lines = []
        for log in (child.log, child.log.with_suffix(".out")):
            if log.exists():
                lines += log.read_text(errors="replace").splitlines()
        return lines

    def wait_ready(self, children: list[Child], *, timeout: float = 90) -> None:
        def ready(child: Child) -> bool:
            if not child.alive():
                tail = child.log.with_suffix(".out").read_text(errors="replace")[-2000:]
                raise BenchError(f"{child.name} exited ({child.popen.returncode}): {tail}")
            if child.name == "web":
                with suppress(httpx.HTTPError):
                    return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
                return False
            return child.log_has("ready." if child.name.startswith("w") else "beat: Starting")

        for child in children:
            wait_for(partial(ready, child), timeout=timeout, what=f"{child.name} to be ready")

    def owner_of(self, client_port: int, smtp_port: int) -> Child | None:
        """The worker one of whose processes holds the SMTP connection from `client_port`."""
        with self.lock:
            workers = list(self.workers.values())
        for child in workers:
            for pid in group_pids(child.pid):
                if client_port in smtp_ports_of(pid, smtp_port):
                    return child
        return None

    def connections(self, child: Child, smtp_port: int) -> set[int]:
        """The client ports of the connections a worker's processes hold to the SMTP server."""
        return {port for pid in group_pids(child.pid) for port in smtp_ports_of(pid, smtp_port)}

    def stop(self) -> None:
        for child in self.started:
            with suppress(ProcessLookupError):
                if child.alive():
                    os.killpg(child.pid, signal.SIGTERM)
        for child in self.started:
            stop(child)

    def log_lines(self, pattern: str) -> list[str]:
        found = []
        for log in sorted(self.logs.glob("*.log")) + sorted(self.logs.glob("*.out")):
            found += [
                line
                for line in log.read_text(errors="replace").splitlines()
                if re.search(pattern, line)
            ]
        return found


# --- the database, as the bench reads it -------------------------------------------------------


class Probe:
    """Plain reads (no write lock on SQLite) of the run's database."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(normalize_url(url), pool_pre_ping=True)

    def statuses(self) -> Counter[str] | None:
        """Enrollments by status, or None while the database does not answer."""
        stmt = select(col(Enrollment.status), func.count()).group_by(col(Enrollment.status))
        try:
            with self.engine.connect() as conn:
                return Counter({s: n for s, n in conn.execute(stmt).all()})
        except SQLAlchemyError:
            return None

    def pending(self) -> int | None:
        stmt = select(func.count()).where(col(Delivery.status) == DeliveryStatus.PENDING)
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())
        except SQLAlchemyError:
            return None

    def backlog(self) -> frozenset[Key]:
        """Lessons due now: pending lesson deliveries, and active enrollments whose next lesson
        is due but has no delivery row yet."""
        now = datetime.now(UTC)
        rows = select(col(Delivery.enrollment_id), col(Delivery.position)).where(
            col(Delivery.status) == DeliveryStatus.PENDING,
            col(Delivery.kind) == DeliveryKind.LESSON,
        )
        due = select(col(Enrollment.id), col(Enrollment.next_position)).where(
            col(Enrollment.status) == EnrollmentStatus.ACTIVE, col(Enrollment.next_due_at) <= now
        )
        with self.engine.connect() as conn:
            return frozenset((int(e), int(p)) for e, p in [*conn.execute(rows), *conn.execute(due)])

    def readers(self) -> dict[str, tuple[int, str]]:
        """email -> (enrollment id, status)."""
        stmt = select(col(Subscriber.email), col(Enrollment.id), col(Enrollment.status)).join(
            Enrollment, col(Enrollment.subscriber_id) == col(Subscriber.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return {email: (eid, status) for email, eid, status in rows if eid is not None}

    def sent_lessons(self) -> int:
        stmt = select(func.count()).where(
            col(Delivery.status) == DeliveryStatus.SENT, col(Delivery.kind) == DeliveryKind.LESSON
        )
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def course(self) -> Course:
        # No reader here sets a conversation date, so the day-after check-in is not theirs.
        stmt = select(col(Lesson.position), col(Lesson.delay_days), col(Lesson.anchor))
        with self.engine.connect() as conn:
            lessons = [
                (p, d) for p, d, anchor in conn.execute(stmt) if anchor != "after:conversation"
            ]
        return Course(frozenset(p for p, _ in lessons), sum(d for _, d in lessons))

    def close(self) -> None:
        self.engine.dispose()


def backlog_when_up(probe: Probe, *, timeout: float) -> frozenset[Key]:
    """The backlog, as soon as the database answers again (after a restart)."""
    found: list[frozenset[Key]] = []

    def read() -> bool:
        with suppress(SQLAlchemyError):
            found.append(probe.backlog())
        return bool(found)

    wait_for(read, timeout=timeout, what="the database to answer", every=0.2)
    return found[0]


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Fault:
    """What a scenario did, for the tally."""

    # The window: the SMTP connections (client ports) of the worker processes the fault cut
    # off, by a kill or by their database going away; at most one duplicate over each.
    cut: set[int] = field(default_factory=set)
    # When each cut happened and what it cut, for duplicates.txt.
    cuts: list[tuple[float, str, set[int]]] = field(default_factory=list)
    # Moments to measure recovery from, each with the lessons that were due then.
    marks: list[tuple[float, frozenset[Key]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unsubscribed: dict[str, float] = field(default_factory=dict)  # email -> POST answered at
    bounced: frozenset[str] = frozenset()
    recovers: bool = True
    exited: list[str] = field(default_factory=list)  # processes that died unasked


@dataclass
class Run:
    scenario: Scenario
    database: str
    config: Config
    course: Course
    capture: CaptureSmtp
    redis: PrivateRedis
    service: Service
    probe: Probe
    emails: list[str]
    pg: PrivatePostgres | None
    data_dir: Path
    show: Callable[[str], None]
    fault: Fault = field(default_factory=Fault)

    @property
    def total(self) -> int:
        return len(self.emails) * len(self.course.positions)

    def progress(self, phase: str) -> None:
        self.fault.exited += self.service.supervise()
        self.show(f"{phase}: {self.capture.lessons()}/{self.total} lessons")

    def wait_lessons(self, count: float, *, what: str = "the course to get under way") -> None:
        wait_for(
            lambda: self.capture.lessons() >= count,
            timeout=60 + 3 * self.course.seconds(self.config),
            what=what,
            tick=lambda: self.progress("course"),
        )

    def mid_course(self) -> None:
        self.wait_lessons(0.35 * self.total)

    def mark(self, at: float) -> None:
        self.fault.marks.append((at, self.probe.backlog()))

    def hold(self, seconds: float, phase: str) -> None:
        """Keep the fault on for its duration (a fault's length, not a wait for anything)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not STOP.is_set():
            self.progress(f"{phase}, {left:.0f} s left")
            time.sleep(min(left, 0.5))


# --- the scenarios -----------------------------------------------------------------------------


def while_sending(run: Run, action: Callable[[int], T | None], *, what: str) -> T:
    """Run `action` on the capture server's thread as a message's data arrives, before the
    server answers it: a burst is under way then, and the server waits for the action (a burst
    of ten readers is over before a poll from this thread could notice it). `action` gets the
    client's port and returns None to let the message pass and wait for the next one."""
    done = threading.Event()
    result: list[T] = []

    def on_data(client_port: int) -> None:
        if done.is_set():
            return
        answer = action(client_port)
        if answer is not None:
            run.capture.on_data = None
            result.append(answer)
            done.set()

    run.capture.on_data = on_data
    try:
        wait_for(
            done.is_set,
            timeout=60 + 2 * run.course.seconds(run.config),
            what=f"a message in flight, to {what}",
            tick=lambda: run.progress(f"waiting to {what}"),
        )
    finally:
        run.capture.on_data = None
    return result[0]


@dataclass(frozen=True)
class Signalled:
    at: float
    worker: Child
    cut: set[int]  # the SMTP connections its processes held (client ports)
    due: frozenset[Key]


def signal_sender(run: Run, *, sig: signal.Signals) -> Signalled:
    """At the next message a worker hands over, signal that worker: SIGKILL its whole group,
    before the server answers; SIGTERM its main process, as a deploy would."""
    port = run.capture.port

    def send_signal(client_port: int) -> Signalled | None:
        child = run.service.owner_of(client_port, port)
        if child is None:
            return None
        at, due = time.monotonic(), run.probe.backlog()
        cut = run.service.connections(child, port)
        with run.service.lock:  # meant to stop: not one for the supervisor
            run.service.workers.pop(child.name, None)
        if sig == signal.SIGKILL:
            os.killpg(child.pid, signal.SIGKILL)
        else:
            os.kill(child.pid, sig)
        return Signalled(at, child, cut, due)

    return while_sending(run, send_signal, what=sig.name)


def sending_connections(run: Run) -> set[int]:
    """The SMTP connections of every worker process: over each, one accepted message may be
    waiting for the "sent" write a fault is about to cut off."""
    with run.service.lock:
        workers = list(run.service.workers.values())
    return {p for c in workers for p in run.service.connections(c, run.capture.port)}


def kill_workers(run: Run) -> None:
    run.wait_lessons(0.15 * run.total)
    step = max(3, len(run.emails) // 2)  # spread the kills over the course
    for n in range(run.config.kills):
        killed = signal_sender(run, sig=signal.SIGKILL)
        run.fault.cut |= killed.cut
        run.fault.cuts.append((killed.at, f"SIGKILL {killed.worker.name}", killed.cut))
        run.fault.marks.append((killed.at, killed.due))
        killed.worker.popen.wait(10)
        run.service.start_worker()
        run.progress(f"killed {n + 1}/{run.config.kills}")
        if n + 1 < run.config.kills:
            run.wait_lessons(run.capture.lessons() + step, what="lessons after a kill")


def terminate_workers(run: Run) -> None:
    run.wait_lessons(0.15 * run.total)
    step = max(3, len(run.emails) // 2)
    for n in range(run.config.terms):
        termed = signal_sender(run, sig=signal.SIGTERM)
        child = termed.worker
        run.fault.marks.append((termed.at, termed.due))
        run.service.start_worker()  # the new release starts while the old one finishes
        wait_for(
            lambda: not child.alive(),  # noqa: B023 (called before the loop moves on)
            timeout=30 + run.config.lease_seconds,
            what=f"{child.name} to finish its warm shutdown",
            tick=lambda: run.progress("warm shutdown"),
        )
        run.fault.notes.append(f"{child.name} exited {child.popen.returncode} after SIGTERM")
        if n + 1 < run.config.terms:
            run.wait_lessons(run.capture.lessons() + step, what="lessons after a SIGTERM")


def restart_redis(run: Run) -> None:
    run.mid_course()

    def kill(_port: int) -> frozenset[Key]:
        due = run.probe.backlog()
        run.redis.kill()  # with it, every queued and unacknowledged task
        return due

    due = while_sending(run, kill, what="kill Redis")
    run.redis.start()  # same port, empty
    run.fault.marks.append((time.monotonic(), due))


def restart_postgres(run: Run) -> None:
    assert run.pg is not None
    pg = run.pg
    run.mid_course()

    def stop(_port: int) -> set[int]:
        # A commit cut off by the stop leaves an accepted message unrecorded, as a kill does.
        cut = sending_connections(run)
        pg.stop()
        return cut

    run.fault.cut = while_sending(run, stop, what="stop PostgreSQL")
    run.fault.cuts.append((time.monotonic(), "PostgreSQL stopped", run.fault.cut))
    run.hold(run.config.outages["postgres"], "PostgreSQL down")
    run.pg.start()
    at = time.monotonic()
    run.fault.marks.append((at, backlog_when_up(run.probe, timeout=60)))


def smtp_down(run: Run) -> None:
    run.mid_course()
    # Stopped from this thread (the server cannot stop itself from its own), at once after a
    # message arrived, so that the drop lands in a burst.
    arrived = threading.Event()
    run.capture.on_data = lambda _port: arrived.set()
    deadline = time.monotonic() + 60 + 2 * run.course.seconds(run.config)
    while not arrived.wait(0.5):  # wakes the moment it is set, unlike a poll
        if STOP.is_set() or time.monotonic() > deadline:
            raise BenchError("timed out waiting for a message in flight, to stop SMTP")
        run.progress("waiting for a burst to cut")
    run.capture.on_data = None
    run.capture.stop()
    run.hold(run.config.outages["smtp-down"], "SMTP down")
    run.capture.start()
    run.mark(time.monotonic())


def defer_storm(run: Run) -> None:
    run.mid_course()
    run.capture.defer_share = 0.3
    run.hold(run.config.outages["451-storm"], "451 storm")
    run.capture.defer_share = 0.0
    run.mark(time.monotonic())
    run.fault.notes.append(f"{run.capture.deferred} messages answered 451")


def bounce_some(run: Run) -> None:
    run.fault.recovers = False
    run.mid_course()
    chosen = frozenset(run.emails[::5])
    run.fault.bounced = chosen
    run.capture.refuse = chosen


def two_beats(run: Run) -> None:
    run.fault.recovers = False  # nothing to recover from: the run itself is the test


def unsubscribe_some(run: Run) -> None:
    run.fault.recovers = False
    run.mid_course()
    with httpx.Client(timeout=30) as client:
        for email in run.emails[::3]:
            latest = run.capture.latest(email, prefix="<lesson.")
            if latest is None:
                raise BenchError(f"{email} has no lesson to unsubscribe from")
            answer = client.post(
                unsubscribe_url(latest.raw), data={"List-Unsubscribe": "One-Click"}
            )
            if answer.status_code != 200:
                raise BenchError(f"one-click unsubscribe answered {answer.status_code}")
            run.fault.unsubscribed[email] = time.monotonic()


def disk_full(run: Run) -> None:
    run.mid_course()

    def full(_port: int) -> set[int]:
        # A "sent" write that fails for want of space leaves an accepted message unrecorded.
        cut = sending_connections(run)
        fill(run.data_dir)
        return cut

    run.fault.cut = while_sending(run, full, what="fill the disk")
    run.fault.cuts.append((time.monotonic(), "disk filled", run.fault.cut))
    filler = run.data_dir / "filler"
    free = os.statvfs(run.data_dir).f_bavail
    run.hold(run.config.outages["disk-full"], f"disk full ({free} blocks free)")
    filler.unlink()
    run.mark(time.monotonic())
    errors = run.service.log_lines(r"database or disk is full")
    run.fault.notes.append(f"{len(errors)} 'database or disk is full' log lines")


@dataclass(frozen=True)
class Scenario:
    name: str
    apply: Callable[[Run], None]
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    workers: int = 2
    beats: int = 1
    on_tmpfs: bool = False


SCENARIOS = [
    Scenario("kill", kill_workers),
    Scenario("sigterm", terminate_workers),
    Scenario("redis", restart_redis),
    Scenario("postgres", restart_postgres, databases=("postgresql",)),
    Scenario("smtp-down", smtp_down),
    Scenario("451-storm", defer_storm),
    Scenario("550", bounce_some),
    Scenario("two-beats", two_beats, workers=3, beats=2),
    Scenario("unsubscribe", unsubscribe_some),
    Scenario("disk-full", disk_full, databases=("sqlite",), on_tmpfs=True),
]


# --- counting ----------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    database: str
    readers: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    twice: int = 0
    allowed: int = 0
    recover: str = "-"
    failed: str = "-"
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds each phase took
    skipped: bool = False

    def cells(self) -> list[str]:
        if self.skipped:
            return [self.scenario, self.database, *["-"] * 8, "; ".join(self.notes)]
        numbers = (self.readers, self.expected, self.delivered, self.lost, self.twice, self.allowed)
        notes = "; ".join([*self.problems, *self.notes])
        return [self.scenario, self.database, *map(str, numbers), self.recover, self.failed, notes]


HEADERS = [
    "scenario",
    "database",
    "readers",
    "lessons expected",
    "delivered",
    "lost",
    "sent twice",
    "allowed twice",
    "recover (s)",
    "failed",
    "notes",
]


def recovery(marks: list[tuple[float, frozenset[Key]]], accepted: list[Accepted]) -> str:
    """The worst "next lesson / whole backlog" over the marks (see the module docstring)."""
    lessons = [(a.at, a.lesson) for a in accepted if a.lesson is not None]
    worst_next, worst_all = 0.0, None
    for at, due in marks:
        after = [t for t, _ in lessons if t >= at]
        if not after:
            return "never"
        worst_next = max(worst_next, after[0] - at)
        for key in due:
            later = [t for t, k in lessons if k == key and t >= at]
            if later:
                worst_all = max(worst_all or 0.0, later[0] - at)
    # "-": nothing was due at any mark.
    return f"{worst_next:.1f} / " + ("-" if worst_all is None else f"{worst_all:.1f}")


def tally(run: Run, row: Row) -> None:
    accepted = run.capture.snapshot()
    readers = run.probe.readers()
    copies: Counter[Key] = Counter()
    got: dict[int, dict[int, float]] = {}  # enrollment -> position -> first accepted at
    for message in accepted:
        if (key := message.lesson) is not None:
            copies[key] += 1
            got.setdefault(key[0], {}).setdefault(key[1], message.at)
    row.readers = len(run.emails)
    late: list[float] = []
    ended: Counter[str] = Counter()
    missing = [email for email in run.emails if email not in readers]
    if missing:
        row.problems.append(f"{len(missing)} readers have no enrollment")
        row.expected += len(missing) * len(run.course.positions)
        row.lost += len(missing) * len(run.course.positions)
    for email in run.emails:
        if email in missing:
            continue
        enrollment_id, status = readers[email]
        theirs = got.get(enrollment_id, {})
        expected, want = set(run.course.positions), EnrollmentStatus.COMPLETED.value
        if email in run.fault.bounced:
            cut = run.capture.first_refused.get(email, float("inf"))
            expected, want = {p for p, t in theirs.items() if t < cut}, EnrollmentStatus.BOUNCED
        elif email in run.fault.unsubscribed:
            cut = run.fault.unsubscribed[email]
            expected, want = (
                {p for p, t in theirs.items() if t <= cut},
                EnrollmentStatus.UNSUBSCRIBED,
            )
            late += [t - cut for p, t in theirs.items() if t > cut]
        row.expected += len(expected)
        row.delivered += len(theirs)
        row.lost += len(expected - set(theirs))
        extra = set(theirs) - expected
        if extra and email not in run.fault.unsubscribed:
            row.problems.append(f"{email} got lessons {sorted(extra)} not meant for them")
        if status != want:
            ended[f"ended {status}, not {want}"] += 1
    row.problems += [f"{n} readers {what}" for what, n in ended.items()]
    row.twice = sum(n - 1 for n in copies.values())
    row.allowed = len(run.fault.cut)
    outside = outside_window(accepted, run.fault.cut)
    if outside:
        row.problems.append(f"{outside} duplicates outside the window")
    if row.twice:
        write_duplicates(run, accepted, copies)
    row.notes += run.fault.notes
    row.problems += run.fault.exited
    if run.fault.unsubscribed:
        worst = f", the latest {max(late):.2f} s after" if late else ""
        row.notes.append(f"{len(late)} lessons accepted after their reader's unsubscribe{worst}")
        if len(late) > len(run.fault.unsubscribed):
            row.problems.append("more than one lesson after an unsubscribe")
    if row.lost:
        row.problems.append(f"{row.lost} lessons lost")
    if row.twice > row.allowed:
        row.problems.append(f"{row.twice} sent twice, window {row.allowed}")
    recorded = run.probe.sent_lessons()
    if recorded != row.delivered:
        row.notes.append(f"{recorded} lesson rows marked sent")
    if run.fault.recovers:
        row.recover = recovery(run.fault.marks, accepted)


def write_duplicates(run: Run, accepted: list[Accepted], copies: Counter[Key]) -> None:
    """logs/duplicates.txt: every copy of every lesson sent twice, and every cut, on one clock
    (seconds since the first message), to tell a duplicate the window explains from one it
    does not."""
    zero = accepted[0].at
    lines = [f"{at - zero:9.3f}  {what}: cut {sorted(ports)}" for at, what, ports in run.fault.cuts]
    for key in (k for k, n in copies.items() if n > 1):
        for a in (a for a in accepted if a.lesson == key):
            lines.append(f"{a.at - zero:9.3f}  {a.message_id} to {a.to} over :{a.client_port}")
    (run.service.logs / "duplicates.txt").write_text("\n".join(sorted(lines)) + "\n")


def outside_window(accepted: list[Accepted], cut: set[int]) -> int:
    """Duplicates the window does not explain. Every copy of a lesson but the last is an
    acceptance the service never recorded: each must have come over a connection the fault cut,
    and each cut connection explains one at most (its process died or lost its database right
    then). A lesson may be cut twice: sent again, and the new sender killed mid-message too."""
    copies: dict[Key, list[Accepted]] = {}
    for a in accepted:
        if (key := a.lesson) is not None:
            copies.setdefault(key, []).append(a)
    unrecorded = Counter(a.client_port for sent in copies.values() for a in sent[:-1])
    return sum(n if port not in cut else n - 1 for port, n in unrecorded.items())


def failed_deliveries(service: Service) -> str:
    """What `course deliveries failed` lists: "0", or the count and the reasons."""
    out = service.cli("deliveries", "failed")
    if "No failed deliveries" in out:
        return "0"
    rows = [line.split(None, 1) for line in out.splitlines()[2:] if line[:1].isdigit()]
    return (
        str(sum(int(n) for n, *_ in rows))
        + " ("
        + "; ".join(r[1] for r in rows if len(r) > 1)
        + ")"
    )


# --- running it --------------------------------------------------------------------------------


@dataclass
class Shared:
    """What every run uses: the work dir, settings, and a template database of each kind."""

    workdir: Path
    config: Config
    keep_logs: Path | None = None
    pg_template: PrivatePostgres | None = None
    sqlite_template: Path | None = None
    courses: dict[str, Course] = field(default_factory=dict)

    def prepare(self, database: str) -> None:
        """Migrate and publish once per kind (publishing checks every lesson, ~8 s); each run
        gets a copy."""
        if database == "postgresql":
            self.pg_template = PrivatePostgres()
            self.pg_template.init()
            url = self.pg_template.url()
        else:
            self.sqlite_template = self.workdir / "template.db"
            url = f"sqlite:///{self.sqlite_template}"
        env = self.config.service_env(
            database_url=url, redis_url="redis://127.0.0.1:1/0", smtp_port=1, web_port=1
        )
        service = Service(env=env, logs=self.workdir, web_port=1)
        service.cli("db", "upgrade")
        service.cli("lessons", "publish", str(SEQUENCE))
        probe = Probe(url)
        self.courses[database] = probe.course()
        probe.close()
        if self.pg_template is not None and database == "postgresql":
            self.pg_template.stop(mode="fast")  # a clean stop: its files can be copied as they are

    def fresh_database(
        self, database: str, directory: Path, stack: ExitStack
    ) -> tuple[str, PrivatePostgres | None]:
        if database == "postgresql":
            assert self.pg_template is not None
            pg = PrivatePostgres.copy_of(self.pg_template)
            stack.callback(pg.close)
            return pg.url(), pg
        assert self.sqlite_template is not None
        target = directory / "homeward.db"
        with sqlite3.connect(self.sqlite_template) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return f"sqlite:///{target}", None

    def close(self) -> None:
        if self.pg_template is not None:
            self.pg_template.close()


def enroll_and_confirm(run: Run) -> None:
    """Every reader signs up and clicks the link in their confirmation email, over HTTP."""
    base = run.service.url
    with httpx.Client(base_url=base, timeout=30) as client:
        for email in run.emails:
            answer = client.post("/enroll", json={"email": email})
            if answer.status_code != 202:
                raise BenchError(f"POST /enroll answered {answer.status_code}: {answer.text[:200]}")
        pending = set(run.emails)

        def confirm_arrived() -> bool:
            for email in sorted(pending):
                found = run.capture.latest(email, prefix="<confirm.")
                if found is None:
                    continue
                link = re.search(rf"{re.escape(base)}(/confirm/[\w.\-]+)", text_part(found.raw))
                if not link:
                    raise BenchError(f"no confirmation link in the email to {email}")
                answer = client.get(link.group(1))
                if answer.status_code != 200:
                    raise BenchError(f"GET {link.group(1)} answered {answer.status_code}")
                pending.discard(email)
            run.show(f"confirming: {len(run.emails) - len(pending)}/{len(run.emails)}")
            return not pending

        wait_for(confirm_arrived, timeout=60, what="every confirmation email", every=0.2)


def wait_for_the_end(run: Run) -> None:
    """Until every enrollment has ended and nothing is pending, by the database."""
    config = run.config
    timeout = 60 + 3 * run.course.seconds(config) + 2 * max(config.outages.values())
    timeout += 8 * config.retry_base_seconds + config.kills * config.lease_seconds

    def ended() -> bool:
        statuses = run.probe.statuses()
        if statuses is None or set(statuses) - TERMINAL:
            return False
        return run.probe.pending() == 0

    wait_for(
        ended,
        timeout=timeout,
        what="every enrollment to end",
        every=0.25,
        tick=lambda: run.progress("finishing"),
    )


def set_up(
    scenario: Scenario,
    database: str,
    *,
    shared: Shared,
    stack: ExitStack,
    show: Callable[[str], None],
) -> Run | None:
    """Every part of one run, each stopped and removed by `stack`; None if the run cannot be
    done here (no tmpfs)."""
    directory = Path(tempfile.mkdtemp(prefix=f"{scenario.name}-{database}-", dir=shared.workdir))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    logs = directory / "logs"
    logs.mkdir()
    if shared.keep_logs is not None:  # copied last thing, once every process has stopped
        kept = shared.keep_logs / f"{scenario.name}-{database}"
        stack.callback(shutil.copytree, logs, kept, dirs_exist_ok=True)
    data_dir = directory / "data"
    data_dir.mkdir()
    if scenario.on_tmpfs and not stack.enter_context(tmpfs(data_dir)):
        return None
    url, pg = shared.fresh_database(database, data_dir, stack)
    redis = PrivateRedis(directory)
    stack.callback(redis.close)
    redis.start()
    capture = CaptureSmtp(free_port())
    stack.callback(capture.stop)
    capture.start()
    web_port = free_port()
    env = shared.config.service_env(
        database_url=url, redis_url=redis.url, smtp_port=capture.port, web_port=web_port
    )
    service = Service(env=env, logs=logs, web_port=web_port)
    probe = Probe(url)
    stack.callback(probe.close)
    stack.callback(service.stop)
    return Run(
        scenario=scenario,
        database=database,
        config=shared.config,
        course=shared.courses[database],
        capture=capture,
        redis=redis,
        service=service,
        probe=probe,
        emails=[f"reader{n}.{scenario.name}@example.org" for n in range(shared.config.readers)],
        pg=pg,
        data_dir=data_dir,
        show=show,
    )


def drive(run: Run, row: Row) -> None:
    """Start the service, enroll, apply the fault, wait for the end; time each phase."""
    service, scenario = run.service, run.scenario
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        row.phases[name] = now - clock
        clock = now

    run.show("starting")
    parts = [service.start_web()]
    parts += [service.start_worker() for _ in range(scenario.workers)]
    parts += [service.start_beat(f"b{n + 1}") for n in range(scenario.beats)]
    service.wait_ready(parts)
    phase("start")
    enroll_and_confirm(run)
    phase("enroll")
    scenario.apply(run)
    wait_for_the_end(run)
    phase("course")
    row.failed = failed_deliveries(service)
    if row.failed != "0":
        row.problems.append("deliveries failed")


def show_errors(run: Run, row: Row) -> None:
    """A failed row's distinct error lines from the logs, a few of them."""
    errors = list(dict.fromkeys(run.service.log_lines(r"ERROR|CRITICAL")))
    row.notes.append(f"{len(errors)} distinct ERROR lines in the logs")
    for line in errors[:8]:
        tqdm.write(f"  [{row.scenario}/{row.database}] {line[:300]}")


def run_one(
    scenario: Scenario, database: str, *, shared: Shared, show: Callable[[str], None]
) -> Row:
    row = Row(scenario.name, database)
    started = time.monotonic()
    with ExitStack() as stack:
        run = set_up(scenario, database, shared=shared, stack=stack, show=show)
        if run is None:
            row.skipped = True
            row.notes.append("skipped: cannot mount a tmpfs here (needs root)")
            return row
        try:
            drive(run, row)
        except Exception as exc:  # one run's failure is a row of the table, not the end
            row.problems.append(f"error: {type(exc).__name__}: {exc}")
        stopping = time.monotonic()
        run.service.stop()  # before counting: a late duplicate must be counted too
        row.phases["stop"] = time.monotonic() - stopping
        try:
            tally(run, row)
        except SQLAlchemyError as exc:
            row.problems.append(f"cannot read the database: {exc}")
        if row.problems:
            show_errors(run, row)
    row.seconds = time.monotonic() - started
    return row


class Status:
    """One status line for every run under way (their phases after the bar), redrawn at most
    twice a second on a terminal and every 10 s in a log file (on a file, each is a line)."""

    def __init__(self, bar: tqdm[Any]) -> None:
        self.bar = bar
        self.lock = threading.Lock()
        self.phases: dict[str, str] = {}
        self.every = 0.5 if sys.stderr.isatty() else 10.0
        self.shown_at = 0.0

    def of(self, name: str) -> Callable[[str], None]:
        def show(text: str) -> None:
            with self.lock:
                self.phases[name] = text
                if time.monotonic() - self.shown_at >= self.every:
                    self._draw()

        return show

    def _draw(self) -> None:
        self.shown_at = time.monotonic()
        self.bar.set_postfix_str(" | ".join(f"{n} {t}" for n, t in self.phases.items()))

    def done(self, name: str, row: Row) -> None:
        with self.lock:
            self.phases.pop(name, None)
            verdict = "skipped" if row.skipped else "FAILED" if row.problems else "ok"
            took = ", ".join(f"{k} {v:.0f}" for k, v in row.phases.items())
            self.bar.write(f"{name}: {verdict} in {row.seconds:.0f} s ({took})")
            self.bar.update()
            self._draw()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="CI: 10 readers, 10 s outages")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--scenario",
        choices=[s.name for s in SCENARIOS],
        action="append",
        help="run only this one (repeatable)",
    )
    parser.add_argument("--readers", type=int, default=0, help="default 10 (--short) or 50")
    parser.add_argument(
        "--day-seconds", type=float, default=0.0, help="a course day; default 0.2 (--short) or 0.5"
    )
    parser.add_argument("--tick-seconds", type=float, default=0.5)
    parser.add_argument("--lease-seconds", type=int, default=5)
    parser.add_argument(
        "--retry-base-seconds",
        type=int,
        default=0,
        help="first retry backoff; default 2 (--short) or 60 (the service's default)",
    )
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--terms", type=int, default=3)
    parser.add_argument(
        "--jobs", type=int, default=0, help="runs at once; default 2 (--short) or 1"
    )
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy every run's logs here")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def run_all(
    plan: list[tuple[Scenario, str]], *, shared: Shared, jobs: int, bar: tqdm[Any]
) -> list[Row]:
    """Every run, `jobs` at a time (each has parts of its own: nothing is shared but the CPU)."""
    status = Status(bar)
    rows: dict[tuple[str, str], Row] = {}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="run") as pool:
        futures = {
            pool.submit(run_one, s, d, shared=shared, show=status.of(f"{s.name}/{d}")): (s, d)
            for s, d in plan
        }
        try:
            for future in as_completed(futures):
                scenario, database = futures[future]
                row = future.result()
                rows[scenario.name, database] = row
                status.done(f"{scenario.name}/{database}", row)
        except BaseException:
            STOP.set()  # every wait in every run gives up, and each run cleans up after itself
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [rows[s.name, d] for s, d in plan]


def report(rows: list[Row], *, config: Config, jobs: int) -> int:
    print(
        f"\nlease {config.lease_seconds} s, tick {config.tick_seconds} s, course day"
        f" {config.day_seconds} s, retry backoff from {config.retry_base_seconds} s, send batch"
        f" {SEND_BATCH}, worker concurrency {CONCURRENCY}, {config.readers} readers per run,"
        f" {jobs} run(s) at a time"
    )
    print_table([r.cells() for r in rows], HEADERS)
    bad = [r for r in rows if r.problems]
    if bad:
        print("\nFAILED:")
        for r in bad:
            print(f"  {r.scenario}/{r.database}: {'; '.join(r.problems)}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config.of(args)
    jobs = args.jobs or (2 if args.short else 1)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    plan = [(s, d) for s in chosen for d in databases if d in s.databases]
    if not plan:
        print("nothing to run: the scenarios chosen do not apply to that database")
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    load_before, started = os.getloadavg(), time.monotonic()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="homeward-faults-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        shared = Shared(workdir, config, keep_logs=args.keep_logs)
        stack.callback(shared.close)
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
        bar = stack.enter_context(tqdm(total=len(plan), unit="run", dynamic_ncols=True))
        try:
            for database in dict.fromkeys(d for _, d in plan):
                bar.set_postfix_str(f"migrating and publishing the {database} template")
                shared.prepare(database)
            rows = run_all(plan, shared=shared, jobs=jobs, bar=bar)
        except KeyboardInterrupt:
            bar.write("interrupted: stopping everything this bench started")
            return 130
    status = report(rows, config=config, jobs=jobs)
    load_after = os.getloadavg()
    print(
        f"\n{len(rows)} runs in {(time.monotonic() - started) / 60:.1f} min on {os.cpu_count()}"
        f" CPUs; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())

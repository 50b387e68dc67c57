"""Real Celery workers and beat over a real Redis, started and stopped around each test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from course.settings import PROJECT_ROOT, Settings
from tests.support import SmtpSink, wait_for

LEASE = 3
DAY = 0.05  # seconds: a course day, so a whole course runs in a few seconds


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    # The test process hands out and plans work the same way the workers do.
    settings.lease_seconds = LEASE
    settings.day_seconds = DAY
    values = {
        "COURSE_DATABASE_URL": settings.database_url,
        "COURSE_REDIS_URL": settings.redis_url or "",
        "COURSE_SMTP_URL": settings.smtp_url,
        "COURSE_BASE_URL": settings.base_url,
        "COURSE_SECRET_KEY": settings.secret_key,
        "COURSE_FROM": settings.from_address,
        "COURSE_POSTAL_ADDRESS": settings.postal_address,
        "COURSE_DEFAULT_SEQUENCE": settings.default_sequence,
        "COURSE_DAY_SECONDS": str(DAY),
        "COURSE_TICK_SECONDS": "0.5",
        "COURSE_LEASE_SECONDS": str(LEASE),
        "COURSE_SEND_BATCH": "5",
    }
    return {**os.environ, **values}


@pytest.fixture
def processes(
    env: dict[str, str], tmp_path: Path, redis_url: str
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `celery -A worker worker|beat` processes; every one is stopped after the test."""
    redis.Redis.from_url(redis_url).flushdb()
    started: list[subprocess.Popen[bytes]] = []

    def start(kind: str, name: str = "w1", concurrency: int = 1) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{kind}-{name}.log"
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            kind,
            "--loglevel=INFO",
            f"--logfile={log}",
        ]
        if kind == "worker":
            args += [
                f"--concurrency={concurrency}",
                "-n",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
            ]
        else:
            args += ["--schedule", str(tmp_path / f"beat-{name}")]
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        marker = "ready." if kind == "worker" else "beat: Starting"
        wait_for(
            lambda: log.exists() and marker in log.read_text(errors="replace"),
            30,
            f"celery {kind} {name}",
        )
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    redis.Redis.from_url(redis_url).flushdb()


def lesson_count(smtp: SmtpSink) -> Counter[str]:
    with smtp.lock:
        return Counter(m["To"] for m in smtp.received if "confirm" not in str(m["Subject"]).lower())

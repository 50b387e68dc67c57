"""Outside `course dev`, the service refuses to start on settings that would send unsafe mail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from course.errors import ConfigurationError
from course.settings import DEV_SECRET_KEY, PROJECT_ROOT, Settings

READY: dict[str, Any] = {
    "secret_key": "a-long-random-production-key",
    "postal_address": "Homeward, 1 Example Street, Springfield",
    "base_url": "https://homeward.example.org",
}


@pytest.mark.parametrize(
    "base_url",
    ["https://homeward.example.org", "http://localhost:8000", "http://127.0.0.1:8000"],
)
def test_https_or_a_trial_on_this_machine_is_ready(base_url: str) -> None:
    Settings(**{**READY, "base_url": base_url}).require_production_ready()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"secret_key": DEV_SECRET_KEY}, "COURSE_SECRET_KEY"),
        ({"secret_key": "short"}, "COURSE_SECRET_KEY"),
        ({"postal_address": "  "}, "COURSE_POSTAL_ADDRESS"),
        ({"base_url": "http://homeward.example.org"}, "COURSE_BASE_URL must start with https://"),
    ],
)
def test_each_unsafe_setting_is_named(change: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Settings(**{**READY, **change}).require_production_ready()


def unconfigured(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """The environment of someone who starts the service without configuring it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env["COURSE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'refused.db'}"
    env["COURSE_REDIS_URL"] = redis_url
    env["COURSE_BASE_URL"] = "http://homeward.example.org"
    return env


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "course.cli", "web", "--port", "0"],
        ["-m", "celery", "-A", "worker", "worker", "--pool=solo"],
        ["-m", "celery", "-A", "worker", "beat", "--schedule", "{tmp}/beat-schedule"],
    ],
    ids=["web", "worker", "beat"],
)
def test_the_web_app_worker_and_beat_refuse_to_start_unconfigured(
    tmp_path: Path, redis_url: str, command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, *(part.format(tmp=tmp_path) for part in command)],
        env=unconfigured(tmp_path, redis_url),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    for named in ("COURSE_SECRET_KEY", "COURSE_POSTAL_ADDRESS", "COURSE_BASE_URL"):
        assert named in result.stderr

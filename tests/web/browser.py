"""A real browser for page tests: Playwright driving Debian's Chromium, the web app served by a
real uvicorn on a free port, and axe-core checking WCAG 2.2 AA.

Chromium comes from the system (`apt-get install chromium`): Playwright's own browser download
cannot work offline. Without one, the browser tests are skipped with that reason, unless
COURSE_TEST_REQUIRE_BROWSER=1 (CI), which fails them instead.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("COURSE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's own check starts it: no sandbox (root), and nothing that calls out to the
# network, which this machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WCAG_22_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
PHONE = {"width": 375, "height": 667}


# What is wider than the window, outside a box that scrolls on its own (a data table's): the
# page then scrolls sideways, which a reader on a phone must never need (WCAG 1.4.10). A table's
# caption, which says what the table is, must be read without scrolling its box.
_WIDER = """() => ({page: document.documentElement.scrollWidth,
  window: document.documentElement.clientWidth,
  wider: [...document.querySelectorAll('body *')]
    .filter(e => (!e.closest('.scroll') || e.tagName === 'CAPTION')
      && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
    .map(e => e.tagName + (e.id ? '#' + e.id : '')).slice(0, 5)})"""


def fits_the_screen(page: Any) -> None:
    """Nothing on the page is wider than the window, so the page never scrolls sideways."""
    found = page.evaluate(_WIDER)
    assert found["page"] <= found["window"] and not found["wider"], (page.url, found)


def record_errors(page: Any) -> None:
    """Collect in `page.errors` what the browser logs as an error (a resource a policy refused,
    say) and every uncaught script error. "Failed to load resource" only repeats an answer of
    400 or more, which the tests count themselves."""
    page.errors = []
    page.on(
        "console",
        lambda m: (
            page.errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: page.errors.append(str(e)))


def _missing(reason: str) -> None:
    if os.environ.get("COURSE_TEST_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser is required (COURSE_TEST_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed: pip install -e '.[dev]'")
    if not os.path.exists(CHROMIUM):
        _missing(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class LiveServer:
    """The web app on a real socket, in a thread of the test process (so tests can share its
    clock, database and in-process delivery)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from course.cli.embedded_redis import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the web app did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def axe_violations(page: Any) -> list[str]:
    """What axe-core finds against WCAG 2.2 AA on the page as it is now, one line each."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG_22_AA}})
    found = results.response.get("violations", [])
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
    ]

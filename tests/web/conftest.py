"""The real browser is a fixture of every page test in this folder."""

from tests.web.browser import browser

__all__ = ["browser"]

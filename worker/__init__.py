"""Celery worker and beat for Homeward: `celery -A worker worker` and `celery -A worker beat`."""

from worker.app import app

__all__ = ["app"]

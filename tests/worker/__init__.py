"""Tests of the Celery worker and beat processes (worker/)."""

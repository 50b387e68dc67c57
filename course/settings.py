"""Every knob of the service, read once from COURSE_* environment variables with safe defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from course.errors import ConfigurationError

DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# Where `course dev` keeps its SQLite database, inside the project folder.
DEV_DATABASE = Path(".dev") / "homeward.db"
# The database when COURSE_DATABASE_URL is unset and no `course dev` database is found.
FALLBACK_DATABASE_URL = "sqlite:///homeward.db"


def default_database_url() -> str:
    """The database when COURSE_DATABASE_URL is not set: the one `course dev` made, found in the
    current folder or a folder above it (as git finds its repository), so that a command typed
    beside a running dev service, or after one, works on the same data; if there is none,
    homeward.db in the current folder."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / DEV_DATABASE).is_file():
            return f"sqlite:///{folder / DEV_DATABASE}"
    return FALLBACK_DATABASE_URL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COURSE_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    # Unset: the project starts its own private redis-server (see course.cli.embedded_redis).
    redis_url: str | None = None
    smtp_url: str = "smtp://127.0.0.1:8025"
    base_url: str = "http://127.0.0.1:8000"
    secret_key: str = DEV_SECRET_KEY
    from_address: str = Field(
        default="Homeward <lessons@homeward.localhost>", validation_alias="COURSE_FROM"
    )
    postal_address: str = ""
    # Who writes the course, for the sign-up page ("Written by the counsellors of ..."); empty:
    # the page claims only what is true of every install (facts from public health sources).
    about: str = ""
    unsubscribe_mailto: str | None = None
    day_seconds: float = 86400
    lessons_dir: Path = PROJECT_ROOT / "lessons"
    default_sequence: str = "family-guide"
    # The course the sign-up page offers in each language (when it is published).
    sequences: dict[str, str] = {"en": "family-guide", "es": "family-guide-es"}
    dev: bool = False
    dev_mailbox: Path = PROJECT_ROOT / ".dev" / "mailbox"

    # Dispatch tuning.
    tick_seconds: float = 5.0
    claim_batch: int = 1000
    send_batch: int = 100
    # A worker's hold on the deliveries it is sending, renewed every third of it while it works:
    # after a crash, others take the work over within this (and a tick).
    lease_seconds: int = 30
    max_attempts: int = 12

    # The mail provider. Each worker process keeps this many SMTP connections open and sends on
    # all of them at once (one sending thread each): across the internet a message waits tens of
    # milliseconds per round trip, and one connection left the relay idle most of the time.
    smtp_connections: int = Field(default=32, ge=1, le=256)
    # What the provider allows, shared by every worker on every host (Redis): messages per
    # second (0: no limit) and open connections (0: no cap).
    smtp_rate: float = Field(default=0.0, ge=0)
    smtp_max_connections: int = Field(default=0, ge=0)
    # A 421/451 or an unreachable relay pauses it for every worker: this long at first, doubling
    # while the trouble lasts, up to the maximum.
    relay_pause_seconds: float = Field(default=5.0, gt=0)
    relay_pause_max_seconds: float = Field(default=300.0, gt=0)
    retry_base_seconds: int = 60
    confirm_ttl_days: int = 7
    max_body_bytes: int = 16_384

    # Abuse and clean lists.
    # Per client address (limits' notation, ";" between rules): sign-ups, and data-link requests
    # (those also per reader).
    signup_rate: str = "20/minute;200/day"
    # Per email address, from any client: sign-ups (and so confirmation resends) for one address.
    signup_address_rate: str = "5/hour;10/day"
    data_link_rate: str = "5/hour;20/day"
    # Staff sign-in links asked for, per client and per address.
    staff_sign_in_rate: str = "30/hour;200/day"  # a centre's staff may share one address
    staff_sign_in_address_rate: str = "5/hour;20/day"
    # Confirmation emails to one address a day, whoever asks: the form cannot flood an inbox.
    confirmations_per_day: int = 3
    # Unconfirmed sign-ups are purged after this many days.
    unconfirmed_days: int = 7
    # Webhook messages once posted are deleted after this many days (at least one: the sweep of
    # sent lessons looks back ten minutes and must still find what it queued).
    webhook_keep_days: int = Field(default=30, ge=1)
    # Soft bounces a provider reports before the address is suppressed.
    soft_bounce_limit: int = 5

    # Provider webhooks (bounces, complaints): each is off until its key is set.
    mailgun_signing_key: str = ""
    sendgrid_public_key: str = ""

    # Operators' view (course.metrics, course.logs). /metrics on the web app answers only a
    # scraper that sends this as a bearer token; empty, /metrics answers 404 (off).
    metrics_token: str = ""
    # Each worker serves its metrics on this port (0: off), on this address: loopback unless
    # the scraper is on another host.
    worker_metrics_port: int = 0
    worker_metrics_host: str = "127.0.0.1"
    # Log lines as JSON (a log system parses them) or text (a person reads them); unset: text
    # on a terminal, JSON otherwise.
    log_format: Literal["json", "text"] | None = None

    @property
    def message_domain(self) -> str:
        return urlsplit(self.base_url).hostname or "homeward.localhost"

    def require_production_ready(self) -> None:
        """Outside `course dev`, refuse to run on the development key or without a postal address."""
        problems = []
        if self.secret_key == DEV_SECRET_KEY or len(self.secret_key) < 16:
            problems.append("COURSE_SECRET_KEY must be set to a long random value")
        if not self.postal_address.strip():
            problems.append(
                "COURSE_POSTAL_ADDRESS must be set (the law requires a postal address in every email)"
            )
        base = urlsplit(self.base_url)
        if base.scheme != "https" and base.hostname not in LOCAL_HOSTS:
            problems.append(
                "COURSE_BASE_URL must start with https:// (every email's one-click unsubscribe"
                " link is built from it, and mail providers accept only https there); only a"
                " trial on this machine (localhost) may use http"
            )
        if problems:
            raise ConfigurationError("; ".join(problems))


@lru_cache
def get_settings() -> Settings:
    return Settings()

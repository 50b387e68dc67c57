"""When is the next lesson due? Pure functions of the previous send, the delay, the reader's
time zone and send hour, and the length of a course day."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from course.errors import InvalidInput

REAL_DAY_SECONDS = 86400
DEFAULT_SEND_HOUR = 9


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(
            f"Unknown time zone {name!r}. Use a name like America/Chicago.",
            "time_zone",
            "time_zone",
        ) from exc


def local_wall_time_to_utc(day: date, hour: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of `hour`:00 on `day` in `tz`.

    On a spring-forward day the wall time may not exist (02:30 in New York): the clock is moved
    forward by the gap, as people experience it. On a fall-back day it exists twice: the first
    occurrence is used, so nobody waits an extra hour.
    """
    # PEP 495: fold=0 reads a wall time with the offset in force before a transition. In a
    # spring-forward gap that lands after the gap (02:00 EST is 03:00 EDT); in a fall-back
    # overlap it is the first occurrence.
    return datetime.combine(day, time(hour)).replace(tzinfo=tz, fold=0).astimezone(UTC)


def next_due(
    previous: datetime,
    delay_days: int,
    *,
    time_zone: str = "UTC",
    send_hour: int = DEFAULT_SEND_HOUR,
    day_seconds: float = REAL_DAY_SECONDS,
) -> datetime:
    """Due time of a lesson `delay_days` course days after `previous` (an aware datetime).

    A delay of 0 means straight away. With real days the lesson goes out at `send_hour` in the
    reader's own time zone on the calendar day `delay_days` after the previous one; with a
    shortened course day (demos, tests) the send hour is ignored.
    """
    if previous.tzinfo is None:
        raise ValueError("previous must be timezone-aware")
    if delay_days < 0:
        raise ValueError("delay_days cannot be negative")
    if delay_days == 0:
        return previous.astimezone(UTC)
    if day_seconds != REAL_DAY_SECONDS:
        return previous.astimezone(UTC) + timedelta(seconds=delay_days * day_seconds)
    tz = zone(time_zone)
    local_day = previous.astimezone(tz).date() + timedelta(days=delay_days)
    return local_wall_time_to_utc(local_day, send_hour, tz)


def valid_time_zone(name: str) -> str:
    name = name.strip()
    if name not in _zones():
        raise InvalidInput(
            f"Unknown time zone {name!r}. Use a name like America/Chicago.",
            "time_zone",
            "time_zone",
        )
    return name


_ZONES: frozenset[str] | None = None


def _zones() -> frozenset[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    return _ZONES

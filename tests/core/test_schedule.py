"""Next-due times: delay in days, the reader's time zone and send hour, DST, short course days."""

from datetime import UTC, datetime, timedelta

import pytest

from course.errors import InvalidInput
from course.schedule import local_wall_time_to_utc, next_due, valid_time_zone


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("previous", "delay", "tz", "hour", "expected"),
    [
        # New York in winter is UTC-5: 09:00 local = 14:00 UTC.
        (utc(2026, 1, 5, 15, 0), 2, "America/New_York", 9, utc(2026, 1, 7, 14, 0)),
        # Sent late evening local time (01:00 UTC next day): the local date counts, not UTC's.
        (utc(2026, 1, 6, 1, 0), 1, "America/New_York", 9, utc(2026, 1, 6, 14, 0)),
        # Across spring forward (8 March 2026): 09:00 EDT = 13:00 UTC.
        (utc(2026, 3, 6, 15, 0), 3, "America/New_York", 9, utc(2026, 3, 9, 13, 0)),
        # Across fall back (1 November 2026): 09:00 EST = 14:00 UTC.
        (utc(2026, 10, 30, 14, 0), 3, "America/New_York", 9, utc(2026, 11, 2, 14, 0)),
        # Tokyo has no DST: 20:00 JST = 11:00 UTC.
        (utc(2026, 6, 1, 0, 0), 4, "Asia/Tokyo", 20, utc(2026, 6, 5, 11, 0)),
        # Sydney: 07:00 AEST (UTC+10) in June.
        (utc(2026, 6, 1, 0, 0), 1, "Australia/Sydney", 7, utc(2026, 6, 1, 21, 0)),
        # Sydney in January is on daylight time (UTC+11).
        (utc(2026, 1, 10, 0, 0), 1, "Australia/Sydney", 7, utc(2026, 1, 10, 20, 0)),
        # India is UTC+5:30.
        (utc(2026, 2, 1, 12, 0), 2, "Asia/Kolkata", 9, utc(2026, 2, 3, 3, 30)),
        # UTC readers, midnight send hour.
        (utc(2026, 2, 1, 12, 0), 1, "UTC", 0, utc(2026, 2, 2, 0, 0)),
        # Across a month and year boundary.
        (utc(2026, 12, 30, 12, 0), 3, "Europe/London", 9, utc(2027, 1, 2, 9, 0)),
        # London summer time (BST, UTC+1).
        (utc(2026, 7, 1, 12, 0), 7, "Europe/London", 9, utc(2026, 7, 8, 8, 0)),
        # Honolulu (UTC-10, no DST), evening.
        (utc(2026, 4, 1, 12, 0), 2, "Pacific/Honolulu", 20, utc(2026, 4, 4, 6, 0)),
    ],
)
def test_next_lesson_arrives_at_the_send_hour_on_the_right_local_day(
    previous, delay, tz, hour, expected
):
    assert next_due(previous, delay, time_zone=tz, send_hour=hour) == expected


def test_a_delay_of_zero_means_straight_away():
    now = utc(2026, 3, 1, 3, 17)
    assert next_due(now, 0, time_zone="America/Chicago", send_hour=9) == now


def test_send_hour_in_the_spring_forward_gap_moves_forward_not_back():
    # 02:00 does not exist in New York on 8 March 2026; the reader gets it at 03:00 EDT.
    assert local_wall_time_to_utc(
        datetime(2026, 3, 8).date(), 2, __import__("zoneinfo").ZoneInfo("America/New_York")
    ) == utc(2026, 3, 8, 7, 0)


def test_send_hour_that_happens_twice_on_fall_back_uses_the_first():
    # 01:00 happens twice in New York on 1 November 2026; the first is 05:00 UTC (EDT).
    assert next_due(utc(2026, 10, 31, 12, 0), 1, time_zone="America/New_York", send_hour=1) == utc(
        2026, 11, 1, 5, 0
    )


def test_every_day_of_a_year_lands_on_the_send_hour_locally():
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("America/Los_Angeles")
    previous = utc(2026, 1, 1, 17, 0)
    for _ in range(365):
        due = next_due(previous, 1, time_zone="America/Los_Angeles", send_hour=9)
        local = due.astimezone(tz)
        assert (local.hour, local.minute) == (9, 0)
        assert local.date() == previous.astimezone(tz).date() + timedelta(days=1)
        previous = due


def test_short_course_days_ignore_the_send_hour():
    now = utc(2026, 5, 5, 10, 0, 0)
    assert next_due(now, 3, time_zone="Asia/Tokyo", send_hour=9, day_seconds=60) == now + timedelta(
        seconds=180
    )
    assert next_due(now, 2, day_seconds=0.5) == now + timedelta(seconds=1)


def test_naive_times_and_negative_delays_are_refused():
    with pytest.raises(ValueError):
        next_due(datetime(2026, 1, 1), 1)
    with pytest.raises(ValueError):
        next_due(utc(2026, 1, 1), -1)


def test_unknown_time_zones_are_refused_with_a_clear_message():
    assert valid_time_zone(" Europe/Paris ") == "Europe/Paris"
    with pytest.raises(InvalidInput, match="Unknown time zone"):
        valid_time_zone("Mars/Olympus_Mons")

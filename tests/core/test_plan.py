"""Which lesson comes next, and when: course.plan as pure functions, across pace, pauses, the
switch to aftercare, a conversation date, a treatment start date, time zones and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course.plan import (
    AFTER_CONVERSATION,
    BEFORE_CONVERSATION,
    Calendar,
    Next,
    Preferences,
    Step,
    next_lesson,
)

NY = "America/New_York"
# A family guide in miniature: recognize, act (preparing for the conversation), a check-in,
# aftercare. 3 (overdose) and 6 (safety) are never skipped.
GUIDE = (
    Step(1, 0, "recognize"),
    Step(2, 2, "recognize"),
    Step(3, 2, "recognize", never_skip=True),
    Step(4, 3, "act", anchor=BEFORE_CONVERSATION),
    Step(5, 3, "act", anchor=BEFORE_CONVERSATION),
    Step(6, 3, "act", never_skip=True, anchor=BEFORE_CONVERSATION),
    Step(7, 3, "act"),
    Step(8, 3, "act", anchor=BEFORE_CONVERSATION),
    Step(9, 1, "act", anchor=AFTER_CONVERSATION),
    Step(10, 4, "aftercare"),
    Step(11, 4, "aftercare"),
)


def local(day: date, hour: int = 9, tz: str = NY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def run(
    steps: tuple[Step, ...], prefs: Preferences, calendar: Calendar, start: datetime
) -> list[tuple[int, datetime]]:
    """Every lesson the reader gets, and when, each sent the moment it falls due."""
    sent: list[tuple[int, datetime]] = []
    after, at = 0, start
    for _ in range(3 * len(steps)):
        found = next_lesson(steps, prefs, calendar, after=after, at=at, sent={p for p, _ in sent})
        if found.position is None:
            return sent
        assert found.due is not None and found.due >= at, (found, at)
        after, at = found.position, found.due
        sent.append((after, at))
    raise AssertionError(f"the plan never ended: {sent}")


CAL = Calendar(NY, 9)
START = local(date(2026, 1, 5), 12)  # a Monday, confirmed at noon


def test_the_first_lesson_comes_at_once_and_the_next_after_its_delay_at_the_send_hour():
    first = next_lesson(GUIDE, Preferences(NY, 9), CAL, after=0, at=START)
    assert first == Next(1, START)
    second = next_lesson(GUIDE, Preferences(NY, 9), CAL, after=1, at=START)
    assert second == Next(2, local(date(2026, 1, 7)))


def test_without_a_date_the_course_goes_in_order_and_the_check_in_is_left_out():
    positions = [p for p, _ in run(GUIDE, Preferences(NY, 9), CAL, START)]
    assert positions == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]


def test_the_last_lesson_completes_the_course():
    assert next_lesson(GUIDE, Preferences(NY, 9), CAL, after=11, at=START) == Next(None, None)


@pytest.mark.parametrize("pace", [1, 2, 3, 7])
def test_a_pace_replaces_every_delay_but_a_lesson_sent_at_once_still_goes_at_once(pace):
    sent = run(GUIDE, Preferences(NY, 9, pace_days=pace), CAL, START)
    gaps = [
        (CAL.date_of(b) - CAL.date_of(a)).days
        for (_, a), (_, b) in zip(sent, sent[1:], strict=False)
    ]
    assert sent[0] == (1, START) and set(gaps) == {pace}


def test_a_pause_holds_the_next_lesson_until_it_ends():
    until = local(date(2026, 2, 1))
    found = next_lesson(GUIDE, Preferences(NY, 9, paused_until=until), CAL, after=2, at=START)
    assert found == Next(3, until)
    early = next_lesson(
        GUIDE, Preferences(NY, 9, paused_until=START - timedelta(days=1)), CAL, after=2, at=START
    )
    assert early.due == local(date(2026, 1, 7)), "a pause that has ended changes nothing"


def test_after_the_switch_only_never_skip_and_aftercare_lessons_come():
    positions = [p for p, _ in run(GUIDE, Preferences(NY, 9, switched=True), CAL, START)]
    assert positions == [1, 3, 6, 10, 11]  # the welcome lesson always comes first


def test_a_treatment_start_date_switches_the_course_from_that_day_on():
    treatment = date(2026, 1, 12)
    sent = run(GUIDE, Preferences(NY, 9, treatment_on=treatment), CAL, START)
    before = [p for p, at in sent if CAL.date_of(at) < treatment]
    after = [p for p, at in sent if CAL.date_of(at) >= treatment]
    assert before == [1, 2, 3]  # days 0, 2, 4 of the course
    assert after == [6, 10, 11]  # the safety lesson still comes; then aftercare


def test_with_a_conversation_far_ahead_the_preparing_lessons_come_first_at_their_own_pace():
    conversation = date(2026, 2, 20)
    sent = run(GUIDE, Preferences(NY, 9, conversation_on=conversation), CAL, START)
    dates = {p: CAL.date_of(at) for p, at in sent}
    before = sorted(p for p, d in dates.items() if d < conversation)
    # The welcome lesson, then only lessons that prepare for it, and the never-skip ones.
    assert before == [1, 3, 4, 5, 6, 8]
    assert dates[9] == conversation + timedelta(days=1), "the check-in, the day after"
    after = [p for p, at in sent if CAL.date_of(at) > conversation]
    assert after == [9, 2, 7, 10, 11], "then the course goes on with what is left, in order"
    assert dates[4] - dates[3] == timedelta(days=3), "at their own pace: there is time"


def test_with_a_conversation_close_by_the_preparing_lessons_are_spread_one_a_day():
    conversation = date(2026, 1, 9)  # Friday: Tuesday, Wednesday and Thursday are left
    prefs = Preferences(NY, 9, conversation_on=conversation)
    sent = run(GUIDE, prefs, CAL, START)
    before = [(p, CAL.date_of(at)) for p, at in sent if CAL.date_of(at) < conversation]
    # Lesson 1 on the day of sign-up, then one a day for the three days left: of the five that
    # prepare, the never-skip ones (3, 6) first, then the earliest (4); 5 and 8 come after.
    assert [p for p, _ in before] == [1, 3, 4, 6]
    days = [d for _, d in before]
    assert len(days) == len(set(days)), "never two lessons on one day"
    assert {3, 6} <= {p for p, _ in before}, "the overdose and safety lessons come before it"
    assert CAL.date_of(dict(sent)[9]) == date(2026, 1, 10)


def test_a_conversation_tomorrow_leaves_no_day_before_it_and_the_check_in_comes_after():
    prefs = Preferences(NY, 9, conversation_on=date(2026, 1, 6))
    found = next_lesson(GUIDE, prefs, CAL, after=1, at=START, sent={1})
    assert found == Next(9, local(date(2026, 1, 7)))


def test_a_check_in_whose_day_has_passed_is_not_sent():
    prefs = Preferences(NY, 9, conversation_on=date(2026, 1, 1))
    found = next_lesson(GUIDE, prefs, CAL, after=1, at=START, sent={1})
    assert found.position == 2


def test_nothing_but_what_prepares_lands_on_the_day_of_the_conversation():
    steps = (Step(1, 0, "act"), Step(2, 1, "act"), Step(3, 1, "aftercare"))
    conversation = date(2026, 1, 6)
    prefs = Preferences(NY, 9, conversation_on=conversation)
    found = next_lesson(steps, prefs, CAL, after=1, at=START, sent={1})
    assert found == Next(2, local(date(2026, 1, 7)))


def test_spring_forward_keeps_the_local_send_hour_and_a_missing_hour_moves_on():
    saturday = local(date(2026, 3, 7), 9)  # DST starts on Sunday 8 March in New York
    found = next_lesson(GUIDE, Preferences(NY, 9), CAL, after=1, at=saturday)
    assert found.due == local(date(2026, 3, 9), 9)
    assert found.due - saturday == timedelta(days=2, hours=-1)
    two_am = Calendar(NY, 2)
    sunday = next_lesson((Step(1, 0), Step(2, 1)), Preferences(NY, 2), two_am, after=1, at=saturday)
    assert sunday.due == datetime(2026, 3, 8, 7, tzinfo=UTC), "02:00 does not exist: 03:00 EDT"


def test_fall_back_uses_the_first_of_the_repeated_hour():
    saturday = local(date(2026, 10, 31), 1)
    cal = Calendar(NY, 1)
    found = next_lesson((Step(1, 0), Step(2, 1)), Preferences(NY, 1), cal, after=1, at=saturday)
    assert found.due == datetime(2026, 11, 1, 5, tzinfo=UTC)  # 01:00 EDT, the first one


def test_a_conversation_date_in_another_time_zone_is_that_readers_calendar_day():
    tokyo = Calendar("Asia/Tokyo", 8)
    start = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)  # already Tuesday morning in Tokyo
    prefs = Preferences("Asia/Tokyo", 8, conversation_on=date(2026, 1, 8))
    found = next_lesson(GUIDE, prefs, tokyo, after=1, at=start, sent={1})
    assert found.due is not None
    assert tokyo.date_of(found.due) == date(2026, 1, 7)  # Wednesday, the only day left
    assert found.position == 3


def test_a_compressed_course_day_maps_dates_onto_the_courses_start():
    start = datetime(2026, 1, 5, 12, tzinfo=UTC)
    fast = Calendar("UTC", 9, day_seconds=60, start=start)
    prefs = Preferences("UTC", 9, conversation_on=start.date() + timedelta(days=10))
    sent = run(GUIDE, prefs, fast, start)
    assert [p for p, _ in sent][:2] == [1, 3]
    check_in = dict(sent)[9]
    assert fast.date_of(check_in) == start.date() + timedelta(days=11)
    assert check_in == start + timedelta(seconds=11 * 60)


# --- the rules hold for any course, date and pace ---------------------------------------------

steps_strategy = st.lists(
    st.tuples(
        st.integers(0, 7),
        st.sampled_from(["recognize", "act", "aftercare"]),
        st.booleans(),
        st.sampled_from(["", BEFORE_CONVERSATION]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    raw=steps_strategy,
    with_check_in=st.booleans(),
    conversation_in=st.one_of(st.none(), st.integers(-3, 40)),
    treatment_in=st.one_of(st.none(), st.integers(0, 40)),
    pace=st.one_of(st.none(), st.sampled_from([1, 2, 3, 7])),
    switched=st.booleans(),
    tz=st.sampled_from(["UTC", NY, "Europe/Madrid", "Pacific/Honolulu", "Asia/Tokyo"]),
    hour=st.integers(0, 23),
)
def test_every_plan_sends_each_lesson_once_moves_forward_and_keeps_its_promises(
    raw, with_check_in, conversation_in, treatment_in, pace, switched, tz, hour
):
    rows = sorted(raw, key=lambda r: {"recognize": 0, "act": 1, "aftercare": 2}[r[1]])
    steps = [Step(i + 1, d, m, n, a) for i, (d, m, n, a) in enumerate(rows)]
    if with_check_in:
        steps.insert(len(steps) // 2, Step(0, 1, "act", anchor=AFTER_CONVERSATION))
    steps = [
        Step(i + 1, s.delay_days, s.module, s.never_skip, s.anchor) for i, s in enumerate(steps)
    ]
    cal = Calendar(tz, hour)
    start = datetime(2026, 3, 1, 15, tzinfo=UTC)  # DST begins within the course in the US
    today = cal.date_of(start)
    conversation = today + timedelta(days=conversation_in) if conversation_in is not None else None
    prefs = Preferences(
        tz,
        hour,
        pace_days=pace,
        conversation_on=conversation,
        treatment_on=today + timedelta(days=treatment_in) if treatment_in is not None else None,
        switched=switched,
    )
    sent = run(tuple(steps), prefs, cal, start)
    positions = [p for p, _ in sent]
    assert len(positions) == len(set(positions)), "no lesson twice"
    assert all(b >= a for (_, a), (_, b) in zip(sent, sent[1:], strict=False)), "time moves on"
    if switched:  # after the welcome lesson: aftercare, never-skip, and a check-in
        assert all(
            steps[p - 1].after_switch or steps[p - 1].anchor == AFTER_CONVERSATION
            for p in positions[1:]
        )
    for p in positions:  # a check-in only for a reader with a date, the day after it
        if steps[p - 1].anchor == AFTER_CONVERSATION:
            assert conversation is not None
            assert cal.date_of(dict(sent)[p]) == conversation + timedelta(days=1)
    if conversation is not None:
        early = [at for p, at in sent if cal.date_of(at) < conversation and p != positions[0]]
        days = [cal.date_of(at) for at in early]
        assert len(days) == len(set(days)), "never two lessons on one day before it"
        assert all(cal.date_of(at) != conversation for _, at in sent[1:]), "nothing on the day"
    # Never-skip lessons always come, switch or not.
    assert {s.position for s in steps if s.never_skip} <= set(positions)

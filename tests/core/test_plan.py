"""Which lesson comes next, and when: course.plan as pure functions, across pace, pauses, the
switch to aftercare, a conversation date, a treatment start date, time zones and DST. A pause
and its resume are replanned as the app does it, through course.timing.replanned."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from course.models import PAUSED_UNTIL_RESUMED
from course.plan import (
    AFTER_CONVERSATION,
    BEFORE_CONVERSATION,
    Calendar,
    Next,
    Preferences,
    Step,
    next_lesson,
)
from course.schedule import REAL_DAY_SECONDS, local_wall_time_to_utc
from course.timing import replanned

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


@dataclass(frozen=True)
class Pause:
    """The reader pauses the moment their `after`-th lesson goes out, until `until`, or, with
    `until_resumed`, until they press "resume" then (at once, if that has gone by)."""

    after: int
    until: datetime
    until_resumed: bool = False


@dataclass(frozen=True)
class Reader:
    """An enrollment and its subscriber, as course.timing reads them."""

    time_zone: str
    send_hour: int
    pace_days: int | None
    paused_until: datetime | None
    conversation_on: date | None
    treatment_on: date | None
    started_treatment_at: datetime | None
    confirmed_at: datetime | None

    @classmethod
    def of(cls, prefs: Preferences, start: datetime) -> Reader:
        return cls(
            prefs.time_zone,
            prefs.send_hour,
            prefs.pace_days,
            prefs.paused_until,
            prefs.conversation_on,
            prefs.treatment_on,
            start if prefs.switched else None,
            start,
        )


def paused(
    steps: tuple[Step, ...],
    prefs: Preferences,
    start: datetime,
    pause: Pause,
    *,
    sent: list[tuple[int, datetime]],
) -> tuple[Preferences, Next]:
    """The reader's choices once they have paused, and the next lesson as the app then plans it
    (course.readers.preferences: pause, resume)."""
    after, at = sent[-1]
    history = (after, at, {p for p, _ in sent})

    def plan(prefs: Preferences, now: datetime) -> Next:
        reader = Reader.of(prefs, start)
        return replanned(steps, reader, reader, sent=history, day_seconds=REAL_DAY_SECONDS, now=now)

    if not pause.until_resumed:
        prefs = replace(prefs, paused_until=pause.until)
        return prefs, plan(prefs, at)
    held = plan(replace(prefs, paused_until=PAUSED_UNTIL_RESUMED), at)
    assert held.position is None or held.due == PAUSED_UNTIL_RESUMED, "nothing until resumed"
    prefs = replace(prefs, paused_until=None)
    return prefs, plan(prefs, max(at, pause.until))


def run(
    steps: tuple[Step, ...],
    prefs: Preferences,
    calendar: Calendar,
    start: datetime,
    *,
    pause: Pause | None = None,
) -> list[tuple[int, datetime]]:
    """Every lesson the reader gets, and when, each sent the moment it falls due and the next
    planned then, as the sending path does (and replanned when the reader pauses)."""
    sent: list[tuple[int, datetime]] = []
    found = next_lesson(steps, prefs, calendar, after=0, at=start, sent=set())
    for _ in range(3 * len(steps)):
        if found.position is None:
            return sent
        at = sent[-1][1] if sent else start
        assert found.due is not None and found.due >= at, (found, at)
        sent.append((found.position, found.due))
        if pause is not None and len(sent) == pause.after:
            prefs, found = paused(steps, prefs, start, pause, sent=sent)
            continue
        after, at = sent[-1]
        found = next_lesson(steps, prefs, calendar, after=after, at=at, sent={p for p, _ in sent})
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


CONVERSATION = date(2026, 1, 20)  # a Tuesday, two weeks after the welcome lesson


@pytest.mark.parametrize(
    ("hour", "expected"),
    [
        # Before the send hour the day before: one day is left, for the overdose lesson.
        (8, [1, 3, 9, 2, 4, 5, 6, 7, 8, 10, 11]),
        # After it, the first lesson could only come on the day itself: nothing is "before" the
        # conversation any more. The check-in the day after, then everything in order.
        (10, [1, 9, 2, 3, 4, 5, 6, 7, 8, 10, 11]),
    ],
)
def test_a_course_resumed_the_day_before_the_conversation_sends_nothing_on_the_day(hour, expected):
    prefs = Preferences(NY, 9, conversation_on=CONVERSATION)
    resumed = local(CONVERSATION - timedelta(days=1), hour)
    pause = Pause(after=1, until=resumed, until_resumed=True)
    sent = run(GUIDE, prefs, CAL, START, pause=pause)
    assert [p for p, _ in sent] == expected
    assert all(CAL.date_of(at) != CONVERSATION for _, at in sent), "nothing on the day"
    assert all(at >= resumed for _, at in sent[1:]), "nothing while paused"
    assert CAL.date_of(dict(sent)[9]) == CONVERSATION + timedelta(days=1)


def test_a_course_resumed_after_the_conversation_goes_on_in_order():
    prefs = Preferences(NY, 9, conversation_on=CONVERSATION)
    resumed = local(date(2026, 1, 25), 10)
    pause = Pause(after=1, until=resumed, until_resumed=True)
    sent = run(GUIDE, prefs, CAL, START, pause=pause)
    # The check-in's day has passed; the preparing lessons no longer jump ahead of lesson 2.
    assert [p for p, _ in sent] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert sent[1] == (2, local(date(2026, 1, 26))), "at the next send hour after resuming"


def test_a_pause_ending_on_the_day_of_the_conversation_waits_for_the_check_in():
    prefs = Preferences(NY, 9, paused_until=local(CONVERSATION), conversation_on=CONVERSATION)
    found = next_lesson(GUIDE, prefs, CAL, after=1, at=START, sent={1})
    assert found == Next(9, local(CONVERSATION + timedelta(days=1)))


def test_a_pause_leaving_one_day_before_the_conversation_keeps_it_for_the_safety_lesson():
    # Lessons 1 and 3 are behind the reader; 4, 5, 6 (safety) and 8 prepare.
    prefs = Preferences(
        NY, 9, paused_until=local(CONVERSATION - timedelta(days=1)), conversation_on=CONVERSATION
    )
    found = next_lesson(GUIDE, prefs, CAL, after=3, at=local(date(2026, 1, 7)), sent={1, 3})
    assert found == Next(6, local(CONVERSATION - timedelta(days=1)))


def test_a_pause_until_resumed_holds_a_compressed_course_too():
    fast = Calendar("UTC", 9, day_seconds=60, start=START)
    prefs = Preferences(
        "UTC",
        9,
        paused_until=PAUSED_UNTIL_RESUMED,
        conversation_on=START.date() + timedelta(days=10),
    )
    found = next_lesson(GUIDE, prefs, fast, after=1, at=START, sent={1})
    assert found == Next(2, PAUSED_UNTIL_RESUMED), "planned as after the conversation"


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


RESUMED = {
    "raw": [
        (0, "recognize", False, ""),
        (2, "recognize", False, ""),
        (2, "recognize", True, ""),
        (3, "act", False, BEFORE_CONVERSATION),
        (3, "act", False, BEFORE_CONVERSATION),
    ],
    "welcome": True,
    "with_check_in": True,
    "conversation_in": 15,
    "treatment_in": None,
    "pace": None,
    "switched": False,
    "tz": NY,
    "hour": 9,
}


@settings(max_examples=300, deadline=None)
@given(
    raw=steps_strategy,
    welcome=st.booleans(),
    with_check_in=st.booleans(),
    conversation_in=st.one_of(st.none(), st.integers(-3, 40)),
    treatment_in=st.one_of(st.none(), st.integers(0, 40)),
    pace=st.one_of(st.none(), st.sampled_from([1, 2, 3, 7])),
    switched=st.booleans(),
    tz=st.sampled_from(["UTC", NY, "Europe/Madrid", "Pacific/Honolulu", "Asia/Tokyo"]),
    hour=st.integers(0, 23),
    # A pause after one of the first lessons, ending (or resumed) at some hour of a day around
    # the conversation (of a day in the course, without one), where the rules meet.
    pause=st.one_of(
        st.none(),
        st.tuples(
            st.integers(1, 4),
            st.integers(-5, 10) | st.integers(-20, 40),
            st.integers(0, 23),
            st.booleans(),
        ),
    ),
)
# Paused after the welcome lesson and resumed after the send hour the day before the
# conversation, or after it: the readers in whom the rules first met a pause.
@example(**{**RESUMED, "pause": (1, -1, 10, True)})
@example(**{**RESUMED, "pause": (1, 5, 10, True)})
def test_every_plan_sends_each_lesson_once_moves_forward_and_keeps_its_promises(
    raw, welcome, with_check_in, conversation_in, treatment_in, pace, switched, tz, hour, pause
):
    rows = sorted(raw, key=lambda r: {"recognize": 0, "act": 1, "aftercare": 2}[r[1]])
    steps = [Step(i + 1, d, m, n, a) for i, (d, m, n, a) in enumerate(rows)]
    if welcome:  # as most courses start: only then does anything come before the conversation
        steps[0] = replace(steps[0], delay_days=0)
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
    plan = None
    if pause is not None:
        after, days, at_hour, until_resumed = pause
        around = (conversation or today) + timedelta(days=days)
        until = local_wall_time_to_utc(around, at_hour, ZoneInfo(tz))
        plan = Pause(after, until, until_resumed)
    sent = run(tuple(steps), prefs, cal, start, pause=plan)
    positions = [p for p, _ in sent]
    assert len(positions) == len(set(positions)), "no lesson twice"
    assert all(b >= a for (_, a), (_, b) in zip(sent, sent[1:], strict=False)), "time moves on"
    for i, ((_, a), (p, b)) in enumerate(zip(sent, sent[1:], strict=False)):
        if cal.date_of(a) == cal.date_of(b):  # but after the welcome lesson, or at once
            assert i == 0 or steps[p - 1].delay_days == 0, "never two lessons on one day"
    if plan is not None and len(sent) > plan.after:
        assert sent[plan.after][1] >= plan.until, "nothing while paused"
    # In sequence order, but for the check-in (the day after) and what came before the day.
    course = [(p, at) for p, at in sent if steps[p - 1].anchor != AFTER_CONVERSATION]
    for i, (p, at) in enumerate(course):
        if any(q < p for q, _ in course[i + 1 :]):
            assert conversation is not None and cal.date_of(at) < conversation, f"{p} too soon"
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
        assert all(
            steps[p - 1].anchor == BEFORE_CONVERSATION or steps[p - 1].never_skip
            for p, at in sent[1:]
            if cal.date_of(at) < conversation
        ), "before the day, only what prepares for it"
    # Never-skip lessons always come, switch or not.
    assert {s.position for s in steps if s.never_skip} <= set(positions)

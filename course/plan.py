"""Which lesson comes next, and when: a pure function of the sequence, the reader's preferences
and what they have had.

The rules, in order:

1. **What is left.** Lessons not sent yet, in sequence order. After the switch to aftercare ("my
   loved one has started treatment", or the treatment start date reached), only aftercare
   lessons and lessons marked never-skip (overdose, safety) are left. A check-in lesson
   (`anchor: after:conversation`) is left only for a reader who set a conversation date.
2. **Pace.** A reader's pace (a lesson every N days) replaces the sequence's delays; a lesson the
   sequence sends at once (delay 0) still goes at once.
3. **A conversation date** C. Before C the course sends only the lessons that prepare for it
   (`anchor: before:conversation`) and the never-skip ones, one a day at most: at their own pace
   if they fit before C, spread out evenly if not, and the most needed first (never-skip, then
   in sequence order) if there are more of them than days. The day after C comes the check-in
   lesson; then the course goes on with what is left, in order.
4. **A treatment start date** T: a lesson due on or after T is chosen as after the switch.
5. **A pause** holds the next lesson back until it ends; a lesson that fell due while the
   course was paused comes at the reader's next send hour once they resume (course.timing). The
   lesson is chosen as of when it can first go out, not as of the last one sent: the days before
   C are counted from that day. Once that day is C or later, nothing prepares "before" C any
   more: the check-in comes the day after C if that day has not passed, and the preparing
   lessons (never-skip ones included) go out in sequence order with the rest, at the reader's
   pace, none skipped. So a pause never lands a lesson on the day of C, nor one out of order.

Days are the reader's calendar days, at their send hour in their time zone (course.schedule);
a compressed course day (demos, tests) maps dates onto the course's start instead.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from course.schedule import REAL_DAY_SECONDS, local_wall_time_to_utc, next_due, zone

# A step's delay in days, the reader's pace applied.
_Gap = Callable[["Step"], int]

BEFORE_CONVERSATION = "before:conversation"
AFTER_CONVERSATION = "after:conversation"
ANCHORS = ("", BEFORE_CONVERSATION, AFTER_CONVERSATION)
PACES = (1, 2, 3, 7)


@dataclass(frozen=True, slots=True)
class Step:
    """A lesson as planning sees it."""

    position: int
    delay_days: int
    module: str = ""
    never_skip: bool = False
    anchor: str = ""

    @property
    def after_switch(self) -> bool:
        """Still sent once the reader has switched to aftercare."""
        return self.module == "aftercare" or self.never_skip


@dataclass(frozen=True)
class Preferences:
    """What the reader chose, as far as timing goes."""

    time_zone: str = "UTC"
    send_hour: int = 9
    pace_days: int | None = None
    paused_until: datetime | None = None
    conversation_on: date | None = None
    treatment_on: date | None = None
    switched: bool = False  # "my loved one has started treatment"


@dataclass(frozen=True)
class Next:
    """The next lesson (None: the course is complete) and when it is due."""

    position: int | None
    due: datetime | None


@dataclass(frozen=True)
class Calendar:
    """Days as the reader lives them. With real days: calendar dates in their time zone, lessons
    at their send hour. With a compressed course day: day N after `start` is date start+N."""

    time_zone: str
    send_hour: int
    day_seconds: float = REAL_DAY_SECONDS
    start: datetime = datetime(2000, 1, 1, tzinfo=UTC)

    @property
    def real(self) -> bool:
        return self.day_seconds == REAL_DAY_SECONDS

    def _tz(self) -> ZoneInfo:
        return zone(self.time_zone)

    def date_of(self, instant: datetime) -> date:
        if self.real:
            return instant.astimezone(self._tz()).date()
        days = (instant - self.start).total_seconds() // self.day_seconds
        # A pause until the reader comes back ends in the year 9999, far more compressed days
        # away than a date can hold: it is the last date, after every other.
        return self.start.date() + timedelta(
            days=min(int(days), (date.max - self.start.date()).days)
        )

    def slot(self, day: date) -> datetime:
        """When a lesson goes out on `day`."""
        if self.real:
            return local_wall_time_to_utc(day, self.send_hour, self._tz())
        return self.start + timedelta(seconds=(day - self.start.date()).days * self.day_seconds)

    def next_slot(self, now: datetime) -> datetime:
        """The first time a lesson may go out from `now` on: today's send hour if it is still
        to come, else tomorrow's (at once, with a compressed course day)."""
        if not self.real:
            return now
        today = self.slot(self.date_of(now))
        return today if today >= now else self.slot(self.date_of(now) + timedelta(days=1))

    def after(self, instant: datetime, days: int) -> datetime:
        """`days` course days after `instant` (at once for 0), as course.schedule.next_due."""
        return next_due(
            instant,
            days,
            time_zone=self.time_zone,
            send_hour=self.send_hour,
            day_seconds=self.day_seconds,
        )


def next_lesson(
    steps: Sequence[Step],
    prefs: Preferences,
    calendar: Calendar,
    *,
    after: int,
    at: datetime,
    sent: Collection[int] | None = None,
    not_before: datetime | None = None,
) -> Next:
    """The lesson to send after position `after` went out at `at` (0 and the confirmation
    time before the first lesson). `sent`: every position sent so far; None means exactly
    those up to `after` (the order was never changed), which is all the sending path knows.
    `not_before`: the earliest it may go out besides a pause (a course replanned while idle:
    now's next send slot)."""
    done = set(sent) if sent is not None else {s.position for s in steps if s.position <= after}
    left = [s for s in steps if s.position not in done and (sent is not None or s.position > after)]
    conversation = prefs.conversation_on
    if conversation is None:
        left = [s for s in left if s.anchor != AFTER_CONVERSATION]
    if not left:
        return Next(None, None)

    def gap(step: Step) -> int:
        if prefs.pace_days and step.delay_days > 0:
            return prefs.pace_days
        return step.delay_days

    # The lesson is chosen as of when it can go out: chosen as of `at`, one held back past the
    # conversation day by a pause would still be one "before" it.
    earliest = max(t for t in (at, prefs.paused_until, not_before) if t is not None)
    today = calendar.date_of(at)
    choice: tuple[Step, datetime] | None = None
    if not done:  # the welcome lesson comes first whatever else is planned
        choice = _in_order([s for s in left if s.anchor != AFTER_CONVERSATION], at, gap=gap)
    elif conversation is not None and today < conversation:
        choice = _before_conversation(left, prefs, calendar, at=at, earliest=earliest, gap=gap)
    if choice is None:
        choice = _ordinary(left, prefs, calendar, at=at, earliest=earliest, gap=gap)
    if choice is None:
        return Next(None, None)
    step, due = choice
    return Next(step.position, max(due, earliest))


def _in_order(left: list[Step], at: datetime, *, gap: _Gap) -> tuple[Step, datetime] | None:
    """The first lesson left, at once (only the welcome lesson is planned this way)."""
    return (left[0], at) if left and gap(left[0]) == 0 else None


def _switched(prefs: Preferences, calendar: Calendar, due: datetime) -> bool:
    return prefs.switched or (
        prefs.treatment_on is not None and calendar.date_of(due) >= prefs.treatment_on
    )


def _ordinary(
    left: list[Step],
    prefs: Preferences,
    calendar: Calendar,
    *,
    at: datetime,
    earliest: datetime,
    gap: _Gap,
) -> tuple[Step, datetime] | None:
    """The course as it goes after the conversation, or without one: from `at`, the last
    lesson, and not before `earliest`."""
    conversation = prefs.conversation_on
    check_in = next((s for s in left if s.anchor == AFTER_CONVERSATION), None)
    if check_in is not None and conversation is not None:
        day_after = conversation + timedelta(days=1)
        if calendar.date_of(earliest) <= day_after:  # not missed: it is the next thing to come
            due = max(calendar.slot(day_after), earliest)
            return check_in, due
    rest = [s for s in left if s.anchor != AFTER_CONVERSATION]
    if not rest:
        return None

    def due_of(step: Step) -> datetime:
        return _not_on_the_day(max(calendar.after(at, gap(step)), earliest), prefs, calendar)

    due = due_of(rest[0])
    if _switched(prefs, calendar, due):
        rest = [s for s in rest if s.after_switch]
        if not rest:
            return None
        due = due_of(rest[0])
    return rest[0], due


def _not_on_the_day(due: datetime, prefs: Preferences, calendar: Calendar) -> datetime:
    """Nothing arrives on the day of the conversation or the days before it but what prepares
    for it: a lesson that would land there waits for the day after."""
    conversation = prefs.conversation_on
    if conversation is not None and calendar.date_of(due) <= conversation:
        return calendar.slot(conversation + timedelta(days=1))
    return due


def _before_conversation(
    left: list[Step],
    prefs: Preferences,
    calendar: Calendar,
    *,
    at: datetime,
    earliest: datetime,
    gap: _Gap,
) -> tuple[Step, datetime] | None:
    """A lesson that prepares for the conversation, before it; None when none is left or no
    day is left for one (then the check-in and the rest come after)."""
    conversation = prefs.conversation_on
    assert conversation is not None
    switched = _switched(prefs, calendar, earliest)
    before = [
        s
        for s in left
        if (s.anchor == BEFORE_CONVERSATION or s.never_skip) and (not switched or s.after_switch)
    ]
    # The days with room for a lesson, up to the day before: from tomorrow (one a day at most),
    # or from the first send slot a pause or a late replan leaves.
    today = calendar.date_of(at)
    first_day = max(today + timedelta(days=1), calendar.date_of(calendar.next_slot(earliest)))
    days_left = (conversation - first_day).days
    if not before or days_left <= 0:
        return None
    if len(before) > days_left:  # more than fit, one a day: the most needed first
        keep = sorted(before, key=lambda s: (not s.never_skip, s.position))[:days_left]
        before = sorted(keep, key=lambda s: s.position)
    first = before[0]
    natural = [max(1, gap(s)) for s in before]
    # At their own pace if they fit; spread evenly over the days left if not.
    own_pace = max(today + timedelta(days=natural[0]), first_day)
    if own_pace + timedelta(days=sum(natural[1:])) < conversation:
        day = own_pace
    else:
        day = first_day + timedelta(days=max(1, days_left // len(before)) - 1)
    return first, calendar.after(at, (day - today).days)


def steps_of(lessons: Sequence[tuple[int, int, str, bool, str]]) -> tuple[Step, ...]:
    """Steps from (position, delay_days, module, never_skip, anchor) rows, in position order."""
    return tuple(Step(*row) for row in sorted(lessons))

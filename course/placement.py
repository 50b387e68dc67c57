"""Where a reader stands in a new version of their course: a pure function of the lessons of the
version they are on, the lessons of the new one, and what they have had, all by lesson key.

Staff change a published course by publishing a new version, and readers in the middle of it
move with it (course.versions). The rules:

- A lesson the reader has had is behind them, wherever it now stands: nobody gets one twice,
  also when staff moved it to a later place.
- A lesson of their version they have not had yet is still to come, wherever it now stands
  (with its new text, if it was edited).
- A removed lesson is gone.
- An added lesson is still to come when it lands ahead of the reader's place, and is skipped
  when it lands among what they have read (nothing is sent retroactively). Their place is
  right after the last lesson they have had that comes before the first lesson of their
  version still to come: a lesson added between the last one they read and the next one they
  were waiting for is ahead of them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from course.plan import AFTER_CONVERSATION, Step


@dataclass(frozen=True, slots=True)
class Placed:
    """A lesson as placing sees it: its key, and its step in its version."""

    key: str
    step: Step


@dataclass(frozen=True)
class Placement:
    """Where a reader stands in the new version."""

    # The lesson to send next (None: nothing is left for this reader: the course is complete).
    next_position: int | None
    # A lesson behind the reader comes after next_position: planning must read what they have
    # had instead of counting up to their last lesson (Enrollment.reordered).
    reordered: bool
    # Added among what the reader has read: never to be sent. Recorded as behind them, or a
    # later replan (which reads what they have had) would send them after all.
    skipped: tuple[int, ...]
    # Every position of the new version behind the reader: had, or skipped.
    behind: frozenset[int]


def place(
    old: Sequence[str], had: Collection[str], new: Sequence[Placed], *, switched: bool
) -> Placement:
    """Place a reader in the new version `new` (in position order). `old`: the keys of the
    version they are on, in order; `had`: the keys of every lesson behind them (in any version
    they had it; for a reader whose order never changed, every lesson of `old` before their
    next one, including those the switch to aftercare skipped); `switched`: they switched to
    aftercare, so only aftercare and never-skip lessons can come next."""
    done = set(had)
    known = set(old) | done
    keys = [lesson.key for lesson in new]
    # The first lesson of their own version still to come, and their place before it.
    first_open = next((i for i, k in enumerate(keys) if k in known and k not in done), len(keys))
    here = max((i for i, k in enumerate(keys[:first_open]) if k in done), default=-1)
    behind: set[int] = set()
    skipped: list[int] = []
    left: list[Step] = []
    for index, lesson in enumerate(new):
        position = lesson.step.position
        if lesson.key in done:
            behind.add(position)
        elif lesson.key not in known and index < here:
            skipped.append(position)
            behind.add(position)
        else:
            left.append(lesson.step)
    upcoming = next((s.position for s in left if _can_come_next(s, switched=switched)), None)
    return Placement(
        next_position=upcoming,
        reordered=upcoming is not None and any(p > upcoming for p in behind),
        skipped=tuple(skipped),
        behind=frozenset(behind),
    )


def _can_come_next(step: Step, *, switched: bool) -> bool:
    # A check-in only goes to readers with a conversation date, who plan from what they have
    # had (course.plan) rather than from a next position.
    if step.anchor == AFTER_CONVERSATION:
        return False
    return step.after_switch or not switched

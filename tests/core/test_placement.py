"""Where a reader stands when a new version of their course is published: course.placement as a
pure function, by lesson key: added after or before the reader's place, edited, removed, moved,
everything removed, the switch to aftercare, a rollback; and for any edit, the rest of the
course as course.plan then sends it (nothing twice, nothing lost, nothing retroactive)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from course.placement import Placed, Placement, place
from course.plan import AFTER_CONVERSATION, Calendar, Preferences, Step, next_lesson


def course(*keys: str, modules: dict[str, str] | None = None, **flags: str) -> list[Placed]:
    """A version's lessons in order: recognize unless `modules` says otherwise; a key in
    `flags` as never_skip="key" or check_in="key" marks that lesson."""
    modules = modules or {}
    return [
        Placed(
            key,
            Step(
                position,
                1,
                modules.get(key, "recognize"),
                never_skip=key == flags.get("never_skip"),
                anchor=AFTER_CONVERSATION if key == flags.get("check_in") else "",
            ),
        )
        for position, key in enumerate(keys, start=1)
    ]


OLD = ["a", "b", "c", "d", "e"]
HAD_TWO = ["a", "b"]  # waiting for c


def placed(new: list[Placed], had: list[str] = HAD_TWO, old: list[str] = OLD) -> Placement:
    return place(old, had, new, switched=False)


def test_a_lesson_added_after_the_readers_place_is_still_to_come():
    found = placed(course("a", "b", "c", "x", "d", "e"))
    assert found == Placement(3, False, (), frozenset({1, 2}))  # c, then x in its turn


def test_a_lesson_added_between_the_last_one_read_and_the_next_comes_next():
    assert placed(course("a", "b", "x", "c", "d", "e")).next_position == 3


def test_a_lesson_added_before_the_readers_place_is_skipped_and_recorded_as_behind_them():
    found = placed(course("x", "a", "y", "b", "c", "d", "e"))
    assert found == Placement(5, False, (1, 3), frozenset({1, 2, 3, 4}))


def test_an_edited_lesson_keeps_its_place():
    assert placed(course(*OLD)) == Placement(3, False, (), frozenset({1, 2}))


def test_a_removed_lesson_is_skipped_whether_it_was_next_or_already_read():
    assert placed(course("a", "b", "d", "e")).next_position == 3  # c removed: d is next
    assert placed(course("a", "c", "d", "e")) == Placement(2, False, (), frozenset({1}))


def test_a_lesson_read_and_moved_later_is_not_sent_again_and_the_order_is_the_readers_own():
    found = placed(course("a", "c", "d", "b", "e"))
    assert found == Placement(2, True, (), frozenset({1, 4}))


def test_a_lesson_added_after_a_read_lesson_moved_ahead_of_it_is_still_to_come():
    # b moved after the new x: x still lands after a, the last lesson read before c.
    found = placed(course("a", "c", "x", "b", "d", "e"))
    assert found.next_position == 2 and found.skipped == () and 3 not in found.behind


def test_with_everything_left_removed_the_course_is_complete():
    assert placed(course("a", "b")) == Placement(None, False, (), frozenset({1, 2}))


def test_a_course_replaced_by_new_lessons_sends_them_from_the_start():
    assert placed(course("x", "y")) == Placement(1, False, (), frozenset())


def test_a_reader_waiting_for_the_first_lesson_gets_the_new_course_from_its_start():
    assert placed(course("x", "a", "b"), had=[]).next_position == 1


def test_after_the_switch_to_aftercare_skipped_lessons_stay_skipped_and_only_aftercare_comes():
    modules = {"care1": "aftercare", "care2": "aftercare", "new-care": "aftercare"}
    old = ["r1", "r2", "safety", "care1", "care2"]
    # Switched after r1: r2 was skipped (it counts as had), the never-skip safety lesson was sent.
    had = ["r1", "r2", "safety"]
    new = course("r1", "r2", "safety", "r3", "new-care", "care1", "care2", modules=modules)
    found = place(old, had, new, switched=True)
    # r3 is new and ahead, but not for a switched reader; the new aftercare lesson comes next.
    assert found == Placement(5, False, (), frozenset({1, 2, 3}))


def test_after_the_switch_a_never_skip_lesson_still_comes():
    modules = {"care": "aftercare"}
    new = course("r1", "r2", "safety", "care", modules=modules, never_skip="safety")
    found = place(["r1", "r2", "care"], ["r1", "r2"], new, switched=True)
    assert found.next_position == 3


def test_a_check_in_never_comes_next_by_position():
    new = course("a", "b", "talk", "c", check_in="talk")
    assert placed(new, old=["a", "b", "talk", "c"]).next_position == 4


def test_a_rollback_and_a_roll_forward_never_send_a_lesson_twice():
    v2 = ["a", "b", "x", "c", "d"]
    # Had x under v2, waiting for c; v3 rolls back to the content without x.
    back = place(v2, ["a", "b", "x"], course("a", "b", "c", "d"), switched=False)
    assert back == Placement(3, False, (), frozenset({1, 2}))
    # v4 brings x back: the reader's history (in any version) says they had it.
    forward = place(["a", "b", "c", "d"], ["a", "b", "x"], course(*v2), switched=False)
    assert forward == Placement(4, False, (), frozenset({1, 2, 3}))


# --- any edit, then the rest of the course as the sending path plans it ------------------------

KEYS = [f"k{n}" for n in range(8)]
ADDED = [f"new{n}" for n in range(4)]


def rest_of_course(
    new: list[Placed], found: Placement, prefs: Preferences | None = None
) -> list[str]:
    """The keys the reader gets from here on, planned as course.plan plans them: counting up
    from their next lesson, or (reordered) from what is behind them."""
    steps = tuple(p.step for p in new)
    key_at = {p.step.position: p.key for p in new}
    got: list[int] = []
    position = found.next_position
    at = datetime(2026, 1, 5, 9, tzinfo=UTC)
    while position is not None:
        got.append(position)
        sent = found.behind | set(got) if found.reordered else None
        nxt = next_lesson(
            steps, prefs or Preferences(), Calendar("UTC", 9), after=position, at=at, sent=sent
        )
        position = nxt.position
        assert len(got) <= len(steps), "the plan never ended"
    return [key_at[p] for p in got]


@settings(max_examples=400, deadline=None)
@given(
    old_size=st.integers(1, len(KEYS)),
    read=st.integers(0, len(KEYS)),
    data=st.data(),
)
def test_any_edit_sends_each_lesson_once_loses_none_and_never_sends_one_retroactively(
    old_size, read, data
):
    old = KEYS[:old_size]
    had = old[: min(read, old_size - 1)]  # still in the middle: one lesson at least to come
    kept = data.draw(st.lists(st.sampled_from(old), unique=True), label="kept, in a new order")
    added = data.draw(st.lists(st.sampled_from(ADDED), unique=True), label="added")
    order = data.draw(st.permutations(kept + added), label="new order")
    new = course(*order)
    found = place(old, had, new, switched=False)
    got = rest_of_course(new, found)
    position_of = {p.key: p.step.position for p in new}

    assert len(got) == len(set(got)), "no lesson twice"
    assert not set(got) & set(had), "nothing read is sent again"
    assert set(got) >= set(kept) - set(had), "every lesson still to come comes"
    assert not {k for k in got if position_of[k] in found.skipped}, "nothing retroactive"
    assert set(got) | {k for k in order if position_of[k] in found.behind} == set(order)
    # Added lessons are skipped only when they land among what the reader has read.
    for key in added:
        later_read = [k for k in order[order.index(key) + 1 :] if k in had]
        if not later_read:
            assert key in got, f"{key} lands after everything read"
    if not found.reordered and found.next_position is not None:
        assert all(p < found.next_position for p in found.behind), "counting up stays right"


@settings(max_examples=300, deadline=None)
@given(
    old_size=st.integers(1, len(KEYS)),
    read=st.integers(0, len(KEYS)),
    aftercare=st.sets(st.sampled_from(KEYS + ADDED)),
    data=st.data(),
)
def test_after_the_switch_any_edit_sends_only_aftercare_still_to_come_once_each(
    old_size, read, aftercare, data
):
    def in_course_order(keys: list[str]) -> list[str]:  # aftercare comes last (lessons check)
        return sorted(keys, key=lambda k: k in aftercare)

    old = in_course_order(KEYS[:old_size])
    had = old[: min(read, old_size - 1)]  # every lesson before the next, skipped ones too
    kept = data.draw(st.lists(st.sampled_from(old), unique=True), label="kept")
    added = data.draw(st.lists(st.sampled_from(ADDED), unique=True), label="added")
    order = in_course_order(data.draw(st.permutations(kept + added), label="new order"))
    modules = {k: "aftercare" for k in aftercare}
    new = course(*order, modules=modules)
    found = place(old, had, new, switched=True)
    keys = rest_of_course(new, found, Preferences(switched=True))
    assert len(keys) == len(set(keys)), "no lesson twice"
    assert all(k in aftercare for k in keys), "only aftercare after the switch"
    assert not set(keys) & set(had), "nothing read or skipped comes back"
    assert set(keys) >= {k for k in kept if k in aftercare} - set(had), "none of it lost"

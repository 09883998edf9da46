"""The pure series tracker: grouping and debounce without a disk or a clock."""

from __future__ import annotations

from agent.series import FileState, SeriesTracker


def test_series_due_only_after_quiet_period() -> None:
    t = SeriesTracker(stable_seconds=10, max_wait=100)
    t.observe("a/1.dcm", "S1", FileState(100, 1), now=0)
    t.observe("b/2.dcm", "S1", FileState(100, 1), now=5)
    assert t.due(14) == []
    due = t.due(15)
    assert [d.key for d in due] == ["S1"]
    assert set(due[0].files) == {"a/1.dcm", "b/2.dcm"}


def test_change_restarts_clock_but_same_state_does_not() -> None:
    t = SeriesTracker(stable_seconds=10, max_wait=100)
    t.observe("1.dcm", "S", FileState(50, 1), now=0)
    t.observe("1.dcm", "S", FileState(50, 1), now=8)   # rescan, unchanged
    assert [d.key for d in t.due(10)] == ["S"]
    t.observe("1.dcm", "S", FileState(80, 2), now=9)   # grew
    assert t.due(10) == []
    assert t.next_deadline(10) == 9


def test_grouping_by_key_not_folder() -> None:
    t = SeriesTracker(stable_seconds=1, max_wait=100)
    t.observe("same/1.dcm", "A", FileState(1, 1), now=0)
    t.observe("same/2.dcm", "B", FileState(1, 1), now=0)
    t.observe("other/3.dcm", "A", FileState(1, 1), now=0)
    groups = {d.key: set(d.files) for d in t.due(5)}
    assert groups == {"A": {"same/1.dcm", "other/3.dcm"}, "B": {"same/2.dcm"}}


def test_postpone_and_expiry() -> None:
    t = SeriesTracker(stable_seconds=10, max_wait=30)
    t.observe("1.dcm", "S", FileState(1, 1), now=0)
    assert t.due(10)
    t.postpone("S", now=10)
    assert t.due(15) == []
    assert t.due(20)
    assert not t.expired("S", 29)
    assert t.expired("S", 30)


def test_forget_and_take() -> None:
    t = SeriesTracker(stable_seconds=1, max_wait=100)
    t.observe("1.dcm", "S", FileState(1, 1), now=0)
    t.observe("2.dcm", "S", FileState(1, 1), now=0)
    t.forget("1.dcm")
    assert set(t.due(2)[0].files) == {"2.dcm"}
    taken = t.take("S")
    assert taken is not None and "S" not in t and len(t) == 0
    assert t.next_deadline(5) is None


def test_file_moving_to_another_series() -> None:
    t = SeriesTracker(stable_seconds=1, max_wait=100)
    t.observe("1.dcm", "A", FileState(1, 1), now=0)
    t.observe("1.dcm", "B", FileState(2, 2), now=1)
    assert {d.key for d in t.due(5)} == {"B"}

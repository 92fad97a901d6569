from streams.dedup import RecentJobIds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_window_by_time_and_size() -> None:
    clock = Clock()
    recent = RecentJobIds(window_s=10, max_entries=2, clock=clock)
    assert not recent.is_duplicate("a", 0, 1)
    assert recent.is_duplicate("a", 0, 2)  # same job, another offset
    assert not recent.is_duplicate("a", 0, 1)  # the same record replayed
    clock.now = 11
    assert not recent.is_duplicate("a", 0, 3)  # outside the window
    assert not recent.is_duplicate("b", 0, 4) and not recent.is_duplicate("c", 0, 5)
    assert len(recent) == 2 and not recent.is_duplicate("a", 0, 6)  # evicted by size

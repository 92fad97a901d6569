from aiokafka import TopicPartition

from modelyard.core.offsets import OffsetTracker

TP = TopicPartition("t", 0)


def test_commits_only_below_oldest_unfinished() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(TP, offset)
    tracker.finished(TP, 11)
    tracker.finished(TP, 12)
    assert tracker.committable() == {TP: 10}
    tracker.mark_committed({TP: 10})
    assert tracker.committable() == {}
    tracker.finished(TP, 10)
    assert tracker.committable() == {TP: 13}
    assert tracker.in_flight == 0


def test_forget_drops_revoked_partitions() -> None:
    tracker = OffsetTracker()
    tracker.started(TP, 1)
    tracker.forget({TP})
    assert tracker.committable() == {} and tracker.in_flight == 0

"""ApproximateTimeSync: the message_filters approximate policy, latest-only queues."""

from __future__ import annotations

import pytest

from mtl3d_perception.runtime.sync import ApproximateTimeSync

MS = 1_000_000


def test_pairs_within_slop_in_either_order():
    got = []
    sync = ApproximateTimeSync(2, queue_size=3, slop_s=0.01, callback=lambda a, b: got.append((a, b)))
    assert not sync.add(0, 100 * MS, "img100")
    assert sync.add(1, 105 * MS, "info105")
    assert not sync.add(1, 200 * MS, "info200")
    assert sync.add(0, 203 * MS, "img203")
    assert got == [("img100", "info105"), ("img203", "info200")]


def test_outside_slop_never_pairs():
    got = []
    sync = ApproximateTimeSync(2, queue_size=3, slop_s=0.01, callback=lambda *m: got.append(m))
    sync.add(0, 100 * MS, "a")
    assert not sync.add(1, 120 * MS, "b")
    assert got == []


def test_closest_stamp_is_preferred_and_used_items_removed():
    got = []
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.05, callback=lambda *m: got.append(m))
    sync.add(0, 100 * MS, "a100")
    sync.add(0, 130 * MS, "a130")
    sync.add(1, 125 * MS, "b125")
    assert got == [("a130", "b125")]
    sync.add(1, 101 * MS, "b101")
    assert got[-1] == ("a100", "b101")


def test_latest_only_queue_drops_old_items():
    got = []
    sync = ApproximateTimeSync(2, queue_size=1, slop_s=0.001, callback=lambda *m: got.append(m))
    sync.add(0, 100 * MS, "old")
    sync.add(0, 200 * MS, "new")
    sync.add(1, 100 * MS, "info-old")
    assert got == []
    sync.add(1, 200 * MS, "info-new")
    assert got == [("new", "info-new")]


def test_three_inputs_and_bad_args():
    got = []
    sync = ApproximateTimeSync(3, queue_size=2, slop_s=0.02, callback=lambda *m: got.append(m))
    sync.add(0, 10 * MS, 0)
    sync.add(2, 25 * MS, 2)
    sync.add(1, 18 * MS, 1)
    assert got == [(0, 1, 2)]
    with pytest.raises(ValueError):
        ApproximateTimeSync(0, 1, 0.1)

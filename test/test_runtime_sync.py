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


def test_time_jump_back_clears_full_queues():
    """A looping bag: leftovers of the first pass fill the latest-only queues. Without clearing them, each new
    (older-stamped) item would be evicted on arrival and no group would ever form again."""
    got = []
    sync = ApproximateTimeSync(2, queue_size=2, slop_s=0.005, callback=lambda *m: got.append(m))
    for t in (9_000, 9_100):  # two images whose camera_info never came
        sync.add(0, t * MS, f"img{t}")
    sync.add(1, 9_200 * MS, "info9200")
    assert got == []
    assert not sync.add(0, 1 * MS, "img0")  # time went back 9 s (to 1 ms: a zero stamp is "unstamped", not time)
    assert sync.add(1, 1 * MS, "info0")
    assert got == [("img0", "info0")] and sync.jumps_back == 1
    assert sync.queues == [{}, {}]


def test_small_step_back_is_not_a_jump():
    got = []
    sync = ApproximateTimeSync(2, queue_size=3, slop_s=0.005, callback=lambda *m: got.append(m))
    sync.add(0, 1_000 * MS, "img1000")
    sync.add(0, 900 * MS, "img900")  # out of order by 0.1 s: kept
    sync.add(1, 1_000 * MS, "info1000")
    sync.add(1, 900 * MS, "info900")
    assert got == [("img1000", "info1000"), ("img900", "info900")] and sync.jumps_back == 0


@pytest.mark.parametrize(("queue_size", "max_age_s", "paired"), [(2, None, 2), (10, None, 12), (None, 5.0, 12)],
                         ids=["queue-2", "node-queue-10", "replay-unlimited"])
def test_images_70ms_after_their_camera_info(queue_size, max_age_s, paired):
    """images_late_70ms (issue 12): at 30 Hz each image comes 70 ms after its camera_info (same stamp). A queue
    of 2 pairs only the first frames; the node's 10 and replay's stamp-bounded queue pair all 12."""
    got = []
    sync = ApproximateTimeSync(2, queue_size=queue_size, slop_s=0.02, callback=lambda *m: got.append(m),
                               max_age_s=max_age_s)
    stamps = [1_700_000_000 * 10**9 + round(i * 1e9 / 30) for i in range(12)]
    arrivals = sorted([(s, 1, s) for s in stamps] + [(s + 70_000_000, 0, s) for s in stamps])
    for _, index, stamp in arrivals:
        sync.add(index, stamp, (index, stamp))
    assert len(got) == paired and all(a[1] == b[1] for a, b in got)


def test_max_age_bounds_unpaired_items():
    """Replay keeps no count limit, but items stamped max_age_s before the newest one go (memory stays bounded)."""
    sync = ApproximateTimeSync(2, queue_size=None, slop_s=0.001, max_age_s=1.0)
    for i in range(50):
        sync.add(0, i * 100_000_000, i)  # 5 s of images whose camera_info never comes
    assert sorted(sync.queues[0]) == [i * 100_000_000 for i in range(39, 50)]


def test_pairing_advice_follows_the_stamps():
    """One rule for the node and replay: what would pair unpaired images, read from the newest stamps."""
    from mtl3d_perception.runtime.sync import pairing_advice

    def advice(image_ms, info_ms, queue="sync_queue_size"):
        return pairing_advice(None if image_ms is None else image_ms * MS, None if info_ms is None else info_ms * MS,
                              0.02, slop="sync_slop_s", queue=queue)

    assert advice(None, 5_000) == "raise sync_queue_size if camera_info arrives late, or sync_slop_s if the stamps differ"
    assert advice(None, 5_000, queue=None) == "raise sync_slop_s if the camera stamps them apart"
    assert advice(5_000, None).startswith("no camera_info has arrived")  # a review: it advised the queue and slop
    assert advice(5_000, 0).startswith("camera_info is unstamped (header stamp 0)")
    assert advice(5_000, -1).startswith("camera_info is unstamped (header stamp not a time: sec < 0 or nanosec >= 1e9)")
    assert advice(0, 5_000).startswith("the image is unstamped (header stamp 0)")  # was "+1000000000 s ... clocks"
    assert advice(5_000, 6_000).endswith("+1.000 s from the newest image: the driver stamps them on different clocks or "
                                         "does not copy the image's stamp; no setting can pair them")
    assert advice(5_000, 4_950) == ("the newest camera_info is stamped -0.050 s from the newest image: raise sync_slop_s "
                                    "above 0.050 s")
    assert advice(5_000, 5_010) == ("the newest camera_info is stamped +0.010 s from the newest image: camera_info may "
                                    "arrive late; raise sync_queue_size")
    # a recording pairs over its whole length (no queue): nothing arrives late there, the camera_info is missing
    assert advice(5_000, 5_010, queue=None) == (
        "the newest camera_info is stamped +0.010 s from the newest image, within sync_slop_s: the camera_info of these "
        "images is not in the recording (pairing spans the whole recording, so none arrived late); the driver or the "
        "recorder dropped them")
    # a second trial: camera_info at 1 Hz beside 10 Hz images was told to raise sync_slop_s above 0.5 s
    slow = pairing_advice(5_000 * MS, 4_500 * MS, 0.02, slop="sync_slop_s", arrivals=(50, 5))
    assert slow.startswith("5 camera_info for 50 images: each image needs its own camera_info")
    assert pairing_advice(5_000 * MS, 4_500 * MS, 0.02, slop="--sync-slop", arrivals=(12, 3)) \
        .startswith("3 camera_info for 12 images: each image needs its own camera_info")
    assert "raise sync_slop_s above 0.500 s" in pairing_advice(5_000 * MS, 4_500 * MS, 0.02, slop="sync_slop_s",
                                                                 arrivals=(46, 45))
    # a bag trial: camera_info recorded once, 2.3 s before the newest of 24 images, was blamed on the clocks
    once = pairing_advice(5_000 * MS, 2_700 * MS, 0.02, slop="--sync-slop", arrivals=(24, 1))
    assert once.startswith("1 camera_info for 24 images: each image needs its own camera_info")
    assert "clocks" in pairing_advice(5_000 * MS, 2_700 * MS, 0.02, slop="--sync-slop", arrivals=(24, 24))

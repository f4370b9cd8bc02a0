"""TransformBuffer: the tf2 semantics the node and replay rely on (chains, interpolation, typed errors, time jumps)."""

from __future__ import annotations

import numpy as np
import pytest

from mtl3d_perception.geometry import interpolate_pose, pose_from_quat_trans, rotation_to_quat
from mtl3d_perception.runtime.tf_buffer import (
    ConnectivityException,
    ExtrapolationException,
    InvalidArgumentException,
    LookupException,
    TransformBuffer,
    TransformException,
)

S = 1_000_000_000


def _T(x=0.0, y=0.0, z=0.0, yaw_deg=0.0) -> np.ndarray:
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return pose_from_quat_trans(rotation_to_quat(R), np.array([x, y, z]))


@pytest.fixture
def buf() -> TransformBuffer:
    b = TransformBuffer(cache_time_s=10.0)
    b.set_transform_matrix("odom", "base_link", 1 * S, _T(0.0), authority="test")
    b.set_transform_matrix("odom", "base_link", 2 * S, _T(1.0, yaw_deg=90.0))
    b.set_transform_matrix("base_link", "camera", 0, _T(z=0.5), is_static=True)
    return b


def test_chain_lookup_at_sample_and_static(buf):
    np.testing.assert_allclose(buf.lookup_matrix("odom", "camera", 2 * S), _T(1.0, yaw_deg=90.0) @ _T(z=0.5), atol=1e-12)


def test_interpolation_is_slerp(buf):
    got = buf.lookup_matrix("odom", "camera", int(1.25 * S))
    want = interpolate_pose(_T(0.0), _T(1.0, yaw_deg=90.0), 0.25) @ _T(z=0.5)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got[:3, 3], [0.25, 0, 0.5], atol=1e-12)


def test_inverse_and_sibling_lookups(buf):
    buf.set_transform_matrix("base_link", "lidar", 0, _T(y=0.2), is_static=True)
    T_cam_lidar = buf.lookup_matrix("camera", "lidar", 2 * S)
    np.testing.assert_allclose(T_cam_lidar, np.linalg.inv(_T(z=0.5)) @ _T(y=0.2), atol=1e-12)
    np.testing.assert_allclose(buf.lookup_matrix("camera", "odom", 2 * S),
                               np.linalg.inv(buf.lookup_matrix("odom", "camera", 2 * S)), atol=1e-12)


def test_time_zero_is_latest_common(buf):
    T, stamp = buf.lookup_matrix_with_stamp("odom", "camera", 0)
    assert stamp == 2 * S
    np.testing.assert_allclose(T, _T(1.0, yaw_deg=90.0) @ _T(z=0.5), atol=1e-12)


def test_typed_errors(buf):
    with pytest.raises(ExtrapolationException, match="future"):
        buf.lookup_matrix("odom", "camera", 3 * S)
    with pytest.raises(ExtrapolationException, match="past"):
        buf.lookup_matrix("odom", "camera", S // 2)
    with pytest.raises(LookupException, match="nowhere"):
        buf.lookup_matrix("odom", "nowhere", S)
    buf.set_transform_matrix("map2", "island", 0, _T(), is_static=True)
    with pytest.raises(ConnectivityException):
        buf.lookup_matrix("odom", "island", S)
    assert issubclass(ExtrapolationException, TransformException)
    assert not buf.can_transform("odom", "camera", 3 * S) and buf.can_transform("odom", "camera", S)


def test_rejects_nan_and_bad_names(buf):
    bad = _T()
    bad[0, 3] = np.nan
    with pytest.raises(InvalidArgumentException, match="^TF_NAN_INPUT: transform odom -> base_link contains NaN"):
        buf.set_transform_matrix("odom", "base_link", 3 * S, bad)
    # a hostile-input trial: these were all labelled "TF_NAN_INPUT / TF_DENORMALIZED_QUATERNION"; tf2's own codes
    for parent, child, code in (("odom", "odom", "TF_SELF_TRANSFORM"), ("", "base_link", "TF_NO_FRAME_ID"),
                                ("odom", "", "TF_NO_CHILD_FRAME_ID")):
        with pytest.raises(InvalidArgumentException, match=f"^{code}: "):
            buf.set_transform_matrix(parent, child, 3 * S, _T())


def test_a_zero_stamped_transform_is_old_data_not_a_time_jump():
    """A hostile-input trial: one TF stamped 0 (an unstamped driver message) cleared the whole dynamic buffer as a
    jump back in time; tf2 ignores it as TF_OLD_DATA, and so does this buffer, keeping what it has."""
    buf = TransformBuffer(cache_time_s=10.0)
    buf.set_transform_matrix("odom", "base_link", 3000 * S, _T(1.0))
    with pytest.raises(InvalidArgumentException, match=r"^TF_OLD_DATA: transform odom -> base_link at 0\.000 s"):
        buf.set_transform_matrix("odom", "base_link", 0, _T(5.0))
    np.testing.assert_allclose(buf.lookup_matrix("odom", "base_link", 3000 * S), _T(1.0), atol=1e-12)


def test_a_late_or_future_transform_on_one_edge_keeps_the_others():
    """A second hostile-input trial: one odom -> base_link message 3 s late (or one stamped in 2038, then normal ones)
    cleared every dynamic transform, map -> odom of another publisher too. As tf2: late data within the cache is
    inserted, older data refused, and one edge's messages never touch another's data."""
    buf = TransformBuffer(cache_time_s=10.0)
    for t in (100, 101, 102):
        buf.set_transform_matrix("map", "odom", t * S, _T(1.0))
        buf.set_transform_matrix("odom", "base_link", t * S, _T(float(t - 100)))
    buf.set_transform_matrix("odom", "base_link", 99 * S, _T(-1.0))  # 3 s late: kept, interpolated between
    np.testing.assert_allclose(buf.lookup_matrix("odom", "base_link", 99 * S + S // 2), _T(-0.5), atol=1e-12)
    buf.set_transform_matrix("odom", "base_link", (2**31 - 1) * S, _T(9.0))  # a bogus future stamp
    # the real stream is now old data, as in tf2; the refusal names the likely cause (a re-check trial)
    with pytest.raises(InvalidArgumentException, match=r"^TF_OLD_DATA.*if 2147483647\.000 s is in the future, one "
                                                       r"message stamped so holds this edge until time passes it"):
        buf.set_transform_matrix("odom", "base_link", 103 * S, _T(3.0))
    np.testing.assert_allclose(buf.lookup_matrix("map", "odom", 101 * S), _T(1.0), atol=1e-12)  # untouched
    with pytest.raises(ExtrapolationException, match="extrapolation into the past"):  # the driver's advice keys on it
        buf.lookup_matrix("odom", "base_link", 103 * S)


def test_lookups_refuse_frame_ids_with_a_leading_slash(buf):
    """As tf2's validateFrameId: '/odom' is refused in a lookup (so CI and a robot agree), stripped when inserted."""
    with pytest.raises(InvalidArgumentException, match=r"\"/odom\" passed to lookupTransform argument target_frame"):
        buf.lookup_matrix("/odom", "camera", S)
    with pytest.raises(InvalidArgumentException, match="source_frame in tf2 frame_ids cannot start with a '/'"):
        buf.lookup_matrix("odom", "/camera", S)
    with pytest.raises(InvalidArgumentException, match="cannot be empty"):
        buf.lookup_matrix("", "camera", S)
    assert not buf.can_transform("/odom", "camera", S)
    buf.set_transform_matrix("/odom", "/base_link", 3 * S, _T(2.0))  # tf2's setTransform strips the slash
    np.testing.assert_allclose(buf.lookup_matrix("odom", "base_link", 3 * S), _T(2.0))


def test_cache_window_prunes_old_data(buf):
    buf.set_transform_matrix("odom", "base_link", 12 * S, _T(2.0))
    with pytest.raises(ExtrapolationException):
        buf.lookup_matrix("odom", "base_link", 1 * S)
    assert buf.can_transform("odom", "base_link", 2 * S)


def test_data_older_than_the_cache_is_old_data_until_the_caller_clears(buf):
    """A looping bag: its second pass is older than the cache; as tf2, refused until the caller, who sees time jump
    (the node's images, a /clock jump), clears the buffer; static transforms stay."""
    buf.set_transform_matrix("odom", "base_link", 100 * S, _T(5.0))
    with pytest.raises(InvalidArgumentException, match="^TF_OLD_DATA: transform odom -> base_link at 1.000 s"):
        buf.set_transform_matrix("odom", "base_link", 1 * S, _T(7.0))  # the bag looped: 99 s back, past the 10 s cache
    buf.clear()
    buf.set_transform_matrix("odom", "base_link", 1 * S, _T(7.0))
    np.testing.assert_allclose(buf.lookup_matrix("odom", "camera", 1 * S), _T(7.0) @ _T(z=0.5), atol=1e-12)
    with pytest.raises(ExtrapolationException):
        buf.lookup_matrix("odom", "base_link", 100 * S)


def test_clear_keeps_static(buf):
    buf.clear()
    assert buf.can_transform("base_link", "camera", 5 * S)
    assert not buf.can_transform("odom", "camera", 2 * S)


# ---------------------------------------------------------------------------- the compat tf2_ros on top of it


def test_compat_tf2_ros_buffer_with_messages():
    from rosbags.typesys import Stores, get_typestore

    from mtl3d_perception.msgs import conversions as cv
    from mtl3d_perception.ros.compat import tf2_ros as compat_tf2

    types = get_typestore(Stores.ROS2_JAZZY).types
    buffer = compat_tf2.Buffer(types=types)
    assert buffer.set_transform(cv.make_transform_stamped(types, cv.make_header(types, S, "odom"), "base_link",
                                                          _T(1.0)), "test")
    assert buffer.set_transform_static(cv.make_transform_stamped(types, cv.make_header(types, 0, "base_link"),
                                                                 "camera", _T(z=0.5)), "test")
    stamp = types["builtin_interfaces/msg/Time"](sec=1, nanosec=0)
    ts = buffer.lookup_transform("odom", "camera", stamp)
    assert ts.header.frame_id == "odom" and ts.child_frame_id == "camera"
    np.testing.assert_allclose(cv.transform_to_matrix(ts.transform), _T(1.0) @ _T(z=0.5), atol=1e-12)
    assert buffer.can_transform("odom", "camera", S) and not buffer.can_transform("odom", "camera", 2 * S)
    with pytest.raises(compat_tf2.ExtrapolationException):
        buffer.lookup_transform("odom", "camera", 2 * S)
    nan = cv.make_transform_stamped(types, cv.make_header(types, 2 * S, "odom"), "base_link", _T(1.0))
    nan.transform.translation.x = float("nan")
    assert not buffer.set_transform(nan, "test") and buffer.rejected == 1  # logged and ignored, like tf2


def test_compat_tf2_ros_rejected_transforms_log_throttled(caplog):
    """A publisher sending NaN poses at TF rate gives one error line per throttle period, with the count."""
    from rosbags.typesys import Stores, get_typestore

    from mtl3d_perception.msgs import conversions as cv
    from mtl3d_perception.ros.compat import tf2_ros as compat_tf2

    types = get_typestore(Stores.ROS2_JAZZY).types
    buffer = compat_tf2.Buffer(types=types)
    nan = cv.make_transform_stamped(types, cv.make_header(types, S, "odom"), "base_link", _T(1.0))
    nan.transform.rotation.w = float("nan")
    with caplog.at_level("ERROR", logger=compat_tf2.__name__):
        for _ in range(50):
            assert not buffer.set_transform(nan, "test")
    assert buffer.rejected == 50
    assert len(caplog.records) == 1 and "TF_NAN_INPUT" in caplog.records[0].getMessage()
    denormal = cv.make_transform_stamped(types, cv.make_header(types, S, "odom"), "base_link", _T(1.0))
    denormal.transform.rotation.w = 2.0
    messages = []
    buffer.core.on_problem = lambda kind, message: messages.append(message)
    assert not buffer.set_transform(denormal, "test")
    assert messages[-1].startswith("TF_DENORMALIZED_QUATERNION: ignoring transform odom -> base_link")
    self_tf = cv.make_transform_stamped(types, cv.make_header(types, S, "odom"), "odom", _T(1.0))
    assert not buffer.set_transform(self_tf, "test")
    assert messages[-1].startswith("ignoring transform odom -> odom from authority test: TF_SELF_TRANSFORM")


def test_transforms_recorded_out_of_order_are_inserted_in_time_order_and_counted():
    """A trial: odometry recorded in reversed bursts. As tf2's BufferCore, a late sample is inserted in time order (the
    lookup after it no longer interpolates across its gap), and it is counted, not silent."""
    buf = TransformBuffer(cache_time_s=10.0)
    for t, x in ((10, 0.0), (15, 5.0), (14, 4.0), (13, 3.0), (11, 1.0), (12, 2.0), (16, 6.0), (16, 6.0)):
        buf.set_transform_matrix("odom", "base_link", t * S // 10, _T(x, yaw_deg=10 * x))
    assert buf.out_of_order == 4  # 14, 13, 11 and 12 came after 15; a repeated stamp is no disorder
    assert buf.max_out_of_order_ns == 4 * S // 10  # 11 after 15
    np.testing.assert_allclose(buf.lookup_matrix("odom", "base_link", 12 * S // 10), _T(2.0, yaw_deg=20.0), atol=1e-12)


def test_tf_frames_reads_tf2s_and_the_compat_buffers_listing():
    """The frame ids a missing-frame message lists: tf2's all_frames_as_string() names parents only as parents."""
    import types

    from mtl3d_perception.msgs.tf import tf_frames
    from mtl3d_perception.ros.compat.tf2_ros import Buffer

    tf2 = types.SimpleNamespace(all_frames_as_string=lambda: "Frame base_link exists with parent odom.\n"
                                                             "Frame camera_optical exists with parent base_link.\n")
    assert tf_frames(tf2) == ["base_link", "camera_optical", "odom"]
    buffer = Buffer()
    buffer.core.set_transform_matrix("odom", "base_link", 0, np.eye(4), is_static=True)
    assert tf_frames(buffer) == ["base_link", "odom"]
    assert tf_frames(object()) == []

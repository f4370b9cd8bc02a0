"""rosbag2 I/O: a sequence written as a bag reads back exactly, in both storages, with raw or compressed images;
errors; the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import render_frames
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import Reader

from mtl3d_perception import cli, topics
from mtl3d_perception.data.bag import (
    COMPRESSED_IMAGE_TYPE,
    T_BASE_CAM,
    BagError,
    bag_provenance,
    bag_topics,
    ns_to_seconds,
    read_bag,
    seconds_to_ns,
    write_bag,
)
from mtl3d_perception.data.sequence import PosedSequence, SequenceError, describe_provenance, write_sequence
from mtl3d_perception.data.sources.bag import read_bag_sequence
from mtl3d_perception.data.synthetic import iter_sequence, scene_provenance
from mtl3d_perception.geometry import check_rigid, rotation_angle
from mtl3d_perception.typed_config import SettingError

N_FRAMES = 5


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory):
    return write_sequence(tmp_path_factory.mktemp("bag") / "seq", render_frames(7, N_FRAMES, (32, 24)))


@pytest.mark.parametrize("storage", ["mcap", "db3"])
def test_round_trip_gives_back_the_sequence(tmp_path, seq_dir, storage):
    seq = PosedSequence(seq_dir)
    bag = write_bag(seq, tmp_path / "bag", storage=storage)
    assert (bag / f"bag.{storage}").is_file() and (bag / "metadata.yaml").is_file()
    back = read_bag_sequence(bag)
    assert len(back) == len(seq)
    for f, g in zip(seq, back):
        np.testing.assert_array_equal(g.rgb, f.rgb)
        np.testing.assert_array_equal(g.K, f.K)
        assert seconds_to_ns(g.stamp) == seconds_to_ns(f.stamp) and g.stamp == f.stamp
        np.testing.assert_allclose(g.T_world_cam, f.T_world_cam, atol=1e-6)  # through odom -> base_link -> camera
        np.testing.assert_array_equal(g.depth, f.depth)  # 32FC1 ground truth, NaN where invalid
        np.testing.assert_array_equal(g.semantic, f.semantic)


def test_training_labels_leave_out_a_rectified_border(tmp_path, seq_dir):
    """A raw image with plumb_bob k1 = 0.4 rectifies to a black border with no image data (a replay trial); training
    and eval read the same frames, so the depth there is NaN and the labels ignored (255), not learned from black."""
    from helpers import copy_bag

    from mtl3d_perception.classes import IGNORE_INDEX

    def distorted(topic, index, msg):
        if topic == topics.CAMERA_INFO_TOPIC:
            msg.d = np.array([0.4, 0.0, 0.0, 0.0, 0.0])
        return msg

    seq = PosedSequence(seq_dir)
    copy_bag(write_bag(seq, tmp_path / "src"), tmp_path / "bag", edit=distorted)
    back = read_bag_sequence(tmp_path / "bag")
    assert len(back) == len(seq)
    border = np.isnan(back[0].depth) & np.isfinite(seq[0].depth)
    assert 0.05 < border.mean() < 0.5 and border[0, 0] and not border[12, 16]
    assert (back[0].semantic[border] == IGNORE_INDEX).all()
    assert (back[0].semantic[~border] != IGNORE_INDEX).mean() > 0.9


def test_messages_come_in_time_order_with_matching_headers(tmp_path, seq_dir):
    bag = write_bag(seq_dir, tmp_path / "bag")
    msgs = list(read_bag(bag))
    assert [t for _, t, _ in msgs] == sorted(t for _, t, _ in msgs)
    counts = {}
    for topic, t_ns, msg in msgs:
        counts[topic] = counts.get(topic, 0) + 1
        stamp = msg.transforms[0].header.stamp if topic in (topics.TF_TOPIC, topics.TF_STATIC_TOPIC) else msg.header.stamp
        assert stamp.sec * 1_000_000_000 + stamp.nanosec == t_ns
    assert counts == {topics.TF_STATIC_TOPIC: 1, topics.TF_TOPIC: N_FRAMES, topics.CAMERA_INFO_TOPIC: N_FRAMES,
                      topics.IMAGE_TOPIC: N_FRAMES, topics.GT_DEPTH_TOPIC: N_FRAMES, topics.GT_SEMANTIC_TOPIC: N_FRAMES}
    only = list(read_bag(bag, topics=[topics.IMAGE_TOPIC, "/not/in/bag"]))
    assert len(only) == N_FRAMES and all(topic == topics.IMAGE_TOPIC for topic, _, _ in only)


def test_messages_follow_ros_conventions(tmp_path, seq_dir):
    bag = write_bag(seq_dir, tmp_path / "bag")
    seq = PosedSequence(seq_dir)
    first = {}
    for topic, _, msg in read_bag(bag):
        first.setdefault(topic, msg)
    image, info = first[topics.IMAGE_TOPIC], first[topics.CAMERA_INFO_TOPIC]
    assert image.encoding == "rgb8" and image.header.frame_id == topics.CAMERA_FRAME
    assert (image.width, image.height, image.step) == (32, 24, 96)
    assert info.header.frame_id == topics.CAMERA_FRAME and info.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(info.d, np.zeros(5))
    np.testing.assert_array_equal(info.r.reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(info.p.reshape(3, 4), np.hstack([seq.K, np.zeros((3, 1))]))
    assert first[topics.GT_DEPTH_TOPIC].encoding == "32FC1" and first[topics.GT_SEMANTIC_TOPIC].encoding == "mono8"
    static = first[topics.TF_STATIC_TOPIC].transforms[0]
    assert (static.header.frame_id, static.child_frame_id) == (topics.BASE_FRAME, topics.CAMERA_FRAME)
    dynamic = first[topics.TF_TOPIC].transforms[0]
    assert (dynamic.header.frame_id, dynamic.child_frame_id) == (topics.WORLD_FRAME, topics.BASE_FRAME)


def test_camera_extrinsic_is_a_realistic_head_camera():
    T = check_rigid(T_BASE_CAM)
    np.testing.assert_allclose(T[:3, 3], [0.2, 0.0, 0.3])
    assert rotation_angle(T[:3, :3]) > 1.0  # optical frame, not identity
    np.testing.assert_allclose(T[:3, 2], [np.cos(np.radians(10)), 0, -np.sin(np.radians(10))], atol=1e-12)  # looks ahead, 10 deg down
    assert T[:3, 0] @ [0, -1, 0] > 0.99  # image x is the robot's right


def test_synthetic_base_link_stays_level_and_on_height(tmp_path, seq_dir):
    """With the head camera's pitch, the synthetic robot's base_link is (nearly) level at ~0.95 m."""
    tfs = [msg.transforms[0] for _, _, msg in read_bag(write_bag(seq_dir, tmp_path / "bag"), [topics.TF_TOPIC])]
    for tf in tfs:
        q = tf.transform.rotation
        tilt = np.degrees(2 * np.arcsin(np.hypot(q.x, q.y)))
        assert tilt < 6 and 0.8 < tf.transform.translation.z < 1.1


def test_a_y_up_world_is_written_z_up(tmp_path, seq_dir):
    """A viewer trial: the HoloLens sequence's world is y-up, and `mtl3d bag` wrote it into odom as it was, so RViz
    showed the floor standing up. The world is turned z-up (a quarter turn here); relative poses are kept, so
    everything the runtime computes is unchanged; --keep-world writes it as it is."""
    import dataclasses

    seq = PosedSequence(seq_dir)
    y_up = np.eye(4)
    y_up[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]  # z-up -> y-up (a quarter turn about x)
    frames = [dataclasses.replace(f, T_world_cam=y_up @ f.T_world_cam) for f in seq]
    turned = write_sequence(tmp_path / "y_up", frames)
    back = read_bag_sequence(write_bag(turned, tmp_path / "bag"))
    down = np.mean([g.T_world_cam[:3, 1] for g in back], axis=0)  # optical +y is down
    assert down[2] < -0.9 * np.linalg.norm(down)
    for f, g in zip(seq, back):  # a z-up world again (up to a turn about z): the same motion between frames
        np.testing.assert_allclose(np.linalg.inv(back[0].T_world_cam) @ g.T_world_cam,
                                   np.linalg.inv(seq[0].T_world_cam) @ f.T_world_cam, atol=1e-6)
        assert abs(g.T_world_cam[2, 3] - f.T_world_cam[2, 3]) < 1e-6  # heights kept
    kept = read_bag_sequence(write_bag(turned, tmp_path / "kept", z_up=False))
    np.testing.assert_allclose(kept[1].T_world_cam, frames[1].T_world_cam, atol=1e-6)


def test_a_real_y_up_sequence_is_written_z_up(tmp_path, hololens_dir, capsys):
    """The real case: the HoloLens cameras' mean down is -y in their world; in the bag it is -z."""
    seq = tmp_path / "slice"
    (seq / "images").mkdir(parents=True)
    names = sorted(p.stem for p in (hololens_dir / "images").iterdir())[:8]
    for name in names:
        (seq / "images" / f"{name}.jpg").symlink_to(hololens_dir / "images" / f"{name}.jpg")
    (seq / "K.txt").symlink_to(hololens_dir / "K.txt")
    (seq / "poses.txt").write_text("".join((hololens_dir / "poses.txt").read_text().splitlines(True)[:8]))
    assert cli.main(["bag", str(seq), "--out", str(tmp_path / "bag")]) == 0
    assert "its cameras' mean down was -y" in capsys.readouterr().out
    down = np.mean([g.T_world_cam[:3, 1] for g in read_bag_sequence(tmp_path / "bag")], axis=0)
    assert down[2] < -0.8 * np.linalg.norm(down)


def test_stamps_from_zero_are_written_later(tmp_path, seq_dir, caplog):
    """A user trial: a timestamps.txt starting at 0.000 gave a first image stamped 0, which ROS reads as "no stamp"
    (replay blamed the camera driver and ran that frame single-view). The stamps are moved by START_TIME_S, spacing
    kept, and a warning says so."""
    import dataclasses

    from mtl3d_perception.data.sequence import START_TIME_S

    seq = PosedSequence(seq_dir)
    frames = [dataclasses.replace(f, stamp=0.1 * i) for i, f in enumerate(seq)]
    with caplog.at_level("WARNING"):
        back = read_bag_sequence(write_bag(frames, tmp_path / "bag"))
    assert "stamps start at 0.000 s; ROS reads a zero stamp as none" in caplog.text
    assert [g.stamp for g in back] == pytest.approx([START_TIME_S + 0.1 * i for i in range(len(frames))], abs=1e-6)


def test_offered_qos_profiles_are_recorded(tmp_path, seq_dir):
    bag = write_bag(seq_dir, tmp_path / "bag", storage="db3")
    with Reader(bag) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert qos[topics.TF_STATIC_TOPIC][0].durability == QosDurability.TRANSIENT_LOCAL
    assert qos[topics.TF_STATIC_TOPIC][0].reliability == QosReliability.RELIABLE
    for topic in (topics.TF_TOPIC, topics.IMAGE_TOPIC, topics.CAMERA_INFO_TOPIC, topics.GT_DEPTH_TOPIC):
        assert qos[topic][0].durability == QosDurability.VOLATILE
        assert qos[topic][0].reliability == QosReliability.RELIABLE


def test_rate_overrides_the_stamps(tmp_path, seq_dir):
    seq = PosedSequence(seq_dir)
    back = read_bag_sequence(write_bag(seq, tmp_path / "bag", rate_hz=4.0))
    t0 = seconds_to_ns(seq.stamps[0])
    assert [seconds_to_ns(f.stamp) for f in back] == [t0 + i * 250_000_000 for i in range(N_FRAMES)]


def test_frames_without_ground_truth_and_from_a_list(tmp_path):
    frames = render_frames(3, 3, (16, 12))
    for f in frames:
        f.depth, f.semantic = None, None
    bag = write_bag(frames, tmp_path / "bag")
    assert topics.GT_DEPTH_TOPIC not in bag_topics(bag) and topics.GT_SEMANTIC_TOPIC not in bag_topics(bag)
    back = read_bag_sequence(bag / "bag.mcap")  # a single storage file reads too
    assert back[2].depth is None and np.allclose(back[2].T_world_cam, frames[2].T_world_cam, atol=1e-6)


COMPRESSED_TOPIC = topics.IMAGE_TOPIC + "/compressed"


@pytest.mark.parametrize("compressed", ["png", "jpeg"])
def test_compressed_images_round_trip(tmp_path, seq_dir, compressed):
    """Images as a robot often records them: CompressedImage on <image topic>/compressed, and no raw topic."""
    seq = PosedSequence(seq_dir)
    bag = write_bag(seq, tmp_path / "bag", compressed=compressed)
    available = bag_topics(bag)
    assert available[COMPRESSED_TOPIC] == COMPRESSED_IMAGE_TYPE and topics.IMAGE_TOPIC not in available
    first = next(msg for _, _, msg in read_bag(bag, [COMPRESSED_TOPIC]))
    assert first.format == f"rgb8; {compressed} compressed bgr8" and first.header.frame_id == topics.CAMERA_FRAME
    for image_topic in (topics.IMAGE_TOPIC, COMPRESSED_TOPIC):  # the default finds the compressed stream
        back = read_bag_sequence(bag, image_topic=image_topic)
        assert len(back) == len(seq)
        for f, g in zip(seq, back):
            assert g.rgb.shape == f.rgb.shape and g.stamp == f.stamp
            if compressed == "png":
                np.testing.assert_array_equal(g.rgb, f.rgb)
            else:
                assert np.abs(g.rgb.astype(int) - f.rgb).mean() < 8  # measured ~4; R and B swapped gives ~21
            np.testing.assert_allclose(g.T_world_cam, f.T_world_cam, atol=1e-6)


def test_read_sequence_errors_list_the_topics(tmp_path, seq_dir):
    bag = write_bag(seq_dir, tmp_path / "bag")
    with pytest.raises(BagError, match=r"image topic '/cam' is not in the bag; expected sensor_msgs/msg/Image or "
                                       r"sensor_msgs/msg/CompressedImage\. The bag has: .*"
                                       r"/camera/color/image_raw \(sensor_msgs/msg/Image\)"):
        read_bag_sequence(bag, image_topic="/cam")
    with pytest.raises(BagError, match=r"camera_info topic '/tf' has type tf2_msgs/msg/TFMessage; "
                                       r"expected sensor_msgs/msg/CameraInfo"):
        read_bag_sequence(bag, camera_info_topic="/tf")


def test_stamp_conversions_are_exact_for_float_seconds():
    for s in (1_700_000_000.1, 1_700_000_001.9, 0.5, 12.000000001):
        assert ns_to_seconds(seconds_to_ns(s)) == s
    assert seconds_to_ns(1.5) == 1_500_000_000


def test_write_errors(tmp_path, seq_dir):
    write_bag(seq_dir, tmp_path / "bag")
    with pytest.raises(BagError, match="bag: already exists"):
        write_bag(seq_dir, tmp_path / "bag")
    with pytest.raises(BagError, match=r"out\.mcap: a rosbag2 is a directory"):
        write_bag(seq_dir, tmp_path / "out.mcap")
    with pytest.raises(BagError, match="unknown bag storage 'bag'"):
        write_bag(seq_dir, tmp_path / "x", storage="bag")
    with pytest.raises(BagError, match="no frames to write"):
        write_bag([], tmp_path / "empty")
    assert not (tmp_path / "empty").exists()  # no half-written bag left behind
    frames = render_frames(1, 2, (16, 12))
    frames[1].K = frames[1].K * 2
    with pytest.raises(BagError, match="frame 1 changes K or image size"):
        write_bag(frames, tmp_path / "two_cameras")
    assert not (tmp_path / "two_cameras").exists()
    for rate_hz in (0, -10.0, float("inf")):  # a setting's error, which `mtl3d bag` words as --rate
        with pytest.raises(SettingError, match=f"^rate_hz must be a finite number > 0, got {rate_hz}$"):
            write_bag(seq_dir, tmp_path / "y", rate_hz=rate_hz)
    assert not (tmp_path / "y").exists()
    with pytest.raises(BagError, match="unknown image compression 'h264'; expected one of jpeg, png"):
        write_bag(seq_dir, tmp_path / "z", compressed="h264")


def test_read_errors(tmp_path, seq_dir):
    with pytest.raises(FileNotFoundError, match="no such bag"):
        read_bag(tmp_path / "missing")
    bag = write_bag(seq_dir, tmp_path / "bag")
    storage = bag / "bag.mcap"
    storage.write_bytes(storage.read_bytes()[:200])  # truncated: a recording cut off mid-write
    with pytest.raises(BagError, match=r"bag: cannot open bag") as info:
        list(read_bag(bag))
    # a trial: the error named neither the cut file nor what to do
    assert f"{storage} ends without the MCAP footer" in str(info.value) and "mcap recover" in str(info.value)
    notes = tmp_path / "notes.md"
    notes.write_text("# not a bag\n")
    with pytest.raises(BagError, match=r"notes\.md: not a bag file \(\.md\); expected a rosbag2 folder or a \.mcap / \.db3"):
        list(read_bag(notes))
    with pytest.raises(BagError, match=r"seq: not a rosbag2 folder \(no metadata\.yaml\).*a posed RGB-D sequence "
                                       r"folder: write it as a bag first with `mtl3d bag"):
        read_bag(seq_dir)  # the sequence given where its bag belongs
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"empty: not a rosbag2 folder \(no metadata\.yaml\); expected a rosbag2 "
                                       r"folder or a \.mcap / \.db3 file$"):
        bag_topics(tmp_path / "empty")
    junk = tmp_path / "junk.db3"
    junk.write_bytes(b"this is not sqlite")
    with pytest.raises(BagError, match=r"junk\.db3: cannot"):
        list(read_bag(junk))


def test_cli_synth_then_bag(tmp_path, capsys):
    seq, bag = tmp_path / "synth", tmp_path / "synth_bag"
    assert cli.main(["synth", "--seed", "2", "--frames", "4", "--size", "24x16", "--out", str(seq)]) == 0
    scenes = scene_provenance()  # which scene a seed gives depends on these: the user is told
    assert f"generator v{scenes['generator']}, {scenes['textures']} textures" in capsys.readouterr().out
    assert cli.main(["bag", str(seq), "--out", str(bag), "--format", "db3", "--rate", "20"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and topics.IMAGE_TOPIC in out
    sequence = PosedSequence(seq)
    assert sequence.has_normals and sequence.has_semantic and np.load(sequence.optional_paths["normals"][0]).dtype == np.float16
    back = read_bag_sequence(bag)
    assert len(back) == 4 and back[0].rgb.shape == (16, 24, 3)
    np.testing.assert_allclose(back[3].T_world_cam, sequence.poses[3], atol=1e-6)
    assert back[1].stamp - back[0].stamp == pytest.approx(0.05)
    assert cli.main(["bag", str(seq), "--out", str(tmp_path / "jpeg_bag"), "--compressed", "jpeg"]) == 0
    assert COMPRESSED_TOPIC in capsys.readouterr().out
    assert bag_topics(tmp_path / "jpeg_bag")[COMPRESSED_TOPIC] == COMPRESSED_IMAGE_TYPE
    # library errors surface as one ERROR line and exit status 1
    assert cli.main(["bag", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b2")]) == 1
    assert "ERROR:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["synth", "--size", "big", "--out", str(tmp_path / "s2")])
    # which scene it is travels from the sequence folder into the bag's metadata, where replay reads it
    record = {"kind": "synthetic", "seed": 2, **scenes}
    assert sequence.provenance == record and bag_provenance(bag) == record
    assert describe_provenance(record) == (f"synthetic scene 2 (generator v{scenes['generator']}, "
                                           f"{scenes['textures']} textures)")


def test_provenance_is_optional_and_checked(tmp_path):
    """Recorded sequences and bags have none (None, not an error); a provenance.json that is not an object is named."""
    frames = list(iter_sequence(3, 2, (24, 16)))
    plain = write_sequence(tmp_path / "plain", frames)
    assert PosedSequence(plain).provenance is None
    write_bag(plain, tmp_path / "plain_bag")
    assert bag_provenance(tmp_path / "plain_bag") is None
    (plain / "provenance.json").write_text("[1, 2]")
    with pytest.raises(SequenceError, match=r"provenance\.json: expected a JSON object, got list"):
        PosedSequence(plain)
    (plain / "provenance.json").write_text("{not json")
    with pytest.raises(SequenceError, match=r"provenance\.json: not JSON"):
        PosedSequence(plain)
    other = write_sequence(tmp_path / "other", frames, provenance={"kind": "capture", "camera": "d435"})
    write_bag(other, tmp_path / "other_bag", storage="db3")
    assert bag_provenance(tmp_path / "other_bag") == {"kind": "capture", "camera": "d435"}
    assert describe_provenance({"kind": "capture", "camera": "d435"}) == '{"camera": "d435", "kind": "capture"}'
    # a value hand-edited into metadata.yaml unquoted (a YAML mapping, not a JSON string) is no provenance, not a crash
    info = tmp_path / "other_bag" / "metadata.yaml"
    info.write_text(info.read_text().replace("mtl3d.provenance: '{", "mtl3d.provenance: {").replace("}'", "}"))
    assert "mtl3d.provenance: {" in info.read_text() and bag_provenance(tmp_path / "other_bag") is None
    # a lone storage file beside another bag's metadata.yaml does not take that bag's provenance
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "metadata.yaml").write_text((tmp_path / "other_bag" / "metadata.yaml").read_text())
    (lone / "elsewhere.db3").write_bytes(b"")
    assert bag_provenance(lone / "elsewhere.db3") is None
    # provenance that JSON cannot hold is refused before anything is written
    with pytest.raises(SequenceError, match="provenance is not JSON-serialisable"):
        write_sequence(tmp_path / "bad", frames, provenance={"seed": np.int64(3)})
    assert not (tmp_path / "bad" / "images").exists()

    class Frames(list):
        """Frames with a provenance attribute, as PosedSequence has."""

    unserialisable = Frames(frames)
    unserialisable.provenance = {"seed": np.int64(3)}
    with pytest.raises(BagError, match="provenance is not JSON-serialisable"):
        write_bag(unserialisable, tmp_path / "bad_bag")
    assert not (tmp_path / "bad_bag").exists()


@pytest.mark.ros
def test_ros2_deserialises_the_recorded_bytes(tmp_path, seq_dir):
    """The bag's CDR bytes are what a ROS 2 Jazzy subscriber receives (byte compatibility with rclpy)."""
    serialization = pytest.importorskip("rclpy.serialization")
    msg_types = pytest.importorskip("sensor_msgs.msg")
    bag = write_bag(seq_dir, tmp_path / "bag")
    seq = PosedSequence(seq_dir)
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic in (topics.IMAGE_TOPIC, topics.CAMERA_INFO_TOPIC)]
        for conn, _, raw in reader.messages(connections=conns):
            cls = msg_types.Image if conn.topic == topics.IMAGE_TOPIC else msg_types.CameraInfo
            msg = serialization.deserialize_message(raw, cls)
            if conn.topic == topics.IMAGE_TOPIC:
                assert msg.encoding == "rgb8" and msg.width == 32
            else:
                np.testing.assert_array_equal(np.asarray(msg.k).reshape(3, 3), seq.K)


def test_types_missing_from_the_jazzy_store_come_from_the_bag(tmp_path):
    """A bag with a custom message (its definition stored in the bag) still reads."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg("float64 score\nstring note", "test_msgs/msg/Score"))
    cls = store.types["test_msgs/msg/Score"]
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/score", "test_msgs/msg/Score", typestore=store)
        for i in range(3):
            writer.write(conn, 10 + i, store.serialize_cdr(cls(score=float(i), note=f"n{i}"), "test_msgs/msg/Score"))
    got = list(read_bag(tmp_path / "bag"))
    assert [(topic, t, msg.score, msg.note) for topic, t, msg in got] == [
        ("/score", 10 + i, float(i), f"n{i}") for i in range(3)
    ]


def test_an_absent_topic_names_its_compressed_recording():
    """A trial: a bag with only /camera/depth/image_rect/compressedDepth (compressed_depth_image_transport) said just
    "no ground-truth depth"; the note now names the compressed topic and what to do."""
    from mtl3d_perception.data.bag import absent_topic

    available = {"/camera/color/image_raw": "sensor_msgs/msg/Image",
                 "/camera/depth/image_rect/compressedDepth": "sensor_msgs/msg/CompressedImage",
                 "/camera/color/image_raw/compressed": "sensor_msgs/msg/CompressedImage"}
    note = absent_topic("b", available, "/camera/depth/image_rect", "ground-truth depth")
    assert note.startswith("b: ground-truth depth topic '/camera/depth/image_rect' is not in the bag (its Image "
                           "topics: /camera/color/image_raw)")
    assert "; /camera/depth/image_rect/compressedDepth holds it compressed (CompressedImage)" in note
    assert "compressed" not in absent_topic("b", available, "/gt/semantic", "ground-truth semantic")


def test_a_ros1_bag_is_refused_with_the_conversion_that_works(seq_dir, tmp_path):
    """Public RGB-D datasets ship ROS 1 bags: refused as "not a bag file (.bag)" with no way forward. The message names
    the rosbags CLI's conversion, and the converted bag reads."""
    import subprocess
    import sys

    from rosbags.highlevel import AnyReader
    from rosbags.rosbag1 import Writer as Ros1Writer
    from rosbags.typesys import Stores, get_typestore

    ros1 = get_typestore(Stores.ROS1_NOETIC)
    bag2 = write_bag(seq_dir, tmp_path / "bag")
    ros1_bag = tmp_path / "recording.bag"
    header = ros1.types["std_msgs/msg/Header"]
    with AnyReader([bag2]) as reader, Ros1Writer(ros1_bag) as writer:
        images = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"]
        out = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=ros1) for c in images}
        for c, t, raw in reader.messages(images):
            msg = reader.deserialize(raw, c.msgtype)
            msg.header = header(seq=0, stamp=msg.header.stamp, frame_id=msg.header.frame_id)
            writer.write(out[c.id], t, ros1.serialize_ros1(msg, c.msgtype))
    converted = tmp_path / "recording_ros2"
    with pytest.raises(BagError, match=re.escape(
            f"{ros1_bag}: a ROS 1 bag; convert it to a rosbag2 first with the rosbags CLI installed with this package: "
            f"`rosbags-convert --src {ros1_bag} --dst {converted}`, then use {converted}")):
        read_bag(ros1_bag)
    cli = Path(sys.executable).parent / "rosbags-convert"
    subprocess.run([str(cli), "--src", str(ros1_bag), "--dst", str(converted)], check=True, capture_output=True)
    assert {topic for topic, _, _ in read_bag(converted)} == {c.topic for c in images}

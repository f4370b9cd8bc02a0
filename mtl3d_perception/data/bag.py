"""rosbag2 reading and writing with ``rosbags`` (no ROS install needed; DESIGN §5 "Bags and topics").

Writing turns a posed RGB-D sequence into the topics a robot would record (names from
:mod:`mtl3d_perception.topics`):

- ``/camera/color/image_raw`` (``rgb8``) and ``/camera/color/camera_info`` (K, R = I, P = [K|0],
  plumb_bob with zero distortion), frame ``camera_color_optical_frame``; with ``compressed="jpeg"`` or
  ``"png"`` the images go to ``/camera/color/image_raw/compressed`` (``sensor_msgs/CompressedImage``, as
  ``compressed_image_transport`` records them) instead, as many robot bags hold them;
- ``/tf``: ``odom -> base_link`` per frame; ``/tf_static``: ``base_link -> camera_color_optical_frame``
  (:data:`T_BASE_CAM`, a head camera 0.2 m ahead of and 0.3 m above ``base_link``, pitched 10 degrees
  down), so that ``T_odom_base @ T_BASE_CAM`` is the frame's ``T_world_cam`` (a world that is not z-up turned to
  one first, ``geometry.z_up_rotation``, so RViz shows the floor as the floor);
- ground truth when the sequence has it: ``/camera/depth/image_rect`` (``32FC1`` metres, NaN invalid)
  and ``/gt/semantic`` (``mono8``).

Every message of a frame carries the frame's stamp in its header and is recorded at that time. The
offered QoS profiles are stored in the bag's metadata so that ``ros2 bag play`` re-offers them:
reliable / volatile for the sensor streams and ``/tf``, reliable / transient-local (latched) for
``/tf_static``. Messages are built with :mod:`mtl3d_perception.msgs.conversions` from the
``ROS2_JAZZY`` typestore's classes.

Reading (:func:`read_bag`) yields deserialised messages in time order;
:class:`mtl3d_perception.data.sources.bag.BagFrames` (and ``read_bag_sequence`` there) rebuilds posed frames
(image, K, stamp, pose through the runtime's TF buffer, depth and semantic labels) from such a bag.
:func:`resolve_image_topic` and :func:`check_topic_type` check a bag's topics before reading, with errors
that list what the bag holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.interfaces import (
    MessageDefinitionFormat,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, get_typestore

from mtl3d_perception import topics
from mtl3d_perception.data.sequence import START_TIME_S, PosedSequence, SequenceFrame, seconds_to_ns
from mtl3d_perception.geometry import invert_se3, z_up_rotation
from mtl3d_perception.msgs.conversions import (
    COMPRESSED_FORMATS,
    make_camera_info,
    make_compressed_image,
    make_header,
    make_image,
    make_transform_stamped,
)
from mtl3d_perception.typed_config import frame_rate

log = logging.getLogger(__name__)

STORAGES = {"mcap": StoragePlugin.MCAP, "db3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # rosbag2 metadata version written (Jazzy reads 9)
PROVENANCE_KEY = "mtl3d.provenance"  # custom_data key of the sequence folder's provenance.json

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
# image_transport names a transport's topic <base topic>/<transport>


def _head_camera_extrinsic(forward: float, up: float, pitch_down_deg: float) -> np.ndarray:
    """``T_base_cam`` of an optical frame mounted ``forward``/``up`` of ``base_link`` (x forward, z up)."""
    # optical axes in base_link: x_opt = -y_base (right), y_opt = -z_base (down), z_opt = x_base (forward)
    base_to_optical = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    p = math.radians(pitch_down_deg)
    pitch = np.array([[math.cos(p), 0.0, math.sin(p)], [0.0, 1.0, 0.0], [-math.sin(p), 0.0, math.cos(p)]])
    T = np.eye(4)
    T[:3, :3] = pitch @ base_to_optical
    T[:3, 3] = (forward, 0.0, up)
    return T


T_BASE_CAM = _head_camera_extrinsic(forward=0.2, up=0.3, pitch_down_deg=10.0)


def _qos(depth: int, durability: QosDurability) -> Qos:
    zero = QosTime(0, 0)  # 0 s = the RMW default (no deadline, no lifespan, default lease)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


QOS_SENSOR = _qos(10, QosDurability.VOLATILE)
QOS_TF = _qos(100, QosDurability.VOLATILE)
QOS_TF_STATIC = _qos(1, QosDurability.TRANSIENT_LOCAL)  # latched, like tf2_ros.StaticTransformBroadcaster


MAX_ROS_TIME_NS = 2**31 * 1_000_000_000  # builtin_interfaces/Time: sec is an int32


class BagError(RuntimeError):
    """A bag cannot be written or read; the message names the path and the problem."""


@lru_cache(maxsize=1)
def typestore():
    """The ROS 2 Jazzy typestore whose message classes :func:`read_bag` returns and :func:`write_bag` writes."""
    return get_typestore(Stores.ROS2_JAZZY)


def ns_to_seconds(t_ns: int) -> float:
    """Integer nanoseconds -> seconds; the inverse of :func:`seconds_to_ns` for float stamps."""
    sec, nsec = divmod(int(t_ns), 1_000_000_000)
    return float(sec) + nsec * 1e-9


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def write_bag(
    source: PosedSequence | str | Path | Iterable[SequenceFrame],
    out_path: str | Path,
    *,
    rate_hz: float | None = None,
    storage: str = "mcap",
    compressed: str | None = None,
    T_base_cam: np.ndarray = T_BASE_CAM,
    z_up: bool = True,
) -> Path:
    """Write a posed RGB-D sequence as a rosbag2 directory and return its path.

    Args:
        source: a :class:`PosedSequence`, a sequence folder path, or frames (read one at a time).
        out_path: the bag directory to create (must not exist); the storage file goes inside it.
        rate_hz: None: stamps are the frames' own (``timestamps.txt``, or the sequence's rate);
            a number: frame i is stamped ``stamp_0 + i / rate_hz``.
        storage: ``"mcap"`` (default) or ``"db3"`` (sqlite3).
        compressed: None (default): raw ``rgb8`` images on ``/camera/color/image_raw``; ``"jpeg"`` or ``"png"``:
            ``CompressedImage`` on ``/camera/color/image_raw/compressed`` instead.
        T_base_cam: the ``base_link -> camera_color_optical_frame`` extrinsic on ``/tf_static``.
        z_up: write ``odom`` z-up (REP 103) for a sequence whose world is not (a y-up HoloLens world lay on its side
            in RViz): the world is turned by the quarter or half turn of :func:`geometry.z_up_rotation` (identity for a
            z-up world; relative poses, and so everything the runtime computes, are unchanged). Needs the poses up
            front: a :class:`PosedSequence` or folder; frames from an iterator are written as they are.

    A sequence folder's ``provenance.json`` (``mtl3d synth``'s scene record) goes into the bag's metadata
    (``custom_data``, key ``mtl3d.provenance``), where :func:`bag_provenance` and ``mtl3d replay`` read it.

    Raises:
        BagError: unknown storage or compression, ``out_path`` exists or has a storage suffix, no frames, or frames
            whose K or size change mid-sequence (the partly written bag is removed).
        SettingError: ``rate_hz`` is not a finite number > 0.
        SequenceError: ``source`` is a malformed sequence folder.
    """
    if storage not in STORAGES:
        raise BagError(f"unknown bag storage {storage!r}; expected one of {', '.join(STORAGES)}")
    if compressed is not None and compressed not in COMPRESSED_FORMATS:
        raise BagError(f"unknown image compression {compressed!r}; expected one of {', '.join(COMPRESSED_FORMATS)}")
    if rate_hz is not None:
        frame_rate("rate_hz", rate_hz)
    out_path = Path(out_path)
    if out_path.suffix in (".mcap", ".db3"):
        raise BagError(f"{out_path}: a rosbag2 is a directory; name it without the {out_path.suffix} suffix")
    if out_path.exists():
        raise BagError(f"{out_path}: already exists; choose a new bag directory")
    frames = PosedSequence(source) if isinstance(source, str | Path) else source
    types = typestore().types
    T_base_cam = np.asarray(T_base_cam, np.float64)
    T_cam_base = invert_se3(T_base_cam)
    poses = getattr(frames, "poses", None)
    R_odom_world = z_up_rotation(poses) if z_up and poses is not None and len(poses) else np.eye(4)

    provenance = getattr(frames, "provenance", None)  # rosbag2 metadata's custom_data (version >= 6): strings only
    try:
        provenance_json = None if provenance is None else json.dumps(provenance, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise BagError(f"{out_path}: the sequence's provenance is not JSON-serialisable: {exc}") from None
    writer = Writer(out_path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
    try:
        writer.open()
    except WriterError as exc:
        raise BagError(f"{out_path}: cannot create bag: {exc}") from None
    if provenance_json is not None:
        writer.set_custom_data(PROVENANCE_KEY, provenance_json)
    try:
        _write_frames(writer, frames, types, T_base_cam, T_cam_base, rate_hz, compressed, out_path, R_odom_world)
    except BaseException:
        # a half-written conversion is of no use and would block a re-run: remove the folder we created
        with contextlib.suppress(Exception):
            writer.close()
        shutil.rmtree(out_path, ignore_errors=True)
        raise
    writer.close()
    return out_path


def _write_frames(writer: Writer, frames, types, T_base_cam, T_cam_base, rate_hz, compressed, out_path: Path,
                  R_odom_world: np.ndarray) -> None:
    store = typestore()
    conns: dict[str, Any] = {}

    def write(topic: str, msgtype: str, t_ns: int, msg: Any, qos: Qos = QOS_SENSOR) -> None:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=[qos])
        writer.write(conns[topic], t_ns, store.serialize_cdr(msg, msgtype))

    first: SequenceFrame | None = None
    t0_ns = offset_ns = 0
    for i, frame in enumerate(frames):
        if first is None:
            first, t0_ns = frame, seconds_to_ns(frame.stamp)
            if t0_ns <= 0:  # ROS reads a zero stamp as "no stamp" (tf2: the latest transform; replay: a driver fault)
                offset_ns = seconds_to_ns(START_TIME_S)
                t0_ns += offset_ns
                log.warning("%s: the sequence's stamps start at %.3f s; ROS reads a zero stamp as none, so every "
                            "stamp is written %.0f s later", out_path, frame.stamp, START_TIME_S)
        elif frame.size != first.size or not np.allclose(frame.K, first.K, rtol=0, atol=1e-9):
            raise BagError(f"{out_path}: frame {i} changes K or image size; one bag holds one camera")
        t_ns = t0_ns + round(i * 1e9 / rate_hz) if rate_hz else seconds_to_ns(frame.stamp) + offset_ns
        if t_ns >= MAX_ROS_TIME_NS:  # a trial: nanosecond timestamps.txt ended in a struct.error traceback
            raise BagError(f"{out_path}: frame {i} would be stamped {t_ns * 1e-9:.6g} s, past the last ROS time "
                           f"(builtin_interfaces/Time sec is an int32: {MAX_ROS_TIME_NS // 1_000_000_000} s, 2038): "
                           + ("--rate is too small" if rate_hz else
                              "timestamps.txt must hold seconds (nanoseconds? divide them by 1e9)"))
        cam_header = make_header(types, t_ns, topics.CAMERA_FRAME)
        if i == 0:
            static = make_transform_stamped(types, make_header(types, t_ns, topics.BASE_FRAME), topics.CAMERA_FRAME, T_base_cam)
            write(topics.TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", t_ns,
                  types["tf2_msgs/msg/TFMessage"](transforms=[static]), QOS_TF_STATIC)
        T_odom_base = R_odom_world @ np.asarray(frame.T_world_cam, np.float64) @ T_cam_base
        tf = make_transform_stamped(types, make_header(types, t_ns, topics.WORLD_FRAME), topics.BASE_FRAME, T_odom_base)
        write(topics.TF_TOPIC, "tf2_msgs/msg/TFMessage", t_ns, types["tf2_msgs/msg/TFMessage"](transforms=[tf]), QOS_TF)
        W, H = frame.size
        write(topics.CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", t_ns,
              make_camera_info(types, cam_header, frame.K, W, H))
        if compressed is None:
            write(topics.IMAGE_TOPIC, IMAGE_TYPE, t_ns, make_image(types, cam_header, frame.rgb, "rgb8"))
        else:
            write(topics.IMAGE_TOPIC + topics.COMPRESSED_SUFFIX, COMPRESSED_IMAGE_TYPE, t_ns,
                  make_compressed_image(types, cam_header, np.asarray(frame.rgb, np.uint8), compressed))
        if frame.depth is not None:
            write(topics.GT_DEPTH_TOPIC, "sensor_msgs/msg/Image", t_ns,
                  make_image(types, cam_header, np.asarray(frame.depth, np.float32), "32FC1"))
        if frame.semantic is not None:
            write(topics.GT_SEMANTIC_TOPIC, "sensor_msgs/msg/Image", t_ns,
                  make_image(types, cam_header, np.asarray(frame.semantic, np.uint8), "mono8"))
    if first is None:
        raise BagError(f"{out_path}: no frames to write")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _register_missing_types(store, connections) -> None:
    """Add message types the Jazzy store lacks (custom messages) from the definitions stored in the bag."""
    missing = {}
    for conn in connections:
        if conn.msgtype in store.types or not conn.msgdef.data:
            continue
        try:
            if conn.msgdef.format == MessageDefinitionFormat.IDL:
                # several IDL files are stored as "=====...\nIDL: name\n<idl>" blocks (rosbag2 convention)
                sep = "=" * 80 + "\n"
                blocks = conn.msgdef.data.split(sep)[1:] if conn.msgdef.data.startswith(sep) else [conn.msgdef.data]
                for block in blocks:
                    missing.update(get_types_from_idl(block.split("\n", 1)[1] if block.startswith("IDL: ") else block))
            else:
                missing.update(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        except TypesysError as exc:
            raise BagError(f"topic {conn.topic}: cannot parse the definition of {conn.msgtype}: {exc}") from None
    if missing:
        store.register(missing)


def bag_topics(path: str | Path) -> dict[str, str]:
    """Topic -> message type of a bag (directory, ``.mcap`` or ``.db3`` file)."""
    reader = open_reader(Path(path))
    try:
        return {conn.topic: conn.msgtype for conn in reader.connections}
    finally:
        reader.close()


def bag_time_range(path: str | Path) -> tuple[int, int]:
    """``(start, end)`` of a bag in nanoseconds: the log times of its earliest and latest message (rosbag2's
    ``starting_time`` and ``starting_time + duration``, the origin of ``ros2 bag play --start-offset``).

    Raises:
        FileNotFoundError, BagError: as :func:`read_bag`.
    """
    reader = open_reader(Path(path))
    try:
        return reader.start_time, reader.end_time
    finally:
        reader.close()


def bag_provenance(path: str | Path) -> dict[str, Any] | None:
    """What made a bag's data, as ``mtl3d bag`` stored it from its sequence folder (``provenance.json``): the
    ``custom_data`` key ``mtl3d.provenance`` of the bag's ``metadata.yaml`` (rosbag2's bag information file; for a
    ``.mcap`` / ``.db3`` file, the one beside it). None for bags without it (recorded ones), without a metadata file,
    or where it is not a JSON object."""
    path = Path(path)
    info = path / "metadata.yaml" if path.is_dir() else path.parent / "metadata.yaml"
    try:
        metadata = (yaml.safe_load(info.read_text()) or {}).get("rosbag2_bagfile_information") or {}
        if not path.is_dir() and path.name not in (metadata.get("relative_file_paths") or []):
            return None  # a metadata.yaml beside a lone storage file describes another bag
        text = (metadata.get("custom_data") or {}).get(PROVENANCE_KEY)
        value = json.loads(text) if isinstance(text, str) and text else None
    except (OSError, ValueError, AttributeError, TypeError, yaml.YAMLError):
        return None
    return value if isinstance(value, dict) else None


def describe_topics(available: Mapping[str, str]) -> str:
    """``{topic: type}`` -> ``"/a (pkg/msg/A), /b (pkg/msg/B)"`` for error messages."""
    return ", ".join(f"{topic} ({msgtype})" for topic, msgtype in sorted(available.items())) or "no topics"


def absent_topic(path: str | Path, available: Mapping[str, str], topic: str, what: str) -> str:
    """A note for an optional ``sensor_msgs/Image`` topic (ground truth, labels) that is not in the bag: names it and
    the bag's Image topics, so that a misspelt or driver-specific name (``image_rect_raw``) is easy to spot."""
    images = sorted(t for t, msgtype in available.items() if msgtype == "sensor_msgs/msg/Image")
    note = (f"{path}: {what} topic {topic!r} is not in the bag (its Image topics: {', '.join(images) or 'none'}); "
            f"no {what} from it")
    # a trial: only a compressed transport of the topic was recorded, and nothing named it (compressedDepth is read)
    compressed = sorted(t for t, msgtype in available.items()
                        if msgtype == "sensor_msgs/msg/CompressedImage" and t.startswith(topic.rstrip("/") + "/"))
    if compressed:
        note += (f"; {', '.join(compressed)} holds it compressed (CompressedImage), which is not read as ground truth "
                 "(only depth through image_transport's compressedDepth is): record the raw topic, or republish it "
                 "decompressed (image_transport republish) into a new bag")
    return note


def resolve_depth_topic(available: Mapping[str, str], depth_topic: str) -> str:
    """The depth topic to read: ``depth_topic`` itself, or ``depth_topic + '/compressedDepth'`` (image_transport's
    compressedDepth plugin, as RealSense recordings often hold depth) when only that one is in the bag as a
    ``CompressedImage``; ``depth_topic`` otherwise ('' stays '')."""
    compressed = depth_topic.rstrip("/") + topics.COMPRESSED_DEPTH_SUFFIX
    if depth_topic and depth_topic not in available and available.get(compressed) == COMPRESSED_IMAGE_TYPE:
        return compressed
    return depth_topic


def check_topic_type(path: str | Path, available: Mapping[str, str], topic: str, what: str,
                     expected: Iterable[str]) -> None:
    """Raise unless ``topic`` is in the bag with one of the ``expected`` message types.

    Raises:
        BagError: naming the topic, the expected and actual types, and every topic of the bag with its type.
    """
    expected = tuple(expected)
    if available.get(topic) in expected:
        return
    problem = "is not in the bag" if topic not in available else f"has type {available[topic]}"
    if topic not in available and "/" + topic in available:  # bag topics are absolute names
        problem += f" (did you mean '/{topic}'? a bag's topics are absolute names)"
    raise BagError(f"{path}: {what} topic {topic!r} {problem}; expected {' or '.join(expected)}. "
                   f"The bag has: {describe_topics(available)}")


def resolve_image_topic(path: str | Path, available: Mapping[str, str], image_topic: str) -> str:
    """The colour image topic to read: ``image_topic`` itself, or ``image_topic + '/compressed'`` (image_transport's
    name for the compressed stream) when only that one is in the bag.

    Raises:
        BagError: neither topic is there with an ``Image`` / ``CompressedImage`` type (the message lists the bag's
            topics and types).
    """
    compressed = image_topic + topics.COMPRESSED_SUFFIX
    if image_topic not in available and available.get(compressed) == COMPRESSED_IMAGE_TYPE:
        return compressed
    check_topic_type(path, available, image_topic, "image", (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE))
    return image_topic


def open_reader(path: Path) -> Reader:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag (expected a rosbag2 folder or a .mcap / .db3 file)")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        hint = ""
        if (path / "poses.txt").is_file() and (path / "images").is_dir():
            hint = f"; it is a posed RGB-D sequence folder: write it as a bag first with `mtl3d bag {path} --out BAG`"
        raise BagError(f"{path}: not a rosbag2 folder (no metadata.yaml); expected a rosbag2 folder or a "
                       f".mcap / .db3 file{hint}")
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        if _is_ros1_bag(path):  # public RGB-D datasets (TUM RGB-D, ...) ship ROS 1 bags
            raise BagError(f"{path}: a ROS 1 bag; convert it to a rosbag2 first with the rosbags CLI installed with this "
                           f"package: `rosbags-convert --src {path} --dst {path.with_suffix('')}_ros2`, then use "
                           f"{path.with_suffix('')}_ros2")
        raise BagError(f"{path}: not a bag file ({path.suffix or 'no suffix'}); expected a rosbag2 folder or a "
                       ".mcap / .db3 file")
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError, ValueError, KeyError) as exc:
        cut = _cut_mcap_files(path)
        hint = (f"; {', '.join(str(f) for f in cut)} {'ends' if len(cut) == 1 else 'end'} without the MCAP footer "
                "(the recorder was stopped hard, or the copy is incomplete): `mcap recover FILE -o FIXED.mcap` (the "
                "mcap CLI) writes what was recorded up to the cut") if cut else ""
        raise BagError(f"{path}: cannot open bag: {exc}{hint}") from None
    return reader


MCAP_MAGIC = b"\x89MCAP0\r\n"  # an MCAP file starts and ends with it (MCAP specification)
ROS1_BAG_MAGIC = b"#ROSBAG V2.0\n"  # a ROS 1 bag's first line (rosbag format 2.0)


def _is_ros1_bag(path: Path) -> bool:
    """Whether ``path`` is a ROS 1 bag (its format line), which rosbags' rosbag2 Reader does not open."""
    try:
        with path.open("rb") as f:
            return f.read(len(ROS1_BAG_MAGIC)) == ROS1_BAG_MAGIC
    except OSError:
        return False


def _cut_mcap_files(path: Path) -> list[Path]:
    """The ``.mcap`` files of a bag (a file or a rosbag2 folder) that do not end with the MCAP magic: cut short."""
    files = [path] if path.is_file() else sorted(path.glob("*.mcap"))
    cut = []
    for f in files:
        if f.suffix != ".mcap":
            continue
        try:
            with open(f, "rb") as fh:
                fh.seek(max(f.stat().st_size - len(MCAP_MAGIC), 0))
                if fh.read() != MCAP_MAGIC:
                    cut.append(f)
        except OSError:
            cut.append(f)
    return cut


def read_bag(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(topic, t_ns, msg)`` in time order; ``msg`` is a Jazzy typestore dataclass.

    Args:
        path: a rosbag2 directory, or a single ``.mcap`` / ``.db3`` file.
        topics: topics to read (others are skipped; names not in the bag are ignored); None = all.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BagError: the bag cannot be opened, or a message cannot be deserialised (corrupt bag).
    """
    path = Path(path)
    reader = open_reader(path)  # open now, so a missing or unreadable bag fails at the call
    return _messages(reader, path, None if topics is None else set(topics))


def _messages(reader: Reader, path: Path, wanted: set[str] | None) -> Iterator[tuple[str, int, Any]]:
    try:
        store = typestore()
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        _register_missing_types(store, conns)
        records = reader.messages(connections=conns)
        while True:
            try:
                conn, t_ns, raw = next(records)
            except StopIteration:
                return
            except ReaderError as exc:
                raise BagError(f"{path}: cannot read bag: {exc}") from None
            except Exception as exc:  # the storage's own errors, e.g. apsw.CorruptError from a damaged .db3
                files = sorted(p.name for p in path.iterdir() if p.suffix in (".db3", ".mcap")) if path.is_dir() \
                    else [path.name]
                raise BagError(f"{path}: cannot read bag, its storage ({', '.join(files)}) is corrupt or unreadable "
                               f"({type(exc).__name__}: {exc})") from None
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # rosbags raises assorted errors on corrupt CDR
                raise BagError(f"{path}: cannot deserialise {conn.msgtype} on {conn.topic} at {t_ns} ns: {exc}") from None
            yield conn.topic, t_ns, msg
    finally:
        reader.close()

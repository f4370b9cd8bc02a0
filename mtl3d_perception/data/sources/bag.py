"""Posed frames from a rosbag2 (mcap or db3), indexed once and then read at random (training, evaluation, tools).

What a robot records: a colour camera (``sensor_msgs/Image`` or ``CompressedImage``) with its ``CameraInfo``,
``/tf`` and ``/tf_static``; optionally a depth camera and a topic of class ids. Opening a bag reads it once
(:class:`BagFrames`): every TF message goes into the runtime's
:class:`~mtl3d_perception.runtime.tf_buffer.TransformBuffer` (the one TF implementation of the project, with
a cache as long as the bag), and what each frame needs is kept in memory: the image's log time (to read it
again later), its K, its pose ``world_frame <- image frame`` at the image stamp, and which depth and
semantic message go with it. Frames whose pose TF cannot give are left out (``unposed`` counts them).
Image and CameraInfo become RGB and K through the node's and replay's one conversion
(``msgs.messages.frame_from_messages``: every colour encoding, binning, ROI, rectification of raw images per
``image_kind``).
:meth:`BagFrames.frame` then reads only that frame's messages (``Reader.messages(start, stop)``, one reader
per process, opened lazily so DataLoader workers each open their own).

Depth (``16UC1`` millimetres or ``32FC1`` metres, REP 118) pairs with the image whose stamp is nearest within
``max_dt``:

- *registered* (its ``frame_id`` is the image's, or empty, as ``aligned_depth_to_color`` topics are): used
  as it is, resized with nearest neighbours when its size differs;
- *not registered* (another ``frame_id``): reprojected into the colour camera (``geometry.reproject_depth``,
  each depth pixel splatted over its footprint, nearest surface wins) with the depth camera's own ``CameraInfo``
  (``depth_camera_info_topic``, by default ``camera_info`` beside the depth topic) and ``T_color_depth = inv(T_world_color(t_image)) @
  T_world_depth(t_depth)`` from TF, which covers both the extrinsic and the motion between the two stamps.

Semantic labels (``mono8`` class ids) must be registered to the colour image. Where a rectified raw image has no
image data (its border outside the sensor, ``Frame.image_mask``) depth is NaN and labels are ignored.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtl3d_perception import topics
from mtl3d_perception.classes import labels_outside_ignored
from mtl3d_perception.data.bag import (
    BagError,
    absent_topic,
    bag_topics,
    check_topic_type,
    describe_topics,
    ns_to_seconds,
    open_reader,
    read_bag,
    resolve_depth_topic,
    resolve_image_topic,
    typestore,
)
from mtl3d_perception.data.sequence import SequenceFrame
from mtl3d_perception.geometry import invert_se3, is_registered, reproject_depth
from mtl3d_perception.msgs.camera_model import CameraModels, resolve_image_kind
from mtl3d_perception.msgs.conversions import (
    DEPTH_ENCODINGS,
    LABEL_ENCODINGS,
    camera_info_to_K,
    depth_image_to_metres,
    label_image_encoding,
    label_image_size,
    label_image_to_ids,
    stamp_to_ns,
    transform_to_matrix,
)
from mtl3d_perception.msgs.messages import BadInput, frame_from_messages
from mtl3d_perception.runtime.frames import bare_frame_id
from mtl3d_perception.runtime.sync import SYNC_SLOP_S
from mtl3d_perception.runtime.tf_buffer import TransformBuffer, TransformException

log = logging.getLogger(__name__)

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def colour_from_depth(tf: TransformBuffer, world_frame: str, T_world_cam: np.ndarray, depth_frame: str,
                      depth_stamp_ns: int) -> np.ndarray:
    """``T_colour_depth`` [4,4] for depth recorded by another camera: the depth camera's pose at the depth's own
    stamp in the colour camera at the image's (``T_world_cam``), so motion between the two stamps is accounted
    for (RealSense depth and colour are not exposed at once).

    Raises:
        TransformException: TF cannot give ``world_frame <- depth_frame`` at ``depth_stamp_ns``.
    """
    return invert_se3(T_world_cam) @ tf.lookup_matrix(world_frame, depth_frame, depth_stamp_ns)


def check_label_encoding(path: str | Path, topic: str, kind: str, encoding: str, option: str = "") -> None:
    """Raise BagError unless a ``depth`` topic's ``encoding`` is a depth one (REP 118) or a ``semantic`` one's class
    ids; ``option`` names the setting that chose the topic (default ``{kind}_topic``)."""
    expected = DEPTH_ENCODINGS if kind == "depth" else LABEL_ENCODINGS
    if encoding not in expected:
        what = "32FC1 metres or 16UC1 millimetres" if kind == "depth" else "mono8 class ids"
        raise BagError(f"{path}: {option or kind + '_topic'} {topic} holds {encoding!r} images; expected {kind} "
                       f"({what}: {', '.join(expected)}); is it the right topic?")


def _plain_camera(msg: Any) -> tuple[np.ndarray, tuple[int, int]] | None:
    """``(K, (W, H))`` of a camera_info without binning or ROI (its K is the image's), else None; None for a K that
    is not one too (the frame that needs it is refused when it is read)."""
    if msg.binning_x > 1 or msg.binning_y > 1 or msg.roi.width or msg.roi.height or not (msg.width and msg.height):
        return None
    try:
        return camera_info_to_K(msg), (int(msg.width), int(msg.height))
    except ValueError:
        return None


def _nearest(stamps: list[int], t_ns: int, max_dt_ns: int) -> int | None:
    """Index of the stamp nearest ``t_ns`` within ``max_dt_ns`` in an ascending list, or None."""
    k = bisect.bisect_left(stamps, t_ns)
    best = min((j for j in (k - 1, k) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - t_ns), default=None)
    return best if best is not None and abs(stamps[best] - t_ns) <= max_dt_ns else None


class BagFrames:
    """The posed colour frames of a bag (see the module docstring).

    Args:
        path: a rosbag2 folder or a single ``.mcap`` / ``.db3`` file.
        image_topic: the colour image (``<topic>/compressed`` is read when only that one is in the bag).
        camera_info_topic: its CameraInfo ("" = beside ``image_topic``, image_transport's rule); the one with the
            image's stamp is used, else the latest before it.
        depth_topic: depth images, or "" for none (a topic not in the bag means none).
        depth_camera_info_topic: the depth camera's CameraInfo for unregistered depth; "" = beside ``depth_topic``.
        semantic_topic: mono8 class ids registered to the colour image, or "" for none.
        world_frame: the fixed frame poses are expressed in (``odom``, ``map``).
        image_kind: ``auto`` | ``image_raw`` | ``image_rect`` (``msgs.camera_model.resolve_image_kind``).
        max_dt: pairing tolerance of depth / semantic with images, seconds.
        skip_unposed: leave out (and count) images whose pose TF cannot give; False raises instead.

    Raises:
        FileNotFoundError, BagError: no such bag; a missing or mistyped image / camera_info topic (the message
            lists the bag's topics), an image without CameraInfo, no posed frame at all, unregistered depth
            without its CameraInfo.
    """

    def __init__(self, path: str | Path, *, image_topic: str = topics.IMAGE_TOPIC,
                 camera_info_topic: str = "", depth_topic: str = topics.GT_DEPTH_TOPIC,
                 depth_camera_info_topic: str = "", semantic_topic: str = topics.GT_SEMANTIC_TOPIC,
                 world_frame: str = topics.WORLD_FRAME, max_dt: float = SYNC_SLOP_S, skip_unposed: bool = True,
                 image_kind: str = "auto") -> None:
        self.path = Path(path)
        available = bag_topics(self.path)
        self.image_topic = resolve_image_topic(self.path, available, image_topic)
        self.image_kind = resolve_image_kind(image_kind, self.image_topic)
        camera_info_topic = camera_info_topic or topics.camera_info_topic_for(image_topic)
        self.camera_info_topic = camera_info_topic
        check_topic_type(self.path, available, camera_info_topic, "camera_info", (CAMERA_INFO_TYPE,))
        for topic, what in ((depth_topic, "depth_topic"), (semantic_topic, "semantic_topic")):
            if topic and topic in (self.image_topic, camera_info_topic):
                raise BagError(f"{self.path}: {what} {topic!r} is the {'image' if topic == self.image_topic else 'camera_info'}"
                               f" topic; expected the bag's ground-truth {what.split('_')[0]} Image topic, or \"\" for none")
        if (compressed := resolve_depth_topic(available, depth_topic)) != depth_topic:
            log.info("%s: depth_topic %s is not in the bag; reading %s (image_transport's compressedDepth)",
                     self.path, depth_topic, compressed)
            depth_topic = compressed
        self.depth_topic = depth_topic if depth_topic in available else ""
        self.semantic_topic = semantic_topic if semantic_topic in available else ""
        self._asked_label_topics = {"depth": depth_topic, "semantic": semantic_topic}
        if depth_topic and not self.depth_topic:  # a wrong name would silently leave the depth task unsupervised
            log.warning("%s; set depth_topic to the bag's depth topic, or depth_topic: \"\" to train without depth",
                        absent_topic(self.path, available, depth_topic, "depth"))
        for topic, what in ((self.depth_topic, "depth"), (self.semantic_topic, "semantic")):
            if topic:
                # depth may be image_transport's compressedDepth; labels are raw
                check_topic_type(self.path, available, topic, what, IMAGE_TYPES if what == "depth" else IMAGE_TYPES[:1])
        depth_info_topic = depth_camera_info_topic or (topics.camera_info_topic_for(depth_topic) if self.depth_topic else "")
        self.depth_camera_info_topic = depth_info_topic  # read only for depth in another frame than the image's
        self.world_frame = world_frame
        max_dt_ns = round(max_dt * 1e9)

        tf = TransformBuffer(cache_time_s=1e9)  # keep the whole bag: frames are looked up after reading it
        infos: dict[int, int] = {}  # stamp -> log time
        # stamp -> (K, (W, H)) of plain camera_infos (no binning or ROI), to tell registered depth (is_registered)
        cameras: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
        depth_infos: dict[int, np.ndarray] = {}
        depth_cameras: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
        images: list[tuple[int, int, str]] = []  # (log time, stamp, frame_id)
        extra: dict[str, list[tuple[int, int, str, tuple[int, int]]]] = {"depth": [], "semantic": []}
        self.rejected_transforms = 0
        wanted = [topics.TF_TOPIC, topics.TF_STATIC_TOPIC, self.image_topic, camera_info_topic, self.depth_topic,
                  depth_info_topic, self.semantic_topic]
        for topic, t_log, msg in read_bag(self.path, [t for t in wanted if t]):
            if topic in (topics.TF_TOPIC, topics.TF_STATIC_TOPIC):
                for ts in msg.transforms:
                    try:
                        tf.set_transform_matrix(ts.header.frame_id, ts.child_frame_id, stamp_to_ns(ts.header.stamp),
                                                transform_to_matrix(ts.transform),
                                                is_static=topic == topics.TF_STATIC_TOPIC)
                    except (TransformException, ValueError):
                        self.rejected_transforms += 1
            elif topic == camera_info_topic:
                infos[stamp_to_ns(msg.header.stamp)] = t_log
                if (camera := _plain_camera(msg)) is not None:
                    cameras[stamp_to_ns(msg.header.stamp)] = camera
            elif topic == depth_info_topic:
                depth_infos[stamp_to_ns(msg.header.stamp)] = camera_info_to_K(msg)
                if (camera := _plain_camera(msg)) is not None:
                    depth_cameras[stamp_to_ns(msg.header.stamp)] = camera
            elif topic == self.image_topic:
                images.append((t_log, stamp_to_ns(msg.header.stamp), bare_frame_id(msg.header.frame_id)))
            else:
                kind = "depth" if topic == self.depth_topic else "semantic"
                if not extra[kind]:  # the first message: a wrong topic fails here, not in a training worker later
                    check_label_encoding(self.path, topic, kind, label_image_encoding(msg))
                extra[kind].append((stamp_to_ns(msg.header.stamp), t_log, bare_frame_id(msg.header.frame_id),
                                    label_image_size(msg)))
        self.projected_rotations = tf.projected_rotations
        self.out_of_order_transforms = tf.out_of_order  # sorted in time order: the whole bag's TF is read before poses
        if tf.out_of_order:
            log.warning("%s: %d transform(s) on %s were recorded out of order (up to %.3f s older than their edge's "
                        "newest): used in time order, as tf2 does (every pose is looked up after the whole bag's TF)",
                        self.path, tf.out_of_order, topics.TF_TOPIC, tf.max_out_of_order_ns * 1e-9)
        if not images:
            raise BagError(f"{self.path}: no messages on {self.image_topic}")
        info_stamps = sorted(infos)
        depth_info_stamps = sorted(depth_infos)
        depth_camera_stamps = sorted(depth_cameras)
        for kind in extra:
            extra[kind].sort()
        extra_stamps = {kind: [e[0] for e in v] for kind, v in extra.items()}

        self.log_times: list[int] = []
        self.stamps_ns: list[int] = []
        self.frame_ids: list[str] = []
        self.info_refs: list[tuple[int, int]] = []  # (log time, stamp) of each frame's CameraInfo
        poses: list[np.ndarray] = []
        # (log time, stamp, K_depth, T_color_depth) of the depth paired with each frame; K, T None: registered
        self.depth_refs: list[tuple[int, int, np.ndarray | None, np.ndarray | None] | None] = []
        self.semantic_refs: list[tuple[int, int] | None] = []  # (log time, stamp)
        self.unposed = 0
        self.no_camera_info = 0  # images before the first camera_info (a recording started between the two)
        matched = {"depth": 0, "semantic": 0}  # posed images with a depth / semantic message within max_dt
        first_error = ""
        for t_log, stamp, frame_id in sorted(images, key=lambda x: x[1]):
            k = bisect.bisect_right(info_stamps, stamp)
            if k == 0:  # skipped as replay drops it (a trial: one such image aborted eval and training)
                self.no_camera_info += 1
                continue
            try:
                T_world_cam = tf.lookup_matrix(world_frame, frame_id, stamp)
            except TransformException as exc:
                if not skip_unposed:
                    raise BagError(f"{self.path}: no pose of image frame {frame_id!r} in {world_frame!r} at {stamp} ns: "
                                   f"{exc}") from None
                self.unposed += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                continue
            depth_ref = None
            j = _nearest(extra_stamps["depth"], stamp, max_dt_ns) if self.depth_topic else None
            matched["depth"] += j is not None
            if j is not None:
                d_stamp, d_log, d_frame, d_wh = extra["depth"][j]
                kc = bisect.bisect_right(depth_camera_stamps, d_stamp)
                colour = cameras.get(info_stamps[k - 1])
                depth_camera = depth_cameras[depth_camera_stamps[kc - 1]] if kc else None
                if depth_camera is None or colour is None or is_registered(d_frame, frame_id, depth_camera[0], d_wh,
                                                                           *colour):
                    registered = is_registered(d_frame, frame_id)
                else:
                    registered = False  # the image's frame, but a view of its own (is_registered)
                    d_frame = d_frame or frame_id
                if registered:
                    depth_ref = (d_log, d_stamp, None, None)
                else:
                    kd = bisect.bisect_right(depth_info_stamps, d_stamp)
                    if kd == 0:
                        raise BagError(f"{self.path}: depth on {self.depth_topic} is in frame {d_frame!r}, not the image's "
                                       f"{frame_id!r}, and has no CameraInfo on {depth_info_topic or '(none given)'} to "
                                       "reproject it with; give source depth_camera_info_topic (its CameraInfo topic)")
                    with contextlib.suppress(TransformException):
                        T_c_d = colour_from_depth(tf, world_frame, T_world_cam, d_frame, d_stamp)
                        depth_ref = (d_log, d_stamp, depth_infos[depth_info_stamps[kd - 1]], T_c_d)
            s = _nearest(extra_stamps["semantic"], stamp, max_dt_ns) if self.semantic_topic else None
            matched["semantic"] += s is not None
            self.log_times.append(t_log)
            self.stamps_ns.append(stamp)
            self.frame_ids.append(frame_id)
            self.info_refs.append((infos[info_stamps[k - 1]], info_stamps[k - 1]))
            poses.append(T_world_cam)
            self.depth_refs.append(depth_ref)
            self.semantic_refs.append(None if s is None else extra["semantic"][s][1::-1])
        if self.no_camera_info:
            if not info_stamps:
                raise BagError(f"{self.path}: no CameraInfo on {camera_info_topic} for the {len(images)} images on "
                               f"{self.image_topic}. The bag has: {describe_topics(available)}")
            log.warning("%s: %d image(s) on %s come before the first CameraInfo on %s (the recording started "
                        "between them): left out", self.path, self.no_camera_info, self.image_topic, camera_info_topic)
        if not poses:
            frames = sorted(tf.all_frames())
            raise BagError(f"{self.path}: none of {len(images)} images has a pose in world_frame {world_frame!r} from TF "
                           f"(first failure: {first_error}); TF frames in the bag: {', '.join(frames) or 'none'}. "
                           f"The bag has: {describe_topics(available)}")
        # labels that would silently be absent (a trial: semantic labels all 25 ms late scored no mIoU, without a word)
        for kind, topic in (("depth", self.depth_topic), ("semantic", self.semantic_topic)):
            if not topic or not extra[kind] or matched[kind]:
                continue
            d, t = np.asarray(extra_stamps[kind], np.int64), np.asarray(self.stamps_ns, np.int64)
            i = np.searchsorted(d, t)
            nearest = np.minimum(np.abs(d[np.clip(i - 1, 0, len(d) - 1)] - t), np.abs(d[np.clip(i, 0, len(d) - 1)] - t)).min() / 1e6
            camera = "depth camera's" if kind == "depth" else "labels'"
            raise BagError(f"{self.path}: none of {len(self.stamps_ns)} posed images has a {kind} image on {topic} within "
                           f"{max_dt * 1e3:g} ms (nearest {nearest:.1f} ms): the {camera} stamps are on another clock or "
                           "offset: fix them, raise source sync_slop above that offset if the driver stamps them apart, "
                           f"or set {kind}_topic \"\" to train without {kind}")
        self.poses = np.stack(poses)
        self.stamps = np.array([ns_to_seconds(t) for t in self.stamps_ns])
        self._reader = None
        self._cameras: CameraModels | None = None

    # ------------------------------------------------------------------ random access

    @property
    def has_depth(self) -> bool:
        """Whether depth labels are read (``depth_topic`` given and in the bag)."""
        return bool(self.depth_topic)

    @property
    def has_semantic(self) -> bool:
        """Whether semantic labels are read (``semantic_topic`` given and in the bag)."""
        return bool(self.semantic_topic)

    def label_source(self, label: str) -> str:
        """Where ``label`` ('depth' or 'semantic') ground truth is read from, for messages: the topic setting and, when
        it is not read, why (``semantic_topic '/gt/semantic' (not in the bag)``)."""
        asked = self._asked_label_topics[label]
        if not asked:
            return f'{label}_topic "" (none asked for)'
        return f"{label}_topic {asked!r}" + ("" if getattr(self, f"{label}_topic") else " (not in the bag)")

    def __len__(self) -> int:
        return len(self.log_times)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = state["_cameras"] = None  # each DataLoader worker opens its own
        return state

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _read(self, topic: str, t_log: int, stamp_ns: int) -> Any:
        """The message on ``topic`` logged at ``t_log`` whose header stamp is ``stamp_ns``."""
        if self._reader is None:
            self._reader = open_reader(self.path)
        conns = [c for c in self._reader.connections if c.topic == topic]
        store = typestore()
        for conn, _t, raw in self._reader.messages(connections=conns, start=t_log, stop=t_log + 1):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if stamp_to_ns(msg.header.stamp) == stamp_ns:
                return msg
        raise BagError(f"{self.path}: message on {topic} logged at {t_log} ns is gone; was the bag changed after indexing?")

    def frame(self, i: int, *, depth: bool = True, semantic: bool = True, normals: bool = True) -> SequenceFrame:
        """Frame ``i``: RGB, K, pose; depth registered to the image and semantic ids when the bag has them."""
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range for a bag of {len(self)} posed frames ({self.path})")
        if self._cameras is None:
            self._cameras = CameraModels()
        image = self._read(self.image_topic, self.log_times[i], self.stamps_ns[i])
        info = self._read(self.camera_info_topic, *self.info_refs[i])
        try:
            fr = frame_from_messages(image, info, image_kind=self.image_kind, cameras=self._cameras)
        except BadInput as exc:
            raise BagError(f"{self.path}: image at {self.stamps_ns[i]} ns on {self.image_topic}: {exc}") from None
        rgb, K = fr.rgb, fr.K
        H, W = rgb.shape[:2]
        d = None
        if depth and self.depth_refs[i] is not None:
            d_log, d_stamp, K_d, T_c_d = self.depth_refs[i]
            raw = depth_image_to_metres(self._read(self.depth_topic, d_log, d_stamp))
            if K_d is None:
                d = raw if raw.shape == (H, W) else cv2.resize(raw, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)
            else:
                d = reproject_depth(raw, K_d, T_c_d, K, (H, W))
        labels = None
        if semantic and self.semantic_refs[i] is not None:
            labels = label_image_to_ids(self._read(self.semantic_topic, *self.semantic_refs[i]))
            if labels.shape != (H, W):
                raise BagError(f"{self.path}: semantic image on {self.semantic_topic} is {labels.shape[1]}x"
                               f"{labels.shape[0]}, the colour image {W}x{H}; labels must be registered to it")
        if fr.image_mask is not None:  # a rectified raw image's border has no image data: nothing to learn or score
            d, labels = labels_outside_ignored(fr.image_mask, d, labels)
        return SequenceFrame(index=i, stamp=float(self.stamps[i]), rgb=np.ascontiguousarray(rgb), depth=d, K=K.copy(),
                             T_world_cam=self.poses[i].copy(), semantic=labels)


def read_bag_sequence(path: str | Path, *, image_topic: str = topics.IMAGE_TOPIC,
                      camera_info_topic: str = "", depth_topic: str = topics.GT_DEPTH_TOPIC,
                      semantic_topic: str = topics.GT_SEMANTIC_TOPIC, world_frame: str = topics.WORLD_FRAME
                      ) -> list[SequenceFrame]:
    """Every frame of a bag in memory (tests, tools, small bags): :class:`BagFrames` read in full.

    Raises:
        BagError: as :class:`BagFrames`, and also when an image's pose cannot be resolved from TF.
    """
    frames = BagFrames(path, image_topic=image_topic, camera_info_topic=camera_info_topic, depth_topic=depth_topic,
                       semantic_topic=semantic_topic, world_frame=world_frame, skip_unposed=False)
    try:
        return [frames.frame(i) for i in range(len(frames))]
    finally:
        frames.close()

"""``ReplayOptions``: the runtime settings of the node (``runtime.config.RuntimeConfig``) plus replay's own.

``mtl3d replay``'s command line is generated from these fields (:mod:`mtl3d_perception.replay.cli`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtl3d_perception import topics
from mtl3d_perception.runtime.config import RuntimeConfig, setting
from mtl3d_perception.runtime.params import node_name_problem, topic_name_problem
from mtl3d_perception.typed_config import SettingError

REPLAY = ("replay",)


@dataclass(frozen=True)
class ReplayOptions(RuntimeConfig):
    """The runtime settings (:class:`RuntimeConfig`, the node's parameters) plus what only a replay has: TF and
    ground-truth topics, the output node name, a time range and a frame limit, the single-view comparison, the
    montage."""

    # a bag's topics are absolute names: no node namespace to resolve in
    image_topic: str = setting(topics.IMAGE_TOPIC, "colour image (sensor_msgs/Image or CompressedImage); "
                                                   "TOPIC/compressed is read when only that one is in the bag",
                               read_only=True)
    camera_info_topic: str = setting("", "camera info; '' = camera_info beside image_topic (image_transport's rule: "
                                         f"{topics.CAMERA_INFO_TOPIC} for the default image topic)", read_only=True)
    tf_topic: str = setting(topics.TF_TOPIC, "TF", scope=REPLAY)
    tf_static_topic: str = setting(topics.TF_STATIC_TOPIC, "static TF", scope=REPLAY)
    depth_gt_topic: str = setting(topics.GT_DEPTH_TOPIC, "ground-truth depth (32FC1 m or 16UC1 mm), used when present; "
                                  "depth in another frame than the image's is reprojected into the colour camera",
                                  scope=REPLAY)
    depth_gt_camera_info_topic: str = setting("", "CameraInfo of ground-truth depth in its own frame; '' = the "
                                                  "camera_info beside depth_gt_topic", scope=REPLAY)
    semantic_gt_topic: str = setting(topics.GT_SEMANTIC_TOPIC, "ground-truth labels (mono8), used when present",
                                     scope=REPLAY)
    node_name: str = setting(topics.NODE_NAME, "output topics are /NODE_NAME/...", scope=REPLAY)
    limit: int | None = setting(None, "process at most N frames", scope=REPLAY)
    # the names and origin of ros2 bag play's --start-offset and --playback-duration
    start_offset_s: float = setting(0.0, "process the images logged from the bag's start + this many seconds on "
                                         "(TF before it is still read, so the first frames have their poses)",
                                    scope=REPLAY)
    playback_duration_s: float | None = setting(None, "process the images logged within this many seconds after "
                                                      "the start offset; none = to the end", scope=REPLAY)
    compare_single_view: bool = setting(False, "also run every frame through a second pipeline with single_view on "
                                               "and report both side by side", scope=REPLAY)
    montage_frames: int = setting(4, "rows in montage.png", scope=REPLAY)
    progress: bool = setting(True, "show a progress bar on a terminal", scope=REPLAY)

    def validate(self) -> None:
        """The runtime settings' checks (:meth:`RuntimeConfig.validate`), then replay's counts; raises SettingError."""
        super().validate()
        if not 0 <= self.start_offset_s <= 1e9:  # a NaN fails too
            raise SettingError("start_offset_s", f"start_offset_s must be in [0, 1e9] seconds, got {self.start_offset_s!r}")
        if self.playback_duration_s is not None and not 0 < self.playback_duration_s <= 1e9:
            raise SettingError("playback_duration_s", "playback_duration_s must be in (0, 1e9] seconds or none, got "
                               f"{self.playback_duration_s!r}")
        if self.limit is not None and self.limit < 1:
            raise SettingError("limit", f"limit must be >= 1, got {self.limit}")
        if reason := node_name_problem("node_name", self.node_name):  # it names the output topics: /NODE_NAME/...
            raise SettingError("node_name", reason)
        for name in ("tf_topic", "tf_static_topic", "depth_gt_topic", "depth_gt_camera_info_topic", "semantic_gt_topic"):
            if (value := getattr(self, name)) and (reason := topic_name_problem(name, value)):  # rcl's rule
                raise SettingError(name, reason)
        if self.montage_frames < 0:
            raise SettingError("montage_frames", f"montage_frames must be >= 0, got {self.montage_frames}")
        if self.compare_single_view and self.single_view:
            raise SettingError("compare_single_view", "compare_single_view compares the multi-view run with a "
                               "single-view one, but single_view makes the first run single-view too: use one of them")

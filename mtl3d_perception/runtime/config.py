"""RuntimeConfig: every runtime setting and its default, in one place (DESIGN §5, issue 14).

The node's parameters (names, defaults, descriptions, read-only flags, ranges and choices) and the options of
``mtl3d replay`` are generated from the fields below; ``config/perception.yaml`` is checked against them
(``test/test_runtime_config.py``). Source-view rules are the nested :class:`PairingConfig`, flattened into
parameters of the same names (``min_baseline_m`` ...).

Each field carries a :func:`setting` record in its metadata: ``description``, ``read_only`` (needs a restart
of the node), ``constraint`` (``(lo, hi)`` range or a tuple of choices) and ``scope`` (``node``, ``replay`` or
both). Values from parameters, YAML or the command line go through :func:`typed_config.from_dict`
(typed, unknown keys refused), and :meth:`RuntimeConfig.validate` checks ranges and choices.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mtl3d_perception import topics
from mtl3d_perception.model.config import PRESET_PREFIX
from mtl3d_perception.runtime.frames import MAX_IMAGE_PIXELS
from mtl3d_perception.runtime.history import SINGLE_VIEW_MODE, PairingConfig
from mtl3d_perception.runtime.params import DEVICES, device_problem, frame_id_problem, topic_name_problem
from mtl3d_perception.source_selection import MIN_PARALLAX_M
from mtl3d_perception.typed_config import ConfigError, SettingError, coerce

OUTPUT_NAMES = ("depth", "semantic", "normals", "boundary", "points")
OUTPUT_RESOLUTIONS = ("network", "camera")
CLOUD_FRAMES = ("camera", "world")
PRECISIONS = ("fp32", "fp16", "bf16")
IMAGE_TRANSPORTS = ("raw", "compressed")
IMAGE_KINDS = ("auto", "image_raw", "image_rect")  # how camera_info applies (msgs.camera_model)
BOTH, NODE = ("node", "replay"), ("node",)


def setting(default: Any, description: str, *, read_only: bool = False, constraint: Any = None,
            scope: tuple[str, ...] = BOTH) -> Any:
    """A dataclass field with its parameter description (see the module docstring)."""
    return field(default=default, metadata={"description": description, "read_only": read_only,
                                            "constraint": constraint, "scope": scope})


MAX_NUM_THREADS = 256  # torch CPU threads a setting may ask for (far more aborts in torch's thread pool)


# PairingConfig's fields as parameters (the dataclass lives beside the rule, in runtime/history.py)
PAIRING_SETTINGS: dict[str, tuple[str, tuple[float, float]]] = {
    "min_baseline_m": ("source view: smallest useful baseline", (0.0, 100.0)),
    "min_rotation_deg": (f"source view: or smallest useful rotation (a source within {MIN_PARALLAX_M * 1e3:g} mm is "
                         "never used)", (0.0, 180.0)),
    # > 0 (source_selection.PairingConfig.validate); a ROS range is inclusive, so it starts at a small positive value
    "max_pair_age_s": ("source view: oldest usable source frame", (0.01, 60.0)),
    "max_speed_mps": ("source view: faster relative motion is a pose jump, not camera motion", (0.01, 1000.0)),
    "max_angular_speed_dps": ("source view: faster relative rotation is a pose jump", (0.1, 100000.0)),
    "history_size": ("source view: frames kept as candidates: keyframes and the newest frame (keyframes 2 cm apart "
                     "reach 30 cm however slowly the camera moves)", (1, 256)),
    "keyframe_spacing_m": ("source view: a frame joins the history as a keyframe this far from the newest one, or "
                           "max_pair_age_s / history_size after it (0 with keyframe_spacing_deg 0: every frame)",
                           (0.0, 10.0)),
    "keyframe_spacing_deg": ("source view: or turned this far from it", (0.0, 180.0)),
}


@dataclass(frozen=True)
class RuntimeConfig:
    """Settings of the perception runtime, shared by the node (as parameters) and replay (as options).

    Immutable: :meth:`replace` makes a validated copy (an API trial set ``config.min_baseline_m = 0.5`` on an instance,
    which was accepted and never used). Every setting reads by its parameter name, the pairing ones too
    (``config.min_baseline_m`` is ``config.pairing.min_baseline_m``)."""

    model_path: str = setting("", "checkpoint (.safetensors); '' or 'default' = shipped models/default.safetensors; "
                                  f"'{PRESET_PREFIX}NAME' = random weights", read_only=True)
    device: str = setting("auto", f"torch device: {DEVICES}", read_only=True)
    num_threads: int = setting(1, "torch CPU threads (0: torch default; 1 avoids stalls when other processes hold "
                                  "cores)", read_only=True, constraint=(0, MAX_NUM_THREADS))
    image_topic: str = setting(topics.IMAGE_INPUT, "input sensor_msgs/Image (a relative name resolves in the node's "
                                                   "namespace)", read_only=True)
    image_transport: str = setting("raw", "raw: sensor_msgs/Image on image_topic; compressed: "
                                          "sensor_msgs/CompressedImage (jpeg/png) on image_topic + '/compressed'",
                                   read_only=True, constraint=IMAGE_TRANSPORTS, scope=NODE)
    image_kind: str = setting("auto", "image_raw: rectify with camera_info D/R/P; image_rect: already rectified, "
                                      "use P; auto: image_rect when the image topic's name contains 'rect'",
                              read_only=True, constraint=IMAGE_KINDS)
    camera_info_topic: str = setting("", "input sensor_msgs/CameraInfo; '' = camera_info beside image_topic "
                                         "(image_transport's rule)", read_only=True)
    sync_slop_s: float = setting(0.02, "largest image / camera_info stamp difference paired", read_only=True,
                                 constraint=(0.0, 1.0))
    # message_filters' examples use 10; a queue of 2 loses every pair once images lag camera_info by 2 periods.
    # Replay has no such queue: it pairs by stamp over the recording (replay.runner).
    sync_queue_size: int = setting(10, "image / camera_info messages kept per input for pairing", read_only=True,
                                   constraint=(1, 1000), scope=NODE)
    precision: str = setting("fp32", "inference precision (fp16 needs CUDA)", constraint=PRECISIONS)
    world_frame: str = setting(topics.WORLD_FRAME, "fixed frame the camera poses are looked up in (a tf2 frame id: "
                                                   "no leading '/')")
    # visual(-inertial) odometry publishes a frame's pose 0.05-0.2 s after the image; rtabmap waits 0.2 s
    # (wait_for_transform), we leave margin above that. Replay waits in bag time (runtime.pose_wait).
    tf_timeout_s: float = setting(0.3, "wait this long for TF of a frame, then process it single-view (replay: "
                                       "how far past a frame the bag's TF must be before a frame with no TF path "
                                       "gives up)", constraint=(0.0, 10.0))
    publish_depth: bool = setting(True, "publish ~/depth/image, ~/depth/image_color, ~/depth/confidence (models that "
                                        "output one) and ~/depth/camera_info", scope=NODE)
    publish_semantic: bool = setting(True, "publish ~/semantic/image, ~/semantic/image_color and "
                                           "~/semantic/camera_info", scope=NODE)
    publish_normals: bool = setting(True, "publish ~/normals/image, ~/normals/image_color and ~/normals/camera_info",
                                    scope=NODE)
    publish_boundary: bool = setting(True, "publish ~/boundary/image and ~/boundary/camera_info", scope=NODE)
    publish_points: bool = setting(True, "publish ~/points", scope=NODE)
    lazy: bool = setting(True, "run the network only while an enabled output has a subscriber (image_pipeline's lazy "
                               "outputs), post-process only the output groups subscribed to and publish only the "
                               "subscribed topics (the network's heads all run); idle frames still join the "
                               "source-view history, so the first output after a subscriber connects is two-view",
                         scope=NODE)
    point_stride: int = setting(4, "cloud: every n-th pixel in x and y", constraint=(1, 64))
    cloud_frame: str = setting("camera", "cloud frame: camera (image frame_id) or world (world_frame)",
                               constraint=CLOUD_FRAMES)
    output_resolution: str = setting("network", "output image size: network (model input) or camera",
                                     constraint=OUTPUT_RESOLUTIONS)
    diagnostics_period_s: float = setting(1.0, "period of /diagnostics", read_only=True, constraint=(0.01, 60.0))
    max_image_pixels: int = setting(MAX_IMAGE_PIXELS, "larger images (width x height; a compressed image's header is "
                                                       "read before decoding) are bad input; also bounds "
                                                       "output_resolution=camera", constraint=(4, 2**40))
    single_view: bool = setting(False, f"never pair a source view: every frame runs single-view (reason "
                                       f"{SINGLE_VIEW_MODE}, not a fallback to warn about); poses still place the "
                                       "world-frame cloud, and with cloud_frame camera no TF is waited for")
    check_pose_convention: bool = setting(True, "check now and then that the poses fit the images as optical-frame "
                                                "camera-to-world (REP 103); while another reading (OpenGL axes, "
                                                "world-to-camera, the body frame) fits much better, warn "
                                                "(pose_convention) and run that camera single-view. Models with the "
                                                "geometric depth only")
    check_pose_consistency: bool = setting(True, "run a frame single-view, forgetting its camera's earlier frames, when "
                                                 "its pair's geometry puts the scene 1.7x nearer or farther than the "
                                                 "camera's recent pairs did: the poses jumped within the speed limits "
                                                 "(a relocalisation in map). Models with the prior's scale alignment "
                                                 "only")
    pairing: PairingConfig = field(default_factory=PairingConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SettingError` naming the first setting outside its range or choices (the node replies with
        its message; ``mtl3d replay`` words it with the flag)."""
        for name, spec in parameter_specs(type(self)).items():
            value = self.get(name)
            constraint = spec.constraint
            if constraint is None:
                continue
            if isinstance(constraint[0], str):
                if value not in constraint:
                    raise SettingError(name, f"{name} must be one of {', '.join(constraint)}, got {value!r}")
            elif not constraint[0] <= value <= constraint[1]:
                raise SettingError(name, f"{name} must be in [{constraint[0]}, {constraint[1]}], got {value!r}")
        if not self.image_topic.strip("/ "):
            raise SettingError("image_topic", f"image_topic must not be empty, got {self.image_topic!r}")
        for name in ("image_topic", "camera_info_topic"):
            if (value := self.get(name)) and (reason := topic_name_problem(name, value)):
                raise SettingError(name, reason)
        if self.camera_info_input() == self.image_topic:
            if not self.camera_info_topic:  # image_topic names the camera_info itself (".../camera_info")
                raise SettingError("image_topic", f"image_topic {self.image_topic!r} is a camera_info topic; expected "
                                   "the sensor_msgs/Image topic (its camera_info is read beside it)")
            raise SettingError("camera_info_topic", f"camera_info_topic {self.camera_info_topic!r} is the image "
                               "topic; expected the sensor_msgs/CameraInfo topic published beside it")
        for name, reason in (("world_frame", frame_id_problem("world_frame", self.world_frame)),  # tf2's rule
                             ("device", device_problem(self.device))):
            if reason:
                raise SettingError(name, reason)
        self.pairing.validate()

    @property
    def uses_pose(self) -> bool:
        """Whether a frame's pose is used: for pairing, or to place the cloud in ``world_frame``. With ``single_view``
        and ``cloud_frame: camera`` it is not, and the node does not wait ``tf_timeout_s`` for TF that a camera without
        odometry never sends."""
        return not self.single_view or self.cloud_frame == "world"

    def camera_info_input(self, image_topic: str | None = None) -> str:
        """The CameraInfo topic read: ``camera_info_topic``, or the one beside the image topic when that is ''
        (``topics.camera_info_topic_for``, image_transport's rule). ``image_topic``: the image topic as resolved
        (the node's, after remapping); default ``self.image_topic``."""
        return self.camera_info_topic or topics.camera_info_topic_for(image_topic or self.image_topic)

    # -------------------------------------------------------------------------------- flat parameter view

    def __getattr__(self, name: str) -> Any:  # only for names that are not fields: the pairing settings
        if name in PAIRING_SETTINGS:
            return getattr(self.pairing, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get(self, name: str) -> Any:
        """A setting by its parameter name (pairing fields included: :meth:`__getattr__`)."""
        return getattr(self, name)

    def replace(self, **changes: Any) -> RuntimeConfig:
        """A validated copy with some settings changed by parameter name (pairing fields included)."""
        pairing = {k: changes.pop(k) for k in list(changes) if k in PAIRING_SETTINGS}
        if pairing:
            changes["pairing"] = dataclasses.replace(changes.get("pairing", self.pairing), **pairing)
        return dataclasses.replace(self, **changes)

    def outputs(self) -> frozenset[str]:
        """The pipeline outputs to compute for the published groups (:func:`required_outputs`)."""
        return required_outputs(name for name in OUTPUT_NAMES if self.get(f"publish_{name}"))

    def with_outputs(self, outputs: set[str] | frozenset[str] | tuple[str, ...]) -> RuntimeConfig:
        """A copy publishing exactly ``outputs`` (names from ``OUTPUT_NAMES``; others raise ValueError)."""
        required_outputs(outputs)  # checks the names
        return self.replace(**{f"publish_{name}": name in outputs for name in OUTPUT_NAMES})


def required_outputs(groups: Iterable[str]) -> frozenset[str]:
    """The pipeline outputs to compute for the output ``groups`` wanted (names from ``OUTPUT_NAMES``): those, plus
    depth when normals or the cloud need it (normals are masked and clouds back-projected with the depth).

    Raises:
        ValueError: a name not in ``OUTPUT_NAMES`` (a topic name such as ``depth/image`` is not a group).
    """
    wanted = set(groups)
    if unknown := wanted - set(OUTPUT_NAMES):
        raise ValueError(f"unknown outputs {sorted(unknown)}; expected some of {', '.join(OUTPUT_NAMES)}")
    if wanted & {"normals", "points"}:
        wanted.add("depth")
    return frozenset(wanted)


@dataclass(frozen=True)
class ParameterSpec:
    """One setting as a parameter: default, type, description, read-only flag, range or choices, scope."""

    name: str
    default: Any
    type: type
    description: str
    read_only: bool
    constraint: Any
    scope: tuple[str, ...]


def parameter_specs(cls: type = RuntimeConfig, scope: str | None = None) -> dict[str, ParameterSpec]:
    """The settings of :class:`RuntimeConfig` (or a subclass such as replay's options) as parameters, pairing
    flattened; ``scope``: only those of ``node`` or ``replay``."""
    if isinstance(cls, str):  # parameter_specs("node")
        cls, scope = RuntimeConfig, cls
    specs: dict[str, ParameterSpec] = {}
    pairing = PairingConfig()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "pairing":
            for name, (description, constraint) in PAIRING_SETTINGS.items():
                default = getattr(pairing, name)
                specs[name] = ParameterSpec(name, default, type(default), description, False, constraint, BOTH)
            continue
        m = f.metadata
        kind = type(f.default) if f.default is not None else typing.get_args(hints[f.name])[0]
        specs[f.name] = ParameterSpec(f.name, f.default, kind, m["description"], m["read_only"],
                                      m["constraint"], m["scope"])
    return {k: s for k, s in specs.items() if scope is None or scope in s.scope}


def config_from_parameters(values: dict[str, Any], base: RuntimeConfig | None = None) -> RuntimeConfig:
    """A RuntimeConfig from ``{parameter name: value}`` (others from ``base`` or the defaults).

    Raises:
        ConfigError: an unknown name or a value of the wrong type (named); SettingError: out of range (named).
    """
    base = base or RuntimeConfig()
    specs = parameter_specs(type(base))
    typed = {}
    for name, value in values.items():
        if name not in specs:
            raise ConfigError(f"unknown runtime setting {name!r}; known: {', '.join(specs)}")
        optional = specs[name].default is None  # e.g. replay's limit: None = no limit
        typed[name] = None if optional and value is None else coerce(specs[name].type, value, name,
                                                                     what="runtime setting")
    return base.replace(**typed)


def yaml_text(node_name: str = topics.NODE_NAME) -> str:
    """``config/perception.yaml`` as generated from the defaults (the shipped file must equal it)."""
    import json

    lines = ["# Parameters of perception_node, generated from mtl3d_perception/runtime/config.py (RuntimeConfig);",
             "# read-only ones need a restart. Regenerate: python -c \"from mtl3d_perception.runtime.config import "
             "yaml_text; print(yaml_text(), end='')\" > config/perception.yaml",
             "# Load with: ros2 run mtl3d_perception perception_node --ros-args --params-file config/perception.yaml",
             f"# /**/{node_name}: this node in any namespace (-r __ns:=/robot1); a renamed node (-r __node:=front) "
             "needs its own name here",
             f"/**/{node_name}:", "  ros__parameters:"]  # topics.PARAMS_SECTION for the default name
    for spec in parameter_specs("node").values():
        note = ""
        if isinstance(spec.constraint, tuple) and isinstance(spec.constraint[0], str):
            note = f" ({' | '.join(spec.constraint)})"
        lines.append(f"    # {spec.description}{note}{' [read-only]' if spec.read_only else ''}")
        lines.append(f"    {spec.name}: {json.dumps(spec.default)}")
    lines += ["    # QoS overrides (ROS 2 QoSOverridingOptions, read-only), one per topic and policy, the topic fully "
              "qualified; the defaults:",
              f"    #   inputs (image, camera_info): qos_overrides.<topic>.subscription.<policy>, policy "
              f"{' | '.join(topics.INPUT_QOS_OVERRIDES)}: best_effort, depth {topics.IMAGE_QOS_DEPTH} (camera_info "
              f"{topics.CAMERA_INFO_QOS_DEPTH})",
              f"    #   outputs: qos_overrides.<topic>.publisher.<policy>, policy {' | '.join(topics.OUTPUT_QOS_OVERRIDES)}"
              f": reliable, volatile, depth {topics.OUTPUT_QOS_DEPTH}",
              f"    # qos_overrides./{node_name}/points.publisher.reliability: \"best_effort\""]
    return "\n".join(lines) + "\n"


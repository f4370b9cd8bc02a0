"""Checks of runtime parameter values that their type and range cannot express (no ROS import).

Each check returns ``None`` when the value can hold, else the reason, worded for a parameter service reply
(``SetParametersResult.reason``) and a start-up error alike. The node calls them from its parameter callback, at
start-up and on every later set, so a value that the robot's tf2 or device would refuse is refused up front, not
accepted and then silently run otherwise.
"""

from __future__ import annotations

import re
from typing import Any

# The torch devices the node, replay, training and evaluation accept ('auto' picks cuda when available, else cpu).
DEVICES = "auto, cpu, cuda, cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

# Reduced precisions run through torch.autocast on CUDA only: on a CPU the pipeline would silently run fp32.
CUDA_ONLY_PRECISIONS = ("fp16", "bf16")


def frame_id_problem(name: str, frame_id: str) -> str | None:
    """Why ``frame_id`` cannot be a tf2 frame id, or None.

    tf2 refuses empty frame ids and ones starting with '/' ("Invalid argument "/odom" passed to lookupTransform
    argument target_frame in tf2 frame_ids cannot start with a '/'", ros2/geometry2 ``tf2/src/buffer_core.cpp``
    ``validateFrameId``), and so does the compat buffer (``runtime/tf_buffer.py``). White space anywhere is refused
    too, and so is an empty part (``"odom/"``, ``"a//b"``): tf2 would accept them, but no broadcaster names a frame so
    (REP 105 names, URDF links), so each is a typo that would leave every lookup waiting for a frame that never comes.
    """
    if not frame_id.strip():
        return f"{name} must not be empty, got {frame_id!r}"
    if frame_id.startswith("/"):
        bare = frame_id.lstrip("/")
        return (f"{name} {frame_id!r}: tf2 frame ids cannot start with a '/'; "
                + (f"use {bare!r}" if bare and frame_id_problem(name, bare) is None else "expected a name such as 'odom'"))
    if re.search(r"\s", frame_id):
        return f"{name} {frame_id!r} contains white space; tf2 frame ids are single words such as 'odom'"
    if frame_id.endswith("/") or "//" in frame_id:  # the same kind of typo: tf2 accepts it, no broadcaster uses it
        return (f"{name} {frame_id!r} has an empty part ('/' at the end or '//'); tf2 frame ids are names such as "
                "'odom' or 'robot1/odom'")
    return None


# rcl's node-name rule (rcl_validate_node_name): letters, digits and underscores, not starting with a digit.
_NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def node_name_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be a ROS node name (rcl's rule), or None; ``name`` is the setting's name."""
    if not _NODE_NAME.fullmatch(value):
        return (f"{name} {value!r} is not a ROS node name: letters, digits and underscores, not starting with a "
                "digit")
    return None


# rcl's topic-name rule (rcl_validate_topic_name), without its {substitutions}: tokens of letters, digits and
# underscores, not starting with a digit, joined by single '/'; absolute ('/a/b'), relative ('a/b') or private ('~/a').
_TOPIC_NAME = re.compile(r"(/|~/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def topic_name_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be a ROS topic name (rcl's rule: rclpy raises InvalidTopicNameException at subscribe
    time, and a bag recorded from ROS 2 holds no such topic), or None; ``name`` is the setting's name."""
    if not _TOPIC_NAME.fullmatch(value):
        return (f"{name} {value!r} is not a ROS topic name: tokens of letters, digits and underscores (not starting "
                "with a digit) joined by single '/', no trailing '/', e.g. '/camera/color/image_raw'")
    return None


def device_problem(device: str) -> str | None:
    """Why ``device`` is not one of :data:`DEVICES` (checked before torch sees it: torch's own message lists every
    device type it was built for, not the ones this package runs on), or None."""
    if isinstance(device, str) and _DEVICE.fullmatch(device):
        return None
    return f"device must be one of {DEVICES} (N: a GPU index), got {device!r}"


def precision_problem(precision: str, device: str) -> str | None:
    """Why inference ``precision`` cannot run on the resolved torch ``device`` ('cpu', 'cuda', 'cuda:1'), or None."""
    if precision in CUDA_ONLY_PRECISIONS and not device.startswith("cuda"):
        return (f"precision {precision} needs a CUDA device, but the node runs on {device}; "
                f"use fp32 (or device cuda on a machine with a GPU)")
    return None


# Parameters every rclpy node takes besides its own that may be undeclared when checked (rclpy declares use_sim_time;
# the type description service reads its own). A ``qos_overrides.`` one is known only where the node declared it
# (``ros.qos``): rclpy ignores one for a topic the node has not, e.g. a mistyped topic.
ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")
QOS_PREFIX = "qos_overrides."


def unknown_parameters(given: list[str] | set[str], declared: list[str] | set[str]) -> list[str]:
    """The names in ``given`` (a node's start-up overrides: ``-p``, ``--params-file``) that the node does not declare
    and ROS does not read itself, each worded ``'history_sizee' (did you mean 'history_size'?)`` where a declared
    name is close (``difflib``), sorted. rclpy ignores such an override without a word, so a misspelt parameter
    would silently keep its default.
    """
    import difflib

    declared = sorted(declared)
    out = []
    for name in sorted(set(given) - set(declared)):
        if name in ROS_PARAMETERS:
            continue
        if name.startswith(QOS_PREFIX):
            out.append(f"{name!r} ({_qos_override_hint(name, declared)})")
            continue
        close = difflib.get_close_matches(name, declared, n=1)
        out.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return out


def _qos_override_hint(name: str, declared: list[str]) -> str:
    """Which part of an undeclared ``qos_overrides.<topic>.<entity>.<policy>`` name is wrong, against the declared
    ones: the topic (none of the node's, fully qualified after remapping; a close one suggested), the entity (an
    output is a ``publisher``, an input a ``subscription``) or the policy (not one the node offers there)."""
    import difflib

    def split(n: str) -> tuple[str, str, str]:
        topic, _, rest = n.removeprefix(QOS_PREFIX).rpartition(".")
        topic, _, entity = topic.rpartition(".")
        return topic, entity, rest

    topic, entity, policy = split(name)
    ours = [split(n) for n in declared if n.startswith(QOS_PREFIX)]
    same_topic = [(e, p) for t, e, p in ours if t == topic]
    if not same_topic:
        close = difflib.get_close_matches(topic, sorted({t for t, _, _ in ours}), n=1, cutoff=0.8)
        return (f"did you mean the topic {close[0]!r}?" if close else
                "this node has no such topic: names are fully qualified, after remapping")
    entities = sorted({e for e, _ in same_topic})
    if entity not in entities:
        return f"{topic} is a {' and a '.join(entities)} of this node, not a {entity}"
    policies = sorted(p for e, p in same_topic if e == entity)
    return f"{policy} is not overridable there; the {entity} takes {', '.join(policies)}"


def params_file_paths(args: list[str]) -> list[str]:
    """The ``--params-file PATH`` values of a ROS command line (``--ros-args`` sections; launch_ros passes a node's
    parameters so)."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--params-file"]


def _node_sections(data: Any, prefix: str = "") -> list[str]:
    """The node paths of a params file's sections: ``/a/b`` for ``a: {b: {ros__parameters: ...}}`` or ``/a/b:``."""
    paths = []
    for key, value in data.items() if isinstance(data, dict) else ():
        if key == "ros__parameters":
            paths.append(prefix or "/")
        elif isinstance(value, dict):
            paths += _node_sections(value, f"{prefix}/{str(key).strip('/')}")
    return paths


def _section_matches(section: str, node_fqn: str) -> bool:
    """rcl's rule for a section name (``rcl_yaml_param_parser``): ``/**`` is any run of namespaces (none too), ``*``
    one name, anything else itself."""
    pattern = re.escape("/" + section.strip("/")).replace(r"/\*\*", "(/[^/]+)*").replace(r"/\*", "/[^/]+")
    return re.fullmatch(pattern, "/" + node_fqn.strip("/")) is not None


def params_file_problem(path: str, node_fqn: str) -> str | None:
    """Why none of the params file ``path`` applies to the node ``node_fqn`` (``/ns/name``), or None. rcl applies the
    ``ros__parameters`` of sections that name the node (``/ns/name``, nested ``ns: {name: ...}``, the wildcards
    ``/**`` and ``*``) and ignores the rest without a word, so a misspelt node name silently keeps every default.
    Unreadable files are rcl's to refuse (it does so at init)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    sections = _node_sections(data)
    if not sections or any(_section_matches(section, node_fqn) for section in sections):
        return None
    return (f"params file {path} has no section for this node ({node_fqn}; its sections: {', '.join(sections)}): "
            f"none of its parameters apply; name the node there as {node_fqn} or /**/{node_fqn.rsplit('/', 1)[-1]}")

"""The node's QoS: the profile of each input and output, the policies a user may override, and what to say when a
peer's QoS cannot match.

Like image_pipeline's nodes (``rclcpp::QosOverridingOptions::with_default_policies()`` on ``points2``) and the
robot drivers that follow it, every input subscription and output publisher is created with rclpy's
``QoSOverridingOptions`` (REP-2003's sensor-data intent stays the default): at start-up, read-only parameters
``qos_overrides.<fully qualified topic>.subscription.<policy>`` (inputs: ``history``, ``depth``, ``reliability``) and
``qos_overrides.<fully qualified topic>.publisher.<policy>`` (outputs: those plus ``durability``) replace the
defaults, e.g. ``qos_overrides./mtl3d_perception/points.publisher.reliability: best_effort`` for a cloud sent over
Wi-Fi, or ``qos_overrides./camera/color/image_raw.subscription.reliability: reliable`` so large images are not lost
in fragments. A peer whose QoS cannot match (a reliable subscriber of a best-effort output, a best-effort camera
under a reliable override) gets nothing; rclpy's ``incompatible_qos`` event names the policy and
:func:`incompatible_qos_message` says which parameter would fix it.
"""

from __future__ import annotations

import copy

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSPolicyKind,
    QoSProfile,
    ReliabilityPolicy,
    qos_policy_name_from_kind,
)
from rclpy.qos_overriding_options import QoSOverridingOptions

from mtl3d_perception import topics

try:  # rclpy >= Iron
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

__all__ = ["CAMERA_INFO_QOS", "INPUT_OVERRIDES", "OUTPUT_OVERRIDES", "OUTPUT_QOS", "SENSOR_QOS",
           "PublisherEventCallbacks", "SubscriptionEventCallbacks", "entity_qos", "incompatible_qos_message",
           "override_parameter", "policy_name"]

SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
                        history=HistoryPolicy.KEEP_LAST, depth=topics.IMAGE_QOS_DEPTH)
# a camera_info lost while the executor is busy (a 12 MP image being taken) costs its image its pair: kept as rclpy's
# qos_profile_sensor_data keeps sensor messages (depth 5); images stay latest-only (depth 1)
CAMERA_INFO_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
                             history=HistoryPolicy.KEEP_LAST, depth=topics.CAMERA_INFO_QOS_DEPTH)
OUTPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                        history=HistoryPolicy.KEEP_LAST, depth=topics.OUTPUT_QOS_DEPTH)

INPUT_POLICIES = tuple(QoSPolicyKind[name.upper()] for name in topics.INPUT_QOS_OVERRIDES)
OUTPUT_POLICIES = tuple(QoSPolicyKind[name.upper()] for name in topics.OUTPUT_QOS_OVERRIDES)
INPUT_OVERRIDES = QoSOverridingOptions(INPUT_POLICIES)
OUTPUT_OVERRIDES = QoSOverridingOptions(OUTPUT_POLICIES)


def entity_qos(profile: QoSProfile) -> QoSProfile:
    """A copy of ``profile`` for one publisher or subscription: rclpy writes a topic's ``qos_overrides`` into the
    profile it is given, which must not leak into the next entity's default."""
    return copy.copy(profile)


def policy_name(kind: QoSPolicyKind | int) -> str:
    """``QoSPolicyKind.RELIABILITY`` -> ``'reliability'``, the word ``qos_overrides`` parameters use."""
    return qos_policy_name_from_kind(kind).lower()


def override_parameter(topic: str, entity: str, policy: str) -> str:
    """``qos_overrides.<topic>.<entity>.<policy>`` (rclpy ``_declare_qos_parameters``); ``entity`` is
    ``publisher`` or ``subscription``, ``topic`` fully qualified."""
    return f"qos_overrides.{topic}.{entity}.{policy}"


# the value of each side that matches every peer (reliable offers serve best-effort requests, not the reverse)
_MATCHES_ALL = {("reliability", "subscription"): "best_effort", ("reliability", "publisher"): "reliable",
                ("durability", "subscription"): "volatile", ("durability", "publisher"): "transient_local"}


def _value(profile: QoSProfile, policy: str) -> str:
    value = getattr(profile, policy, "?")
    return value.name.lower() if hasattr(value, "name") else str(value)


def incompatible_qos_message(topic: str, entity: str, profile: QoSProfile, kind: QoSPolicyKind | int,
                             count: int) -> str:
    """What to say when a peer's QoS cannot match this node's ``entity`` (``publisher`` / ``subscription``) on
    ``topic``, whose effective QoS is ``profile``; ``kind`` is the event's ``last_policy_kind``, ``count`` its
    ``total_count``.

    Names the policy, this side's value, who gets nothing, and the ``qos_overrides`` parameter that changes this side
    where it is one a user may override (``topics.INPUT_QOS_OVERRIDES`` / ``OUTPUT_QOS_OVERRIDES``).
    """
    policy = policy_name(kind)
    ours = _value(profile, policy)
    if entity == "publisher":
        who = (f"{count} subscriber(s) of {topic} request QoS this node's publisher does not offer ({policy}: it "
               f"offers {ours}); they receive nothing")
        overridable = topics.OUTPUT_QOS_OVERRIDES
    else:
        who = (f"{count} publisher(s) of {topic} offer QoS this node's subscription does not accept ({policy}: it "
               f"requests {ours}); nothing of theirs is received")
        overridable = topics.INPUT_QOS_OVERRIDES
    if policy in overridable:
        value = _MATCHES_ALL.get((policy, entity))
        setting = override_parameter(topic, entity, policy) + (f": {value}" if value else "")
        fix = f"set the peer's {policy} to match, or this node's with the start-up parameter {setting}"
    else:
        fix = f"set the peer's {policy} to match"
    return f"{who}; {fix}"

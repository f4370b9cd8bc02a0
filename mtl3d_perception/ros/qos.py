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
under a reliable override) gets nothing; rclpy's ``incompatible_qos`` event says when one appears, and
:func:`mismatch_message` says, from the graph as it is now, which policy and which parameter would fix it.
"""

from __future__ import annotations

import copy

from rclpy.duration import Infinite
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSCompatibility,
    QoSPolicyKind,
    QoSProfile,
    ReliabilityPolicy,
    qos_check_compatible,
    qos_policy_name_from_kind,
)
from rclpy.qos_overriding_options import QoSOverridingOptions

from mtl3d_perception import topics

try:  # rclpy >= Iron
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

__all__ = [
    "CAMERA_INFO_QOS",
    "INPUT_OVERRIDES",
    "OUTPUT_OVERRIDES",
    "OUTPUT_QOS",
    "SENSOR_QOS",
    "PublisherEventCallbacks",
    "SubscriptionEventCallbacks",
    "entity_qos",
    "fragment_loss_hint",
    "incompatible_policy",
    "mismatch_message",
    "policy_name",
]

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


# the value of each side that matches every peer (reliable offers serve best-effort requests, not the reverse)
_MATCHES_ALL = {("reliability", "subscription"): "best_effort", ("reliability", "publisher"): "reliable",
                ("durability", "publisher"): "transient_local"}


def _value(profile: QoSProfile, policy: str) -> str:
    value = getattr(profile, policy, "?")
    if hasattr(value, "nanoseconds"):  # deadline, lifespan, lease duration: 0 is rmw's "not set", the graph's infinite
        return "infinite" if value.nanoseconds in (0, Infinite.nanoseconds) else f"{value.nanoseconds * 1e-9:g} s"
    return value.name.lower() if hasattr(value, "name") else str(value)


def incompatible_policy(publisher: QoSProfile, subscription: QoSProfile) -> QoSPolicyKind | None:
    """The policy that keeps a ``publisher`` and a ``subscription`` apart (rclpy ``qos_check_compatible``; the
    first of reliability, durability, deadline, liveliness, lease duration that differs the wrong way), or None when
    they match (or rmw cannot tell: system-default values)."""
    compatibility, _ = qos_check_compatible(publisher, subscription)
    if compatibility != QoSCompatibility.ERROR:
        return None
    if (publisher.reliability, subscription.reliability) == (ReliabilityPolicy.BEST_EFFORT, ReliabilityPolicy.RELIABLE):
        return QoSPolicyKind.RELIABILITY
    if (publisher.durability, subscription.durability) == (DurabilityPolicy.VOLATILE,
                                                           DurabilityPolicy.TRANSIENT_LOCAL):
        return QoSPolicyKind.DURABILITY
    for kind, name in ((QoSPolicyKind.DEADLINE, "deadline"), (QoSPolicyKind.LIVELINESS, "liveliness"),
                       (QoSPolicyKind.LIVELINESS_LEASE_DURATION, "liveliness_lease_duration")):
        if getattr(publisher, name) != getattr(subscription, name):
            return kind
    return QoSPolicyKind.INVALID


def fragment_loss_hint(topic: str, profile: QoSProfile, peers: list[QoSProfile]) -> str | None:
    """Why a best-effort subscription (``profile``) whose publishers' QoS matches may still receive nothing: a large
    message sent best-effort is lost whole when one of its UDP fragments is (Fast DDS, Jazzy's default RMW, drops
    every 640x480 rgb8 image this way in a node trial, ros2/rmw_fastrtps#739); with a reliable publisher among
    ``peers`` a reliable override fixes it. None when the subscription is reliable or no publisher is."""
    if profile.reliability != ReliabilityPolicy.BEST_EFFORT or not any(
            p.reliability == ReliabilityPolicy.RELIABLE for p in peers):
        return None
    return (f"their QoS matches, so large messages may be lost in transit: a best-effort subscription loses a whole "
            f"image when one of its fragments is lost (images of ~0.5 MB and up with Fast DDS over UDP); the publisher "
            f"is reliable, so set {topics.override_parameter(topic, 'subscription', 'reliability')}: reliable")


def mismatch_message(topic: str, entity: str, profile: QoSProfile, peers: list[QoSProfile]) -> str | None:
    """What to say about the peers on ``topic`` whose QoS cannot match this node's ``entity`` (``publisher``: its
    subscribers; ``subscription``: its publishers), this side's effective QoS being ``profile`` as the graph reports it
    (``get_*_info_by_topic``: rmw's "not set" durations read as infinite there; compared with the profile rclpy holds,
    every peer with a deadline would seem to mismatch): None when every peer matches. From the graph as it is now, so a
    peer that left is no longer named (rclpy's ``incompatible_qos`` event counts every one ever seen).

    Names how many peers, the policy, this side's value, who gets nothing, and the ``qos_overrides`` parameter that
    changes this side where it is one a user may override (``topics.INPUT_QOS_OVERRIDES`` / ``OUTPUT_QOS_OVERRIDES``),
    with the value that serves every peer.
    """
    kinds = [incompatible_policy(*((profile, peer) if entity == "publisher" else (peer, profile))) for peer in peers]
    kinds = [k for k in kinds if k is not None]
    if not kinds:
        return None
    if kinds[0] == QoSPolicyKind.INVALID:  # rmw says no, yet no policy the checks above know differs
        return f"{len(kinds)} peer(s) of {topic} cannot match this node's {entity} QoS; set the peer's QoS to match"
    policy = policy_name(kinds[0])
    ours = _value(profile, policy)
    if entity == "publisher":
        who = (f"{len(kinds)} subscriber(s) of {topic} request QoS this node's publisher does not offer ({policy}: it "
               f"offers {ours}); they receive nothing")
        overridable = topics.OUTPUT_QOS_OVERRIDES
    else:
        who = (f"{len(kinds)} publisher(s) of {topic} offer QoS this node's subscription does not accept ({policy}: "
               f"it requests {ours}); nothing of theirs is received")
        overridable = topics.INPUT_QOS_OVERRIDES
    if policy in overridable:
        value = _MATCHES_ALL.get((policy, entity))
        setting = topics.override_parameter(topic, entity, policy) + (f": {value}" if value else "")
        fix = f"set the peer's {policy} to match, or this node's with the start-up parameter {setting}"
    else:
        fix = f"set the peer's {policy} to match"
    return f"{who}; {fix}"

"""The ``diagnostic_msgs/DiagnosticArray`` form of :class:`~mtl3d_perception.runtime.stats.RuntimeStats` (no rclpy import).

``diagnostic_updater`` is not installable here (``../shared/notes/ros2_ecosystem.md`` C.3); this is the small
part of it the node needs: one status with the rate, per-stage latency p50/p95, dropped frames, single-view
fallbacks, TF failures, bad input by kind, device and model. Messages are built through a ``types`` mapping
like ``msgs/conversions.py``, so replay can write the same status into a bag.

Levels: ERROR while the pipeline itself fails (an internal error within ``warn_window_s``); WARN while inputs
or poses are bad (a recent problem: bad input, TF failure, time jump), when most recent frames ran single-view
for lack of a usable source, when images arrive but none pairs with a camera_info, when no frame was
processed for ``rate_window_s`` (since the last one, or since the first status), or while frames are kept without
running because every ``publish_*`` is false or an output whose ``publish_*`` is false has a subscriber; else OK
(also while idle for want of a subscriber: ``lazy``).
"""

from __future__ import annotations

from typing import Any

from mtl3d_perception.runtime.stats import FALLBACK_MEANING

OK, WARN, ERROR, STALE = 0, 1, 2, 3


def _level_value(cls: type, level: int) -> Any:
    """rclpy stores the ``byte`` field ``level`` as ``bytes``; rosbags as int."""
    if getattr(cls, "_fields_and_field_types", {}).get("level") == "octet":
        return bytes([level])
    return level


def status_fields(snapshot: dict[str, Any], info: dict[str, str],
                  extra_warnings: list[str] = ()) -> tuple[int, str, list[tuple[str, str]]]:
    """(level, message, [(key, value)]) for a snapshot plus static ``info`` (device, model, ...); ``extra_warnings``
    are conditions the caller sees that the stats do not hold (the node's QoS mismatches): each makes it WARN."""
    counts = snapshot["counts"]
    processed = counts.get("processed", 0)
    latency = snapshot["latency_s"]
    idle_reason = snapshot.get("idle_reason", "")
    if idle_reason:  # frames arrive and are kept as sources, but nobody wants their outputs (the node's lazy mode)
        message = "idle" if snapshot.get("idle_warn") else f"idle: {idle_reason}"  # a warning names it then
    elif processed == 0 and counts.get("received", 0) and counts.get("dropped", 0) >= counts["received"]:
        # paired, yet every frame refused: not waiting (a node trial: an uncalibrated camera read as "waiting")
        message = f"every synchronised frame refused as bad input ({counts['received']} so far)"
    elif processed == 0:
        message = "waiting for synchronised image + camera_info"
    else:
        p50 = latency.get("total", (0.0, 0.0))[0] * 1e3
        message = f"{snapshot['rate_hz']:.1f} Hz, inference p50 {p50:.1f} ms"
    warnings = []
    if snapshot["sync_stalled"]:
        warnings.append(f"images arrive but none pairs with a camera_info within sync_slop_s "
                        f"({counts.get('images', 0)} images, {counts.get('camera_infos', 0)} camera_info)")
    idle_s = snapshot["idle_s"]
    waiting_s = snapshot.get("waiting_s")
    if waiting_s is not None and waiting_s > snapshot["rate_window_s"]:  # no camera at all: not OK (a trial)
        warnings.append(f"no frame processed in the {waiting_s:.0f} s since start-up")
    if idle_reason and snapshot.get("idle_warn"):
        warnings.append(idle_reason)
    elif idle_s is not None and idle_s > snapshot["rate_window_s"] and not idle_reason:
        warnings.append(f"no frame processed for {idle_s:.1f} s")
    ratio = snapshot["single_view_ratio"]
    if ratio is not None and ratio > 0.5:
        reason = snapshot["last_pair_reason"]
        meaning = f": {FALLBACK_MEANING[reason]}" if reason in FALLBACK_MEANING else ""
        warnings.append(f"mostly single-view ({ratio:.0%} of recent frames; last: {reason}{meaning})")
    if snapshot["recent_problem"]:
        warnings.append(snapshot["last_problem"])
    warnings.extend(extra_warnings)
    level = ERROR if snapshot["recent_error"] else WARN if warnings else OK
    if snapshot["recent_error"]:
        warnings.insert(0, snapshot["last_error"])
    message = "; ".join([message, *warnings])
    values = [(key, str(value)) for key, value in info.items()]
    values.append(("rate_hz", f"{snapshot['rate_hz']:.2f}"))
    # single_view_frames: every frame run single-view; single_view_fallbacks: those without a usable source (not the
    # first frame, a still camera or single_view mode: runtime.stats.is_fallback), which the ratio and warning count
    for name in ("images", "camera_infos", "received", "processed", "idle", "dropped", "single_view", "fallbacks",
                 "tf_failures", "time_jumps", "header_problems", "sync_warnings", "internal_errors"):
        key = {"dropped": "dropped_frames", "idle": "idle_frames", "single_view": "single_view_frames",
               "fallbacks": "single_view_fallbacks"}.get(name, name)
        values.append((key, str(counts.get(name, 0))))
    values.append(("single_view_ratio", "n/a" if ratio is None else f"{ratio:.2f}"))  # n/a: no recent frame
    values.append(("bad_input", str(sum(snapshot["bad_input"].values()))))
    values.extend((f"bad_input.{kind}", str(n)) for kind, n in sorted(snapshot["bad_input"].items()))
    for stage, (p50, p95) in latency.items():
        values.append((f"latency_{stage}_p50_ms", f"{p50 * 1e3:.2f}"))
        values.append((f"latency_{stage}_p95_ms", f"{p95 * 1e3:.2f}"))
    values.append(("last_pair_reason", snapshot["last_pair_reason"]))
    values.append(("last_baseline_m", f"{snapshot.get('last_baseline_m', 0.0):.3f}"))
    values.append(("last_problem", snapshot["last_problem"]))
    values.append(("last_error", snapshot["last_error"]))
    return level, message, values


def make_diagnostic_array(types: Any, header: Any, snapshot: dict[str, Any], *, name: str, hardware_id: str,
                          info: dict[str, str], warnings: list[str] = ()) -> Any:
    """A ``diagnostic_msgs/DiagnosticArray`` holding one status for the pipeline (``warnings``: see
    :func:`status_fields`' ``extra_warnings``)."""
    level, message, values = status_fields(snapshot, info, warnings)
    status = make_status(types, level, name=name, message=message, hardware_id=hardware_id, values=values)
    return types["diagnostic_msgs/msg/DiagnosticArray"](header=header, status=[status])


def make_status(types: Any, level: int, *, name: str, message: str, hardware_id: str,
                values: list[tuple[str, str]]) -> Any:
    """One ``diagnostic_msgs/DiagnosticStatus`` (``level`` OK / WARN / ERROR / STALE)."""
    kv = types["diagnostic_msgs/msg/KeyValue"]
    status_cls = types["diagnostic_msgs/msg/DiagnosticStatus"]
    return status_cls(level=_level_value(status_cls, level), name=name, message=message, hardware_id=hardware_id,
                      values=[kv(key=k, value=v) for k, v in values])


def status_name(node_name: str, what: str) -> str:
    """A status's ``name``: ``NODE: what``, NODE the node's fully qualified name without its leading slash
    (diagnostic_updater's rule), so two instances in other namespaces (``front/perception``, ``rear/perception``)
    stay apart in an aggregator and rqt_runtime_monitor."""
    return f"{node_name.lstrip('/')}: {what}"


def make_input_status(types: Any, status: Any, msg_type: str, *, node_name: str, hardware_id: str) -> Any:
    """One input's ``DiagnosticStatus`` from its ``ros.input_monitor.InputStatus`` (node and replay alike), as
    diagnostic_updater's TopicDiagnostic: named ``NODE: input ROLE`` (:func:`status_name`), with the topic, type,
    count and rate."""
    return make_status(types, status.level, name=status_name(node_name, f"input {status.role}"), message=status.message,
                       hardware_id=hardware_id, values=[("topic", status.topic), ("type", msg_type),
                                                        ("messages", str(status.count)),
                                                        ("rate_hz", f"{status.rate_hz:.2f}")])


def diagnostic_values(array_msg: Any) -> dict[str, str]:
    """``{key: value}`` of the first status of a DiagnosticArray (for tests and tools)."""
    return {kv.key: kv.value for kv in array_msg.status[0].values}

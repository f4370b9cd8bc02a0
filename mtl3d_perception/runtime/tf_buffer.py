"""A TF buffer without ROS: static and dynamic transforms, chain lookups through the tree, SLERP interpolation.

It mirrors tf2's semantics (ros2/geometry2 ``tf2/src/buffer_core.cpp``) closely enough that the compat
``tf2_ros.Buffer`` and replay can both sit on it:

- each child frame has one parent; static edges hold one transform valid at all times, dynamic edges a
  time-sorted cache pruned to ``cache_time_s`` behind the newest stamp;
- a lookup at time 0 means "the latest time every dynamic edge of the chain has" (tf2's ``TimePointZero``);
- lookups between two stamps interpolate (SLERP rotation, linear translation via
  ``geometry.interpolate_pose``) and never extrapolate: outside an edge's cache is an
  :class:`ExtrapolationException`;
- a dynamic transform older than its edge's newest by more than the cache is refused as ``TF_OLD_DATA``, as tf2's
  ``TimeCache::insertData`` refuses it (a zero stamp, a stray old message); a late one within the cache is inserted
  in time order, and counted (``out_of_order``, ``max_out_of_order_ns``): a reader that looks a pose up before it has
  read such a sample interpolates across the gap it fills (replay reads TF ahead for that reason).
  A message on one edge never touches another's data. Time jumping back as a whole (a looping bag: the node's
  images, a /clock jump) is the caller's to see; it clears the buffer with :meth:`clear`, as tf2_ros's
  ``time_jump_callback`` does;
- every transform a caller could not use is reported through :meth:`TransformBuffer.reject` (counted in
  ``rejected``): the ``on_problem(kind, message)`` hook lets the node and replay count it in /diagnostics and log
  it through their own logger; without a hook, problems go to ``logging``, throttled per kind.

Failures are the typed tf2 hierarchy, so ``except`` clauses work the same against the real tf2_ros.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mtl3d_perception.geometry import interpolate_pose, invert_se3, to_rigid
from mtl3d_perception.runtime.throttled_log import ThrottledLog

_LOG = logging.getLogger(__name__)


class TransformException(Exception):
    """Base of every lookup failure (tf2.TransformException)."""


class LookupException(TransformException):
    """A frame is unknown to the buffer."""


class ConnectivityException(TransformException):
    """Both frames are known but not connected through the tree."""


class ExtrapolationException(TransformException):
    """The requested time is outside the cached data of some edge of the chain."""


class InvalidArgumentException(TransformException):
    """A transform that is not rigid (NaN, non-orthonormal rotation) or has empty frame names."""


def _validate_frame_id(argument: str, frame_id: str) -> None:
    """tf2 ``BufferCore::validateFrameId``: lookups refuse empty frame ids and ones starting with '/'.

    (Inserting strips the slash, as tf2's ``setTransform`` does; only lookups refuse it.)
    """
    if not frame_id:
        raise InvalidArgumentException(
            f"Invalid argument passed to lookupTransform argument {argument} in tf2 frame_ids cannot be empty")
    if frame_id.startswith("/"):
        raise InvalidArgumentException(
            f'Invalid argument "{frame_id}" passed to lookupTransform argument {argument} in tf2 frame_ids cannot '
            "start with a '/'")


@dataclass
class _Edge:
    parent: str
    static: bool
    authority: str = ""
    stamps: list[int] = field(default_factory=list)  # ascending, ns (one entry, ignored, for static edges)
    transforms: list[np.ndarray] = field(default_factory=list)  # T_parent_child


class TransformBuffer:
    """Thread-safe transform tree (one instance per node or replay run).

    Args:
        cache_time_s: how far behind each edge's newest stamp dynamic transforms are kept (tf2 default 10 s).
        on_problem: called as ``on_problem(kind, message)`` for each rejected transform (kind ``transform``) and each
            time jump reported through :meth:`report` (kind ``time_jump``; called under the buffer's lock, so it must not
            call back into the buffer); None: throttled ``logging`` lines.
    """

    def __init__(self, cache_time_s: float = 10.0, *, on_problem: Callable[[str, str], None] | None = None) -> None:
        if not cache_time_s > 0:
            raise ValueError(f"cache_time_s must be > 0, got {cache_time_s}")
        self.cache_ns = int(cache_time_s * 1e9)
        self._edges: dict[str, _Edge] = {}
        self._lock = threading.Lock()
        self.projected_rotations = 0  # near-rotations projected onto SO(3) on insertion
        self.rejected = 0  # transforms that could not be used (NaN, zero quaternion, bad frame names, ...)
        self.out_of_order = 0  # dynamic transforms inserted before their edge's newest stamp (recorded out of order)
        self.max_out_of_order_ns = 0  # the most any of those was before its edge's newest stamp
        self.on_problem = on_problem
        self._log = ThrottledLog(_LOG)

    def report(self, kind: str, message: str) -> None:
        """Hand a problem (``transform``, ``time_jump``) to ``on_problem``, or log it throttled."""
        if self.on_problem is not None:
            self.on_problem(kind, message)
        else:
            self._log(kind, message, error=kind == "transform")

    def reject(self, message: str) -> None:
        """Count a transform that was not inserted (``message`` says which and why) and report it."""
        with self._lock:
            self.rejected += 1
            self.report("transform", message)

    # ----------------------------------------------------------------------------------------- writing

    def set_transform_matrix(
        self, parent: str, child: str, stamp_ns: int, T_parent_child: np.ndarray, *,
        is_static: bool = False, authority: str = "",
    ) -> None:
        """Insert ``T_parent_child`` valid at ``stamp_ns`` (any time for a static transform).

        A rotation orthonormal only to within 1e-2 (float32 odometry, printed poses) is projected onto SO(3)
        and counted in ``projected_rotations`` (:func:`~mtl3d_perception.geometry.to_rigid`).

        Raises:
            InvalidArgumentException: the message starts with tf2's code (``buffer_core.cpp`` setTransformImpl):
                ``TF_NO_FRAME_ID`` / ``TF_NO_CHILD_FRAME_ID`` (empty), ``TF_SELF_TRANSFORM`` (equal names),
                ``TF_NAN_INPUT`` (NaN / inf), ``TF_OLD_DATA`` (a dynamic transform older than its edge's cache: a
                zero stamp, which is not a time jump), or says the transform is not rigid. The caller decides
                whether that is a rejected input (:meth:`reject`).
        """
        parent, child = parent.lstrip("/"), child.lstrip("/")
        for code, bad in (("TF_NO_FRAME_ID", not parent), ("TF_NO_CHILD_FRAME_ID", not child),
                          ("TF_SELF_TRANSFORM", parent == child)):
            if bad:
                raise InvalidArgumentException(f"{code}: frame_id {parent!r}, child_frame_id {child!r}")
        if not np.all(np.isfinite(np.asarray(T_parent_child, np.float64))):
            raise InvalidArgumentException(f"TF_NAN_INPUT: transform {parent} -> {child} contains NaN or inf")
        try:
            T, projected = to_rigid(T_parent_child, name=f"transform {parent} -> {child}")
        except ValueError as exc:
            raise InvalidArgumentException(str(exc)) from None
        stamp_ns = int(stamp_ns)
        with self._lock:
            self.projected_rotations += projected
            edge = self._edges.get(child)
            if edge is None or edge.static != is_static or edge.parent != parent:
                # tf2 lets a child be re-parented; the old edge's data no longer applies
                edge = self._edges[child] = _Edge(parent=parent, static=is_static, authority=authority)
            if is_static:
                edge.stamps, edge.transforms = [stamp_ns], [T]
                return
            if edge.stamps and stamp_ns < edge.stamps[-1] - self.cache_ns:  # tf2's TimeCache::insertData
                raise InvalidArgumentException(
                    f"TF_OLD_DATA: transform {parent} -> {child} at {stamp_ns * 1e-9:.3f} s is older than the cache "
                    f"({edge.stamps[-1] * 1e-9:.3f} s minus {self.cache_ns * 1e-9:g} s)"
                    + (f"; if {edge.stamps[-1] * 1e-9:.3f} s is in the future, one message stamped so holds this edge "
                       "until time passes it (as in tf2): fix its publisher, then restart the node; if time went back "
                       "(a bag restarted or played with --loop), the cache is cleared when the images' stamps jump "
                       "back too" if stamp_ns else ""))
            i = bisect.bisect_left(edge.stamps, stamp_ns)
            if i < len(edge.stamps) and edge.stamps[i] != stamp_ns:  # older than the edge's newest
                self.out_of_order += 1
                self.max_out_of_order_ns = max(self.max_out_of_order_ns, edge.stamps[-1] - stamp_ns)
            if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
                edge.transforms[i] = T  # same stamp: the newer message wins
            else:
                edge.stamps.insert(i, stamp_ns)
                edge.transforms.insert(i, T)
            cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
            if cut:
                del edge.stamps[:cut], edge.transforms[:cut]

    def clear(self) -> None:
        """Forget the dynamic transforms (static ones stay, as in tf2_ros ``Buffer.clear``)."""
        with self._lock:
            self._edges = {c: e for c, e in self._edges.items() if e.static}

    # ----------------------------------------------------------------------------------------- reading

    def newest_stamp_ns(self, child: str) -> int | None:
        """The newest stamp of the dynamic transform to ``child`` (None: no such edge, or a static one)."""
        with self._lock:
            edge = self._edges.get(child.lstrip("/"))
            return edge.stamps[-1] if edge is not None and not edge.static and edge.stamps else None

    def all_frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def lookup_matrix(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns`` (0: the latest common time).

        Raises:
            LookupException, ConnectivityException, ExtrapolationException.
        """
        return self.lookup_matrix_with_stamp(target, source, stamp_ns)[0]

    def lookup_matrix_with_stamp(self, target: str, source: str, stamp_ns: int = 0) -> tuple[np.ndarray, int]:
        """Like :meth:`lookup_matrix`, also returning the time the result is valid at.

        Raises:
            InvalidArgumentException: an empty frame id or one starting with '/' (as tf2's ``validateFrameId``).
        """
        for argument, name in (("target_frame", target), ("source_frame", source)):
            _validate_frame_id(argument, name)
        with self._lock:
            known = set(self._edges) | {e.parent for e in self._edges.values()}
            for name in (target, source):
                if name not in known:
                    raise LookupException(
                        f'"{name}" passed to lookupTransform argument {"target" if name == target else "source"}_frame '
                        "does not exist."
                    )
            if target == source:
                return np.eye(4), int(stamp_ns)
            up_source, up_target = self._path_to_root(source), self._path_to_root(target)
            depth_in_target = {frame: i for i, frame in enumerate(up_target)}
            common = next((i for i, frame in enumerate(up_source) if frame in depth_in_target), None)
            if common is None:
                raise ConnectivityException(
                    f"Could not find a connection between '{target}' and '{source}' because they are not part of "
                    "the same tree. Tf has two or more unconnected trees."
                )
            # the child frames of the edges from each end up to the common ancestor
            chain_source = up_source[:common]
            chain_target = up_target[: depth_in_target[up_source[common]]]
            stamp_ns = int(stamp_ns) or self._latest_common_locked(chain_source + chain_target, target, source)
            T_common_source = self._chain_at(chain_source, stamp_ns)
            T_common_target = self._chain_at(chain_target, stamp_ns)
            return invert_se3(T_common_target) @ T_common_source, stamp_ns

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        try:
            self.lookup_matrix(target, source, stamp_ns)
        except TransformException:
            return False
        return True

    def _path_to_root(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, ..., root]."""
        path = [frame]
        while frame in self._edges and self._edges[frame].parent not in path:
            frame = self._edges[frame].parent
            path.append(frame)
        return path

    def _chain_at(self, children: list[str], stamp_ns: int) -> np.ndarray:
        """``T_top_bottom`` for the edges whose child frames are ``children`` (bottom first)."""
        T = np.eye(4)
        for child in children:
            T = self._edge_at(child, self._edges[child], stamp_ns) @ T
        return T

    def _latest_common_locked(self, edges: list[str], target: str, source: str) -> int:
        dynamic = [self._edges[c] for c in edges if not self._edges[c].static]
        if not dynamic:
            return 0
        if any(not e.stamps for e in dynamic):
            raise ExtrapolationException(f"no transform data between '{target}' and '{source}' yet")
        return min(e.stamps[-1] for e in dynamic)

    def _edge_at(self, child: str, edge: _Edge, stamp_ns: int) -> np.ndarray:
        if edge.static:
            return edge.transforms[0]
        stamps = edge.stamps
        if stamp_ns == 0:
            return edge.transforms[-1]
        if not stamps or stamp_ns < stamps[0] or stamp_ns > stamps[-1]:
            where = "past" if stamps and stamp_ns < stamps[0] else "future"
            span = f"[{stamps[0] * 1e-9:.6f}, {stamps[-1] * 1e-9:.6f}]" if stamps else "(empty)"
            raise ExtrapolationException(
                f"Lookup would require extrapolation into the {where}. Requested time {stamp_ns * 1e-9:.6f} "
                f"but the data of {edge.parent} -> {child} spans {span}"
            )
        i = bisect.bisect_left(stamps, stamp_ns)
        if stamps[i] == stamp_ns:
            return edge.transforms[i]
        t0, t1 = stamps[i - 1], stamps[i]
        return interpolate_pose(edge.transforms[i - 1], edge.transforms[i], (stamp_ns - t0) / (t1 - t0))

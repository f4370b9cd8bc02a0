"""Log lines throttled per kind, for problems that can repeat at message rate (a bad TF publisher, a stale stream).

The node logs through its rclpy logger and the library through ``logging``; both only need ``warning(str)`` and
``error(str)``, so one rule serves both: the first line of a problem is logged at once, later ones at most once per
``period_s``, with how many were held back since (rclpy's ``throttle_duration_sec`` throttles per call site, not per
problem, and does not count). A problem is its kind plus the message with its numbers taken out
(:func:`message_shape`): a stamp or a count that changes every frame is the same problem, an empty frame_id and a zero
stamp (both kind ``header``) or two different encodings are not, and each gets its first line at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

LOG_THROTTLE_S = 5.0
MAX_PROBLEMS = 256  # problems remembered (the oldest forgotten first)
MAX_LINES_PER_KIND = 3  # lines of one kind per period, whatever their problems
# a number standing alone ('8UC3', 'cam2', 'rgb8' are names, not numbers)
_NUMBER = re.compile(r"(?<![A-Za-z_\d])[-+]?\d+(\.\d*)?([eE][-+]?\d+)?(?![A-Za-z_\d])")


def message_shape(message: str) -> str:
    """``message`` with every number replaced by ``#``: what stays the same while a problem repeats."""
    return _NUMBER.sub("#", message)


class ThrottledLog:
    """``log(kind, message, error=False)``: at most one line per problem (``kind`` and :func:`message_shape`) every
    ``period_s`` seconds, and at most :data:`MAX_LINES_PER_KIND` lines of one kind per ``period_s`` (messages that
    differ in more than numbers, e.g. one per TF child frame, would otherwise each get a line); ``suppressed`` counts
    the lines held back per kind.

    Args:
        logger: anything with ``warning(str)`` and ``error(str)`` (a ``logging.Logger``, an rclpy logger).
        period_s: the throttle period.
        clock: monotonic seconds (injected in tests).
    """

    def __init__(self, logger: Any, period_s: float = LOG_THROTTLE_S, clock: Callable[[], float] = time.monotonic):
        self.logger, self.period_s, self.clock = logger, period_s, clock
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()  # problem -> last line, oldest first
        self._held: Counter[tuple[str, str]] = Counter()
        self._kind_lines: dict[str, deque[float]] = {}  # kind -> times of its recent lines
        self._kind_held: Counter[str] = Counter()  # lines held back by the per-kind cap since the kind's last line
        # kind -> problems the cap held back that never had a line (-> when last held): they go before problems already
        # named, so over the periods every problem of a kind gets named (30 TF children in turn, not the first 3 for
        # ever); one not seen for two periods stops waiting (a problem that went away must not silence the rest)
        self._waiting: dict[str, OrderedDict[str, float]] = {}
        self.suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, kind: str, message: str, *, error: bool = False, period_s: float | None = None) -> bool:
        """Log ``message`` unless a line of the same problem was logged within ``period_s`` (this call's, else the
        log's) or its kind already had :data:`MAX_LINES_PER_KIND` lines within ``self.period_s``; returns whether it
        was logged."""
        period_s = self.period_s if period_s is None else period_s
        key = (kind, message_shape(message))
        with self._lock:
            now = self.clock()
            lines = self._kind_lines.setdefault(kind, deque())
            while lines and now - lines[0] >= self.period_s:
                lines.popleft()
            if now - self._last.get(key, -float("inf")) < period_s:
                self._held[key] += 1
                self.suppressed[kind] += 1
                return False
            waiting = self._waiting.setdefault(kind, OrderedDict())
            while waiting and now - next(iter(waiting.values())) > 2 * self.period_s:  # oldest first
                waiting.popitem(last=False)
            if len(lines) >= MAX_LINES_PER_KIND or (key in self._last and waiting):
                if key not in self._last:
                    waiting[key[1]] = now
                    waiting.move_to_end(key[1])
                    while len(waiting) > MAX_PROBLEMS:
                        waiting.popitem(last=False)
                self._kind_held[kind] += 1
                self.suppressed[kind] += 1
                return False
            waiting.pop(key[1], None)
            lines.append(now)
            self._last[key] = now
            self._last.move_to_end(key)
            held, others = self._held.pop(key, 0), self._kind_held.pop(kind, 0)
            while len(self._last) > MAX_PROBLEMS:  # messages that never repeat must not grow this without bound
                old, _ = self._last.popitem(last=False)
                self._held.pop(old, None)
        notes = [f"{held} more since the last such line"] if held else []
        notes += [f"{others} line(s) of other {kind} problems held back"] if others else []
        if notes:
            message = f"{message} ({'; '.join(notes)})"
        # one call site per severity: rclpy's logger refuses a second severity from one line (ValueError)
        if error:
            self.logger.error(message)
        else:
            self.logger.warning(message)
        return True

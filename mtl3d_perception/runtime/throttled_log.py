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
from collections import Counter
from collections.abc import Callable
from typing import Any

LOG_THROTTLE_S = 5.0
MAX_PROBLEMS = 256  # problems remembered; older ones past their period are forgotten beyond this
# a number standing alone ('8UC3', 'cam2', 'rgb8' are names, not numbers)
_NUMBER = re.compile(r"(?<![A-Za-z_\d])[-+]?\d+(\.\d*)?([eE][-+]?\d+)?(?![A-Za-z_\d])")


def message_shape(message: str) -> str:
    """``message`` with every number replaced by ``#``: what stays the same while a problem repeats."""
    return _NUMBER.sub("#", message)


class ThrottledLog:
    """``log(kind, message, error=False)``: at most one line per problem (``kind`` and :func:`message_shape`) every
    ``period_s`` seconds; ``suppressed`` counts the lines held back per kind.

    Args:
        logger: anything with ``warning(str)`` and ``error(str)`` (a ``logging.Logger``, an rclpy logger).
        period_s: the throttle period.
        clock: monotonic seconds (injected in tests).
    """

    def __init__(self, logger: Any, period_s: float = LOG_THROTTLE_S, clock: Callable[[], float] = time.monotonic):
        self.logger, self.period_s, self.clock = logger, period_s, clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: Counter[tuple[str, str]] = Counter()
        self.suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, kind: str, message: str, *, error: bool = False, period_s: float | None = None) -> bool:
        """Log ``message`` unless a line of the same problem was logged within ``period_s`` (this call's, else the
        log's); returns whether it was logged."""
        period_s = self.period_s if period_s is None else period_s
        key = (kind, message_shape(message))
        with self._lock:
            now = self.clock()
            if now - self._last.get(key, -float("inf")) < period_s:
                self._held[key] += 1
                self.suppressed[kind] += 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
            if len(self._last) > MAX_PROBLEMS:  # messages that never repeat must not grow these without bound
                self._last = {k: t for k, t in self._last.items() if now - t < self.period_s or k == key}
                self._held = Counter({k: n for k, n in self._held.items() if k in self._last})
        if held:
            message = f"{message} ({held} more since the last such line)"
        # one call site per severity: rclpy's logger refuses a second severity from one line (ValueError)
        if error:
            self.logger.error(message)
        else:
            self.logger.warning(message)
        return True

"""Log lines throttled per kind, for problems that can repeat at message rate (a bad TF publisher, a stale stream).

The node logs through its rclpy logger and the library through ``logging``; both only need ``warning(str)`` and
``error(str)``, so one rule serves both: the first line of a kind is logged at once, later ones at most once per
``period_s``, with how many were held back since (rclpy's ``throttle_duration_sec`` throttles per call site, not per
kind, and does not count).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

LOG_THROTTLE_S = 5.0


class ThrottledLog:
    """``log(kind, message, error=False)``: at most one line per ``kind`` every ``period_s`` seconds.

    Args:
        logger: anything with ``warning(str)`` and ``error(str)`` (a ``logging.Logger``, an rclpy logger).
        period_s: the throttle period.
        clock: monotonic seconds (injected in tests).
    """

    def __init__(self, logger: Any, period_s: float = LOG_THROTTLE_S, clock: Callable[[], float] = time.monotonic):
        self.logger, self.period_s, self.clock = logger, period_s, clock
        self._last: dict[str, float] = {}
        self.suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, kind: str, message: str, *, error: bool = False, period_s: float | None = None) -> bool:
        """Log ``message`` unless a line of ``kind`` was logged within ``period_s`` (this call's, else the log's);
        returns whether it was logged."""
        with self._lock:
            now = self.clock()
            if now - self._last.get(kind, -float("inf")) < (self.period_s if period_s is None else period_s):
                self.suppressed[kind] += 1
                return False
            self._last[kind] = now
            held = self.suppressed.pop(kind, 0)
        if held:
            message = f"{message} ({held} more since the last such line)"
        # one call site per severity: rclpy's logger refuses a second severity from one line (ValueError)
        if error:
            self.logger.error(message)
        else:
            self.logger.warning(message)
        return True

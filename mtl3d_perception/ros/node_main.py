"""The ``perception_node`` executable: :func:`mtl3d_perception.ros.node.main` behind a guard for its first seconds.

Importing the node (torch, rclpy, the model code) takes 1-3 s before ``rclpy.init`` installs rclpy's signal
handlers. A Ctrl-C in that window raised KeyboardInterrupt with a traceback from the imports (exit 130), and a
SIGTERM killed the process (exit 143). Here both are a requested shutdown from the first instruction: exit 0 and no
traceback, as ``node.main`` promises for the rest of the start.
"""

from __future__ import annotations

import signal
import sys


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: list[str] | None = None) -> int:
    """Import the node, then run :func:`mtl3d_perception.ros.node.main` (its return value: 0 on a requested shutdown,
    1 when the node cannot start)."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        from mtl3d_perception.ros.node import main as node_main
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)  # rclpy.init installs its own
    return node_main(args)


if __name__ == "__main__":
    sys.exit(main())

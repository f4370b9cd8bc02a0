"""The ``perception_node`` executable: :func:`mtl3d_perception.ros.node.main` behind a guard for its first seconds.

Importing the node (torch, rclpy, the model code) takes 1-3 s before ``rclpy.init`` installs rclpy's signal
handlers. A Ctrl-C in that window raised KeyboardInterrupt with a traceback from the imports (exit 130), and a
SIGTERM killed the process (exit 143). Here both are a requested shutdown from the first instruction: exit 0 and no
traceback, as ``node.main`` promises for the rest of the start. The request is also remembered, so a KeyboardInterrupt
that some library's import swallows still stops the start (a loaded CI run saw the node start after Ctrl-C).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

_shutdown_requested = False


def _terminate(signum: int, frame: object) -> None:
    global _shutdown_requested
    _shutdown_requested = True  # remembered: a library's bare ``except`` during the imports may swallow the raise
    raise KeyboardInterrupt


def usage() -> str:
    """What ``--help`` prints before the parameters: the command line, the topics, and where the parameters follow."""
    from mtl3d_perception import topics
    from mtl3d_perception.resources import shipped_file

    outputs = "\n".join(f"  ~/{name} ({kind.replace('/msg/', '/')})" for name, (kind, _) in topics.OUTPUTS.items())
    return f"""usage: perception_node [-h] [--ros-args [-p NAME:=VALUE] [--params-file FILE] [-r FROM:=TO] ...]
       (built with colcon: ros2 run mtl3d_perception perception_node ...)

3D-aware semantic segmentation, metric depth, surface normals and a labelled point cloud from one camera and TF
(README.md). Subscribes to the image_topic and camera_info_topic parameters, /tf and /tf_static; publishes
{topics.DIAGNOSTICS_TOPIC} and, in the node's private namespace (~ = /{topics.NODE_NAME} by default):
{outputs}
Its parameters, as a --params-file with their defaults (the shipped copy: {shipped_file("config", "perception.yaml")}):
"""


def wants_help(args: list[str]) -> bool:
    """Whether ``args`` (argv with the program name first) ask for ``-h``/``--help`` before any ``--ros-args``: a ROS
    node ignores arguments it does not know, so without this ``--help`` would start the node."""
    user_args = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    return "-h" in user_args or "--help" in user_args


def main(args: list[str] | None = None) -> int:
    """The executable: :func:`run`, then SIGINT and SIGTERM ignored, as the process only exits from here on. A second
    Ctrl-C (``ros2 launch`` sends its own after the terminal's) or a SIGTERM during the interpreter's and torch's
    teardown killed it (exit -2 / -15) or raised in torch's atexit callback (a node trial: 3 of 4 runs)."""
    code = run(args)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    return code


def log_further_signals(logger: Any) -> None:
    """From the start of the node's shutdown on, SIGINT and SIGTERM are logged instead of raised (``node.main``'s
    ``on_shutdown``): raised inside ``destroy_node`` (the worker's join) one left the model loaded and rclpy up, with
    a traceback and an abort (a node trial: 5 of 5 double Ctrl-C while frames streamed). Kept until the process exits
    (:func:`main`), so only the executable installs it: in a process that goes on, it would replace rclpy's handlers."""
    def again(signum: int, frame: object) -> None:
        logger.info(f"{signal.Signals(signum).name} received while shutting down; the inference thread is given up to "
                    "30 s to finish its frame")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, again)


def run(args: list[str] | None = None) -> int:
    """Import the node, then run :func:`mtl3d_perception.ros.node.main` (its return value: 0 on a requested shutdown,
    1 when the node cannot start). With ``-h``/``--help`` (:func:`wants_help`): print the usage and the parameters
    (``runtime.config.yaml_text``) and return 0 without starting the node."""
    if wants_help(list(sys.argv if args is None else args)):
        from mtl3d_perception.runtime.config import yaml_text

        print(usage() + yaml_text(), end="")
        return 0
    # SIGINT first: a test (and a user) that sees the SIGTERM handler in place may rely on both
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        from mtl3d_perception.ros.node import main as node_main
    except KeyboardInterrupt:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # rclpy.init installs its own
    if _shutdown_requested:  # a signal whose KeyboardInterrupt an import swallowed (CI: the node started regardless)
        return 0
    return node_main(args, on_shutdown=log_further_signals)


if __name__ == "__main__":
    sys.exit(main())

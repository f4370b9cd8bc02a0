"""``mtl3d replay``: run the node's runtime over a rosbag2 (.mcap or .db3) without ROS, and evaluate it.

The same runtime as the node (``runtime.driver.FrameDriver``, settings from ``runtime.config.RuntimeConfig``),
driven by bag time instead of an executor: image (``sensor_msgs/Image``, or ``CompressedImage`` decoded as
image_transport's republisher would) + camera_info through the approximate-time synchroniser
(``runtime.sync``), ``/tf`` + ``/tf_static`` into a tf2_ros Buffer (the compat one) as the node's listener feeds
its own, each frame waiting for its pose as long as the bag can deliver it (``runtime.pose_wait``, then
single-view), ``PerceptionPipeline`` (history pairing, streaming model) and the node's output topics. Unlike the
node, which drops stale frames when inference is slower than the camera (``newest``), replay processes every
synchronised frame in order (``in_order``: the offline equivalent of an infinitely fast node), so runs are
deterministic; ``test/test_runtime_parity.py`` checks both give equal products.

Writes into ``--out DIR``:

- ``output.mcap``: the inputs, ground truth, TF, every output topic (``/<node>/depth`` ... ``/<node>/points``,
  ``/diagnostics``) with the input image's stamp and frame id, and the offered QoS of each topic — a single
  self-describing MCAP file that Foxglove opens and ``ros2 bag play`` plays; ``metadata.yaml`` beside it makes
  ``DIR`` a rosbag2 directory as well;
- ``metrics.json``, ``report.md``, ``montage.png``, ``depth_error.png``, ``latency.png``
  (see :mod:`mtl3d_perception.replay.report`).

Modules: the options :mod:`~mtl3d_perception.replay.options` (the node's settings plus replay's own), the command
line :mod:`~mtl3d_perception.replay.cli`, the loop :mod:`~mtl3d_perception.replay.runner`, the output bag
:mod:`~mtl3d_perception.replay.output`, ground truth matching :mod:`~mtl3d_perception.replay.evaluation`, and
metrics, report and pictures :mod:`~mtl3d_perception.replay.report`.

Topics, their message types and the output folder are checked before the model is loaded (errors list the
bag's topics with their types). Output is written as frames are processed and the bag writer is closed in every
case, so a corrupt bag keeps everything up to the bad message (and the command then fails, naming it); a replay
that processes no frame at all also fails, saying why, after writing its report.

Example::

    mtl3d replay demo_out/bag --out /tmp/replay --compare-single-view
"""

from mtl3d_perception.replay.cli import add_arguments, options_from_args, print_summary, run
from mtl3d_perception.replay.options import ReplayOptions
from mtl3d_perception.replay.output import OUTPUT_BAG
from mtl3d_perception.replay.runner import check_inputs, replay_bag

__all__ = ["OUTPUT_BAG", "ReplayOptions", "add_arguments", "check_inputs", "options_from_args", "print_summary",
           "replay_bag", "run"]

"""Data: procedural synthetic scenes with exact ground truth, posed RGB-D sequence folders (the
interchange format of DESIGN §5) and rosbag2 reading and writing with ``rosbags``.

``SyntheticScene`` renders rgb, depth, normals, semantic labels and boundaries for any pose and size;
``render_sequence`` / ``iter_sequence`` give a scene's camera path as frames; ``PosedSequence`` reads a
sequence folder lazily and ``write_sequence`` writes one; ``write_bag`` / ``read_bag`` /
``read_bag_sequence`` turn sequences into bags with the project's topics and back; ``BagFrames`` and
the other readers of :mod:`.sources` read posed frames from bags, TUM RGB-D, ScanNet and 7-Scenes layouts.
"""

from mtl3d_perception.data.bag import BagError, bag_topics, read_bag, write_bag
from mtl3d_perception.data.sequence import PosedSequence, SequenceError, SequenceFrame, write_sequence
from mtl3d_perception.data.sources.bag import BagFrames, read_bag_sequence
from mtl3d_perception.data.synthetic import SyntheticScene, default_intrinsics, iter_sequence, render_sequence

__all__ = [
    "BagError",
    "BagFrames",
    "PosedSequence",
    "SequenceError",
    "SequenceFrame",
    "SyntheticScene",
    "bag_topics",
    "default_intrinsics",
    "iter_sequence",
    "read_bag",
    "read_bag_sequence",
    "render_sequence",
    "write_bag",
    "write_sequence",
]

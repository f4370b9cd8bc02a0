"""Data: procedural synthetic scenes with exact ground truth (photo-textured where
``../shared/data/textures`` is there), posed RGB-D sequence folders (the interchange format of
DESIGN §5) and rosbag2 reading and writing with ``rosbags``.

``SyntheticScene`` renders rgb, depth, normals, semantic labels and boundaries for any pose and size;
``render_sequence`` / ``iter_sequence`` give a scene's camera path as frames; ``PosedSequence`` reads a
sequence folder lazily and ``write_sequence`` writes one; ``write_bag`` / ``read_bag`` /
``read_bag_sequence`` turn sequences into bags with the project's topics and back.
"""

from mtl3d_perception.data.bag import BagError, bag_topics, read_bag, read_bag_sequence, write_bag
from mtl3d_perception.data.sequence import PosedSequence, SequenceError, SequenceFrame, write_sequence
from mtl3d_perception.data.synthetic import SyntheticScene, default_intrinsics, iter_sequence, render_sequence

__all__ = [
    "BagError",
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

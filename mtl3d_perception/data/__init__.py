"""Data: procedural synthetic scenes with exact ground truth (photo-textured where
``../shared/data/textures`` is there), posed RGB-D sequence folders (the interchange format of
DESIGN §5) and rosbag2 reading and writing with ``rosbags``.

``SyntheticScene`` renders rgb, depth, normals, semantic labels and boundaries for any pose and size;
``iter_sequence`` gives a scene's camera path as frames; ``PosedSequence`` reads a
sequence folder lazily and ``write_sequence`` writes one; ``write_bag`` / ``read_bag`` /
``read_bag_sequence`` (in :mod:`.sources.bag`) turn sequences into bags with the project's topics and back;
:mod:`.sources` reads posed frames from bags, TUM RGB-D, ScanNet and 7-Scenes layouts.

Nothing is imported here (import the modules), so reading a bag does not load the scene renderer.
"""

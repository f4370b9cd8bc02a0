"""The README's "Python (no ROS)" block runs as written, on frames of a synthetic scene: the shipped model loads by
name, the second frame pairs with the first, and every product the block names has the shape it says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mtl3d_perception.data.synthetic import iter_sequence

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_block() -> str:
    match = re.search(r"<!-- python-api.*?-->\n```python\n(.*?)```\n<!-- /python-api -->", README.read_text(), re.S)
    assert match, "README.md has no python-api block"
    return match.group(1)


def test_the_readme_python_example_runs(capsys):
    frames = [(f.rgb, f.K, f.T_world_cam) for f in iter_sequence(3, 3, (320, 240), speed=1.5)]
    scope = {"frames": frames}
    exec(compile(python_api_block(), str(README), "exec"), scope)
    products = scope["products"]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2"]
    assert not products.single_view and lines[2].split()[1] == products.pair_reason
    w, h = products.size
    assert scope["depth"].shape == (h, w) and scope["depth"].dtype == np.float32
    assert scope["confidence"].shape == (h, w) and 0.0 <= float(np.nanmin(scope["confidence"])) <= 1.0
    assert scope["labels"].shape == (h, w) and int(scope["labels"].max()) < len(products.classes)
    assert scope["normals"].shape == (h, w, 3)
    cloud = scope["cloud"]
    assert cloud.points.shape[1] == 3 and len(cloud.points) == len(cloud.labels) > 0


def test_a_sequence_folder_feeds_the_pipeline_and_reset_starts_the_next(tmp_path):
    """A Python-API trial wrote its own glue from PosedSequence to Frame (float seconds to integer ns) and found that
    a second sequence through one pipeline paired with the first: ``runtime_frame()`` is the glue, ``reset()``
    starts afresh."""
    from mtl3d_perception.data.sequence import PosedSequence, write_sequence
    from mtl3d_perception.runtime import PerceptionPipeline, load_model

    seq = PosedSequence(write_sequence(tmp_path / "seq", iter_sequence(3, 3, (160, 120), speed=1.5)))
    frames = [f.runtime_frame() for f in seq]
    assert frames[1].stamp_ns - frames[0].stamp_ns == round((seq[1].stamp - seq[0].stamp) * 1e9)
    assert isinstance(frames[0].stamp_ns, int) and frames[0].frame_id == "camera"
    np.testing.assert_array_equal(frames[2].T_world_cam, seq[2].T_world_cam)
    pipeline = PerceptionPipeline(load_model("default")[0])
    assert [pipeline.process(f).single_view for f in frames] == [True, False, False]
    pipeline.reset()
    assert pipeline.process(frames[2]).single_view  # nothing to pair with: the history is the next sequence's

"""Launch, parameter and RViz files, checked statically (launch/launch_ros/rviz2 cannot be installed here).

They parse; every parameter they set is declared by the node; every topic they show is one the node
publishes or subscribes; the executables they start exist; the files are installed by setup.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from mtl3d_perception import topics

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
EXTRA_PARAMS = {"use_sim_time"}  # declared by rclpy itself


@pytest.fixture(scope="module")
def node_parameters() -> set[str]:
    pytest.importorskip("rclpy")
    from mtl3d_perception.ros.node import PARAMETERS

    return set(PARAMETERS)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _value(node: ast.AST, tree: ast.Module):
    """A literal, or a module-level constant assigned a literal (``PACKAGE = "..."``)."""
    if isinstance(node, ast.Name):
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == node.id for t in stmt.targets):
                return ast.literal_eval(stmt.value)
    return ast.literal_eval(node)


def _declared_arguments(tree: ast.AST) -> set[str]:
    return {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}


def test_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} == {"perception.launch.py", "replay.launch.py"}


@pytest.mark.ros
@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_real_parameters_and_arguments(path, node_parameters):
    tree = ast.parse(path.read_text(), filename=str(path))
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared = _declared_arguments(tree)
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used <= declared, f"undeclared launch arguments {used - declared}"
    assert declared <= used, f"launch arguments declared but never used: {declared - used}"
    ours = [c for c in _calls(tree, "Node") if _value(_kw(c, "executable"), tree) == "perception_node"]
    assert len(ours) == 1
    node = ours[0]
    assert _value(_kw(node, "package"), tree) == "mtl3d_perception"
    assert _value(_kw(node, "name"), tree) == topics.NODE_NAME
    dicts = [d for d in _kw(node, "parameters").elts if isinstance(d, ast.Dict)]
    keys = {ast.literal_eval(k) for d in dicts for k in d.keys}
    assert keys and keys <= node_parameters | EXTRA_PARAMS, f"unknown parameters {keys - node_parameters - EXTRA_PARAMS}"
    assert "use_sim_time" in keys
    assert {"rviz", "model_path", "params_file"} <= declared


def test_setup_installs_launch_and_config():
    setup = (ROOT / "setup.py").read_text()
    assert '"launch/*.launch.py"' in setup and '"config/*.rviz"' in setup and '"config/*.yaml"' in setup
    assert "perception_node = mtl3d_perception.ros.node:main" in setup


@pytest.mark.ros
def test_params_file_matches_node(node_parameters):
    from mtl3d_perception.ros.node import PARAMETERS

    data = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    params = data[topics.NODE_NAME]["ros__parameters"]
    assert set(params) == node_parameters
    for name, value in params.items():
        default = PARAMETERS[name][0]
        assert type(value) is type(default), f"{name}: {value!r} has another type than the declared {default!r}"


def test_rviz_config_topics_and_qos():
    cfg = yaml.safe_load((ROOT / "config" / "mtl3d.rviz").read_text())
    manager = cfg["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == topics.WORLD_FRAME
    displays = manager["Displays"]
    classes = {d["Class"] for d in displays}
    assert {"rviz_default_plugins/Image", "rviz_default_plugins/PointCloud2", "rviz_default_plugins/TF"} <= classes
    known = {topics.output_topic(n) for n in topics.OUTPUTS} | {topics.IMAGE_TOPIC, topics.CAMERA_INFO_TOPIC}
    for display in displays:
        if "Topic" not in display:
            continue
        topic = display["Topic"]["Value"]
        assert topic in known, f"{display['Name']}: {topic} is not a topic of the node"
        if topic != topics.IMAGE_TOPIC:  # our publishers are reliable; a reliable subscription matches them
            assert display["Topic"]["Reliability Policy"] == "Reliable"
    cloud = next(d for d in displays if d["Class"] == "rviz_default_plugins/PointCloud2")
    assert cloud["Topic"]["Value"] == topics.output_topic("points") and cloud["Color Transformer"] == "RGB8"

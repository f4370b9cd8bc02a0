"""Stand-ins for the parts of ROS 2 ``launch`` / ``launch_ros`` the launch files use (neither is installable here).

They follow the Jazzy semantics the launch files rely on: command-line arguments are launch configurations from
the start; ``DeclareLaunchArgument`` sets its default only where no configuration of its name is set (an argument
without a default must be given); ``OpaqueFunction`` calls its function with the context once the arguments before
it are declared and launches the actions it returns; ``IncludeLaunchDescription`` sets its ``launch_arguments`` as
launch configurations (``SetLaunchConfiguration``, unscoped: the included file acts as if written in place) and then
visits the included description, depth first, before the includer's next entity (launch's
``IncludeLaunchDescription.execute`` and ``LaunchService`` visiting order); ``ros2 launch`` accepts the arguments
declared by the file and by the files it includes (``LaunchDescription.get_launch_arguments``); a Node's
``parameters`` list is applied in order, a later entry overriding an earlier one (launch_ros
``Node._perform_substitutions`` / ``evaluate_parameters``; YAML files give ``node_name: ros__parameters``).
:func:`run_launch` plays a launch file's description with given arguments and returns the processes it would start.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtl3d_perception.runtime.params import _section_matches


class Substitution:
    def perform(self, context: Context) -> str:
        raise NotImplementedError


@dataclass
class FindPackageShare(Substitution):
    package: str

    def perform(self, context: Context) -> str:
        return str(context.share[self.package])


@dataclass
class PathJoinSubstitution(Substitution):
    parts: list

    def perform(self, context: Context) -> str:
        return str(Path(*(perform(p, context) for p in self.parts)))


@dataclass
class LaunchConfiguration(Substitution):
    name: str

    def perform(self, context: Context) -> str:
        return context.launch_configurations[self.name]


def perform(value: Any, context: Context) -> Any:
    return value.perform(context) if isinstance(value, Substitution) else value


@dataclass
class ParameterValue:
    value: Any
    value_type: type | None = None

    def evaluate(self, context: Context) -> Any:
        value = perform(self.value, context)
        return self.value_type(value) if self.value_type is not None else yaml.safe_load(value)


@dataclass
class DeclareLaunchArgument:
    name: str
    default_value: Any = None
    description: str = ""


@dataclass
class OpaqueFunction:
    function: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Shutdown:
    reason: str = ""


class _Process:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.on_exit = kwargs.get("on_exit")


class Node(_Process):
    def parameter_values(self, context: Context) -> dict[str, Any]:
        """The node's final parameters: the ``parameters`` list applied in order (files and dicts)."""
        values: dict[str, Any] = {}
        for entry in self.kwargs.get("parameters", []):
            if isinstance(entry, dict):
                values.update({k: v.evaluate(context) if isinstance(v, ParameterValue) else perform(v, context)
                               for k, v in entry.items()})
            else:
                data = yaml.safe_load(Path(perform(entry, context)).read_text())
                values.update(next(section["ros__parameters"] for key, section in data.items()
                                   if _section_matches(key, "/" + self.kwargs["name"])))  # as rcl applies a file
        return values


class ExecuteProcess(_Process):
    def command(self, context: Context) -> list[str]:
        """The command line as started: ``cmd`` with its substitutions performed."""
        return [perform(part, context) for part in self.kwargs["cmd"]]


@dataclass
class LaunchDescription:
    entities: list


@dataclass
class PythonLaunchDescriptionSource:
    launch_file_path: Any

    def get_launch_description(self, context: Context) -> LaunchDescription:
        """Import the launch file (with the stand-ins in place) and return its description."""
        return _import(Path(perform(self.launch_file_path, context))).generate_launch_description()

    def try_get_launch_description_without_context(self, share: dict[str, Path]) -> LaunchDescription:
        return self.get_launch_description(Context({}, share))


@dataclass
class IncludeLaunchDescription:
    launch_description_source: PythonLaunchDescriptionSource
    launch_arguments: Any = ()

    def __post_init__(self) -> None:
        self.launch_arguments = list(self.launch_arguments)  # launch keeps the pairs (``dict.items()`` is common)


@dataclass
class Context:
    launch_configurations: dict[str, str]
    share: dict[str, Path]


def modules() -> dict[str, types.ModuleType]:
    """``sys.modules`` entries for ``launch`` and ``launch_ros`` made of the stand-ins."""
    made = {}
    for name, attrs in {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "OpaqueFunction": OpaqueFunction,
                           "Shutdown": Shutdown, "ExecuteProcess": ExecuteProcess,
                           "IncludeLaunchDescription": IncludeLaunchDescription},
        "launch.launch_description_sources": {"PythonLaunchDescriptionSource": PythonLaunchDescriptionSource},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration,
                                 "PathJoinSubstitution": PathJoinSubstitution},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
        "launch_ros.parameter_descriptions": {"ParameterValue": ParameterValue},
        "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
    }.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        made[name] = module
    return made


def load(path: Path, monkeypatch: Any) -> types.ModuleType:
    """Import a launch file with the stand-ins in place of launch/launch_ros."""
    for name, module in modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    return _import(path)


def _import(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def declared_arguments(description: LaunchDescription, share: dict[str, Path]) -> set[str]:
    """The arguments ``ros2 launch`` accepts: declared by the description and by the descriptions it includes."""
    names = set()
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            names.add(entity.name)
        elif isinstance(entity, IncludeLaunchDescription):
            source = entity.launch_description_source
            names |= declared_arguments(source.try_get_launch_description_without_context(share), share)
    return names


def run_launch(path: Path, monkeypatch: Any, share: dict[str, Path], **arguments: str) -> tuple[list, Context]:
    """``ros2 launch PKG FILE name:=value ...``: the processes started, and the context they were started in.

    Raises:
        RuntimeError: an argument without a default was not given, or one given is not declared (as launch does).
        Whatever the launch file's functions raise (then nothing has been started).
    """
    description = load(path, monkeypatch).generate_launch_description()
    undeclared = set(arguments) - declared_arguments(description, share)
    if undeclared:
        raise RuntimeError(f"arguments not declared: {sorted(undeclared)}")
    context = Context(dict(arguments), share)
    started: list = []
    _visit(description.entities, context, started)
    return started, context


def _visit(entities: list, context: Context, started: list) -> None:
    """Visit entities in order, each one's sub-entities before the next (launch's depth-first visiting)."""
    for entity in entities:
        if isinstance(entity, DeclareLaunchArgument):
            if entity.name in context.launch_configurations:
                continue  # given on the command line or by an includer
            if entity.default_value is None:
                raise RuntimeError(f"Required launch argument {entity.name!r} was not provided")
            context.launch_configurations[entity.name] = perform(entity.default_value, context)
        elif isinstance(entity, OpaqueFunction):
            _visit(list(entity.function(context, *entity.args, **entity.kwargs) or []), context, started)
        elif isinstance(entity, IncludeLaunchDescription):
            for name, value in entity.launch_arguments:
                context.launch_configurations[perform(name, context)] = perform(value, context)
            _visit(entity.launch_description_source.get_launch_description(context).entities, context, started)
        elif isinstance(entity, LaunchDescription):
            _visit(entity.entities, context, started)
        else:
            started.append(entity)

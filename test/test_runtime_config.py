"""RuntimeConfig owns every runtime default: the node's parameters, replay's options and config/perception.yaml
all come from it (issue 14)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from mtl3d_perception import topics
from mtl3d_perception.runtime.config import (
    PAIRING_SETTINGS,
    RuntimeConfig,
    config_from_parameters,
    parameter_specs,
    yaml_text,
)
from mtl3d_perception.runtime.history import PairingConfig
from mtl3d_perception.typed_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_perception_yaml_is_generated_from_the_config():
    shipped = (ROOT / "config" / "perception.yaml").read_text()
    assert shipped == yaml_text(), "config/perception.yaml is stale: regenerate it (see its header)"
    params = yaml.safe_load(shipped)[topics.PARAMS_SECTION]["ros__parameters"]
    assert params == {name: spec.default for name, spec in parameter_specs("node").items()}
    assert config_from_parameters(params) == RuntimeConfig()


def test_all_pairing_fields_are_parameters():
    assert set(PAIRING_SETTINGS) == {f.name for f in dataclasses.fields(PairingConfig)}
    node = parameter_specs("node")
    assert set(PAIRING_SETTINGS) <= set(node)
    config = config_from_parameters({"history_size": 3, "max_speed_mps": 2.0, "min_rotation_deg": 1.0})
    assert config.pairing == PairingConfig(history_size=3, max_speed_mps=2.0, min_rotation_deg=1.0)


def test_parameters_are_typed_and_checked():
    with pytest.raises(ConfigError, match="unknown runtime setting 'tf_timeout'"):
        config_from_parameters({"tf_timeout": 1.0})
    with pytest.raises(ConfigError, match="'point_stride' expects int"):
        config_from_parameters({"point_stride": "four"})
    with pytest.raises(ValueError, match=r"point_stride must be in \[1, 64\], got 0"):
        config_from_parameters({"point_stride": 0})
    with pytest.raises(ValueError, match="cloud_frame must be one of camera, world"):
        RuntimeConfig(cloud_frame="map")
    with pytest.raises(ValueError, match="world_frame must not be empty"):
        RuntimeConfig().replace(world_frame="")
    with pytest.raises(ValueError, match=r"history_size must be in \[1, 256\], got 0"):
        RuntimeConfig().replace(history_size=0)
    assert config_from_parameters({"tf_timeout_s": 1}).tf_timeout_s == 1.0  # ints are taken for floats


def test_every_advertised_range_is_accepted_at_both_ends():
    """A live-tuning trial: describe_parameters advertised max_pair_age_s, max_speed_mps and max_angular_speed_dps
    from 0 (rqt_reconfigure's slider bottom), which the node refused (> 0). Every numeric range's ends are accepted,
    and just outside them refused."""
    checked = 0
    for name, spec in parameter_specs().items():
        if not (isinstance(spec.constraint, tuple) and len(spec.constraint) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in spec.constraint)):
            continue
        lo, hi = spec.constraint
        for value in (lo, hi):
            RuntimeConfig().replace(**{name: spec.type(value)})
        step = 1 if spec.type is int else 1e-6 * max(1.0, abs(hi))
        for value in (lo - step, hi + step):
            with pytest.raises(ValueError, match=name):
                RuntimeConfig().replace(**{name: spec.type(value)})
        checked += 1
    assert checked >= 10


def test_outputs_follow_publish_flags():
    assert RuntimeConfig().outputs() == {"depth", "semantic", "normals", "boundary", "points"}
    assert RuntimeConfig().with_outputs({"points"}).outputs() == {"points", "depth"}  # the cloud needs depth
    assert RuntimeConfig().with_outputs(set()).outputs() == frozenset()
    with pytest.raises(ValueError, match="unknown outputs"):
        RuntimeConfig().with_outputs({"edges"})


def test_replay_options_are_generated_from_the_config():
    import argparse

    from mtl3d_perception.replay import ReplayOptions, add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["bag", "--min-baseline-m", "0.2", "--history-size", "4", "--tf-timeout", "0.5",
                              "--cloud-frame", "world", "--limit", "3", "--no-progress"])
    options = options_from_args(args, "cpu")
    assert isinstance(options, ReplayOptions) and options.device == "cpu"
    assert options.pairing == PairingConfig(min_baseline_m=0.2, history_size=4)
    assert (options.tf_timeout_s, options.cloud_frame, options.limit, options.progress) == (0.5, "world", 3, False)
    defaults = options_from_args(parser.parse_args(["bag"]))
    assert defaults == ReplayOptions()  # every default is RuntimeConfig's (or replay's own)
    with pytest.raises(SystemExit):
        parser.parse_args(["bag", "--output-resolution", "huge"])
    replay_only = {"image_transport", "publish_depth"} & set(parameter_specs(ReplayOptions, "replay"))
    assert not replay_only  # node-only settings are not replay options


def _launch_parameter_keys(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return keys


@pytest.mark.parametrize("path", sorted((ROOT / "launch").glob("*.launch.py")), ids=lambda p: p.name)
def test_launch_files_set_only_runtime_settings(path):
    keys = _launch_parameter_keys(path) - {"use_sim_time"}
    assert keys <= set(parameter_specs("node")), f"{path.name} sets unknown parameters {keys - set(parameter_specs('node'))}"

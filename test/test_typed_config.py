"""typed_config.from_dict: the one dict -> typed dataclass checker behind the model and training configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mtl3d_perception.model.config import ConfigError as ModelConfigError
from mtl3d_perception.typed_config import ConfigError, from_dict, parse_yaml


@dataclass
class Inner:
    n: int = 1
    x: float = 0.5

    def __post_init__(self) -> None:
        if self.n < 0:
            msg = f"n must be >= 0, got {self.n}"
            raise ValueError(msg)


@dataclass
class Outer:
    name: str = "a"
    flag: bool = False
    size: tuple[int, int] = (8, 8)
    names: tuple[str, ...] = ()
    maybe: tuple[float, float] | None = None
    either: int | float = 0
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    anything: Any = None


def test_builds_nested_and_converts():
    cfg = from_dict(Outer, {
        "size": [4, 2], "names": ["p", "q"], "maybe": [1, 2], "either": 0.25, "inner": {"x": 1},
        "items": [{"n": 3}, Inner(n=4)], "weights": {"a": 2}, "extra": {"k": [1]}, "anything": {"z": 1},
    })
    assert cfg.size == (4, 2) and cfg.names == ("p", "q") and cfg.maybe == (1.0, 2.0)
    assert cfg.either == 0.25 and cfg.inner == Inner(x=1.0) and isinstance(cfg.inner.x, float)
    assert cfg.items == [Inner(n=3), Inner(n=4)] and cfg.weights == {"a": 2.0} and cfg.anything == {"z": 1}
    assert from_dict(Outer, {"maybe": None, "either": 3}).either == 3
    assert from_dict(Outer, {"inner": {"x": "3e-4"}}).inner.x == 3e-4  # YAML 1.1 reads 3e-4 as a string
    assert from_dict(Outer, {}) == Outer()


@pytest.mark.parametrize(("values", "pattern"), [
    ({"nope": 1}, r"unknown config key 'nope'; known keys: anything, either"),
    ({"inner": {"m": 1}}, r"unknown config key 'inner\.m'; known keys in 'inner': n, x"),
    ({"items": [{}, {"n": "2"}]}, r"'items\.1\.n' expects int, got '2'"),
    ({"flag": 1}, r"'flag' expects bool"),
    ({"inner": {"n": True}}, r"'inner\.n' expects int"),
    ({"inner": {"x": "fast"}}, r"'inner\.x' expects float"),
    ({"name": 3}, r"'name' expects str"),
    ({"size": [1, 2, 3]}, r"'size' expects tuple\[int, int\]"),
    ({"either": "x"}, r"'either' expects int \| float"),
    ({"weights": {"a": "b"}}, r"'weights\.a' expects float"),
    ({"inner": 3}, r"'inner' expects Inner"),
    ({"inner": {"n": -1}}, r"config section 'inner': n must be >= 0"),
])
def test_errors_name_the_full_key(values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict(Outer, values)


def test_top_level_and_labels():
    with pytest.raises(ConfigError, match="a model config must be a mapping, got list"):
        from_dict(Outer, [1], what="model config")
    with pytest.raises(ConfigError, match="unknown model config key 'z'"):
        from_dict(Outer, {"z": 1}, what="model config")
    assert ModelConfigError is ConfigError and issubclass(ConfigError, ValueError)


def test_yaml_keeps_on_off_yes_no_as_strings():
    """YAML 1.2 booleans: `amp: off` (a documented value) must not become False, as PyYAML's 1.1 reads it."""
    assert parse_yaml("amp: off\nflag: true\nother: False\nanswer: yes\nlr: 3e-4") == {
        "amp": "off", "flag": True, "other": False, "answer": "yes", "lr": "3e-4",
    }  # fmt: skip


def test_train_override_amp_off():
    from mtl3d_perception.train.config import load_config

    root = Path(__file__).resolve().parents[1]
    assert load_config(root / "config/train/smoke.yaml", ["amp=off", "device=cpu"]).amp == "off"


def test_an_installed_package_says_where_the_training_configs_are(tmp_path, monkeypatch):
    """An install trial: `mtl3d train --config config/train/finetune.yaml` from an installed package said only
    'training config not found'; the install ships no training configs, and the message says where they are."""
    from mtl3d_perception.train import config as train_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as checkout:
        train_config.load_config("config/train/finetune.yaml")
    assert "installed package" not in str(checkout.value)  # in a checkout the path was simply wrong
    monkeypatch.setattr(train_config, "checkout_root", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"not found: config/train/finetune.yaml \(an installed package ships "
                                                r"no training configs: they are in the source checkout"):
        train_config.load_config("config/train/finetune.yaml")
    with pytest.raises(FileNotFoundError) as own:
        train_config.load_config("my_robot.yaml")  # the user's own file: no hint about ours
    assert "installed package" not in str(own.value)

"""The name tables behind encoders, refiners and loss terms."""

from __future__ import annotations

import pytest

from mtl3d_perception.model.config import ConfigError
from mtl3d_perception.model.encoders import ENCODERS
from mtl3d_perception.model.heads import REFINERS
from mtl3d_perception.registry import Registry
from mtl3d_perception.train.loss_base import LOSSES


def test_register_get_and_names():
    reg: Registry = Registry("widget")

    @reg.register("b")
    def make_b():
        return "b"

    reg.register("a")(str)
    assert reg.names() == ["a", "b"]
    assert "a" in reg and "c" not in reg
    assert reg.get("b") is make_b
    reg.register("b")(make_b)  # registering the same object again is a no-op


def test_unknown_and_conflicting_names_are_reported():
    reg: Registry = Registry("widget", ConfigError)
    with pytest.raises(ConfigError, match="unknown widget 'x'; registered: none"):
        reg.get("x")
    reg.register("x")(int)
    with pytest.raises(ValueError, match="widget 'x' is already registered by int"):
        reg.register("x")(float)
    with pytest.raises(ConfigError, match="registered: x"):
        reg.get("y")


def test_project_tables_hold_the_shipped_parts():
    # the package __init__s import the modules holding shipped parts, so they are registered already
    assert {"tiny_cnn", "efficientnet_lite0", "vit_small"} <= set(ENCODERS.names())
    assert "pap" in REFINERS
    assert {"cross_task", "cross_view", "pap_pairwise"} <= set(LOSSES.names())

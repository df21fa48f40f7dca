"""The typed config loader every stage uses: what a user writes in YAML or on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from koch_common.config import ConfigError, load_config


@dataclass
class Optim:
    lr: float = 1.0e-3
    steps: int = 10


@dataclass
class Run:
    name: str = "run"
    optim: Optim = field(default_factory=Optim)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_exponent_without_a_dot_is_a_float_not_a_string(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) reads 1e-4 as the string "1e-4"; users write it that way all the time.
    config = load_config(Run, _write(tmp_path, "optim:\n  lr: 1e-4\n"), ["optim.steps=20"])
    assert config.optim.lr == pytest.approx(1e-4) and isinstance(config.optim.lr, float)
    assert config.optim.steps == 20


def test_overrides_win_and_bad_values_name_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: a\n")
    assert load_config(Run, path, ["optim.lr=3e-4"]).optim.lr == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got 'fast'"):
        load_config(Run, path, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lr2'\]"):
        load_config(Run, path, ["optim.lr2=1"])
    with pytest.raises(ConfigError, match=r"optim\.steps: expected int"):
        load_config(Run, path, ["optim.steps=many"])


def test_booleans_are_not_integers_and_numbers_must_be_finite(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: a\n")
    with pytest.raises(ConfigError, match=r"optim\.steps: expected int, got the boolean True"):
        load_config(Run, path, ["optim.steps=true"])  # would have trained one step
    for value in (".nan", ".inf", "-.inf", "nan"):
        with pytest.raises(ConfigError, match=r"optim\.lr: .* is not a finite number"):
            load_config(Run, path, [f"optim.lr={value}"])
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got the boolean False"):
        load_config(Run, path, ["optim.lr=false"])


def _koch_yaml(tmp_path: Path, joint: int, **changes: object) -> Path:
    """config/koch.yaml with `changes` made to the follower's joint number `joint` (and `safety.*` keys)."""
    import yaml

    from koch_common.config import read_yaml

    data = read_yaml("koch.yaml")
    for key, value in changes.items():
        if key.startswith("safety_"):
            data.setdefault("safety", {})[key.removeprefix("safety_")] = value
        else:
            data["follower"]["joints"][joint][key] = value
    path = tmp_path / "koch.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"max_velocity": float("nan")}, r"koch\.yaml\.follower\.joints\[1\]\.max_velocity: nan is not a finite number"),
    ({"upper": float("nan")}, r"koch\.yaml\.follower\.joints\[1\]\.upper: nan is not a finite number"),
    ({"max_velocity": -1.0}, r"joints\[1\]: joint \w+: max_velocity -1.0 must be a positive number"),
    ({"lower": 1.0, "upper": 0.5}, r"joints\[1\]: joint \w+: limits lower 1.0 and upper 0.5 must be finite, lower <"),
    ({"safety_position_margin": -0.05}, r"koch\.yaml\.safety: position_margin -0.05 must be >= 0"),
    ({"safety_position_margin": 2.0}, r"koch\.yaml: safety\.position_margin 2.0 leaves no range for follower joint"),
    ({"safety_max_acceleration": float("nan")}, r"safety\.max_acceleration: nan is not a finite number"),
    ({"safety_max_step_from_present": 0}, r"max_step_from_present 0.0 must be a positive number"),
])
def test_robot_limits_are_checked_when_koch_yaml_loads(tmp_path: Path, changes: dict, message: str) -> None:
    # each of these would have reached SafetyLimits: a NaN switches a limit off, a negative margin widens them
    from koch_common.robot import load_koch

    with pytest.raises(ConfigError, match=message):
        load_koch(str(_koch_yaml(tmp_path, 1, **changes)))
    load_koch(str(_koch_yaml(tmp_path, 1)))  # the file itself loads


@pytest.mark.parametrize(("override", "message"), [
    ("fps=0", r"koch_sim\.yaml: fps 0 must be positive"),
    ("limits.max_dropped_fraction=1.5", r"koch_sim\.yaml\.limits: max_dropped_fraction 1.5 must be a fraction"),
    ("limits.max_gap_s=-1", r"koch_sim\.yaml\.limits: max_gap_s -1.0 must be positive"),
    ("limits.max_stale_fraction=.nan", r"koch_sim\.yaml\.limits\.max_stale_fraction: nan is not a finite number"),
    ("limits.min_frames=true", r"koch_sim\.yaml\.limits\.min_frames: expected int, got the boolean True"),
])
def test_mapping_numbers_are_checked_when_it_loads(override: str, message: str) -> None:
    from koch_common.feature_mapping import DEFAULT_MAPPING, load_mapping

    with pytest.raises(ConfigError, match=message):
        load_mapping(DEFAULT_MAPPING, [override])
    load_mapping(DEFAULT_MAPPING)


def test_a_stream_needs_a_positive_staleness_and_tolerance() -> None:
    from koch_common.feature_mapping import FeatureConfig

    with pytest.raises(ConfigError, match=r"max_staleness_s -0.1 must be positive"):
        FeatureConfig(topic="/x", type="sensor_msgs/msg/JointState", max_staleness_s=-0.1)
    with pytest.raises(ConfigError, match=r"tolerance_s 0.0 must be positive"):
        FeatureConfig(topic="/x", type="sensor_msgs/msg/JointState", tolerance_s=0.0)

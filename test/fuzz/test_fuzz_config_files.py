"""Fuzzing the YAML files the project reads: only the project's own error types may escape.

Each example takes a real file (koch.yaml, the sim mapping) and changes one to three of its values
(or deletes keys) to anything YAML can hold: NaN, infinities, booleans, huge integers, strings,
lists, mappings, null; or replaces the whole file by arbitrary text. Loading must either succeed or
raise ConfigError, whose message names the file; never a TypeError, KeyError or a YAML parser error.
`KOCH_FUZZ_EXAMPLES` sets the number of examples per file (default: the CI size below).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koch_common.config import ConfigError, config_dir
from koch_common.feature_mapping import load_mapping
from koch_common.robot import load_koch

EXAMPLES = int(os.environ.get("KOCH_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from([".nan", "-.inf", "1e400", "0x10", "yes", "", "~", "[", "{a: 1}"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=8)


def leaf_paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in the document, containers included (so whole sections get replaced too)."""
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            paths += leaf_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            paths += leaf_paths(value, (*prefix, index))
    return paths


def mutate(data: Any, path: tuple, value: Any, delete: bool) -> None:
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@st.composite
def mutated_document(draw: st.DrawFn, original: dict) -> str:
    if draw(st.integers(0, 9)) == 0:  # now and then: not the file's structure at all
        return draw(st.text(max_size=200))
    data = yaml.safe_load(yaml.safe_dump(original))
    for _ in range(draw(st.integers(1, 3))):
        paths = leaf_paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        mutate(data, path, draw(values), draw(st.booleans()))
    return yaml.safe_dump(data, allow_unicode=True)


def load_or_refuse(load: Any, text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        try:
            load(str(path))
        except ConfigError as error:
            assert str(error), "a ConfigError must say what is wrong"


KOCH_YAML = yaml.safe_load((config_dir() / "koch.yaml").read_text())
MAPPING_YAML = yaml.safe_load((config_dir() / "mapping" / "koch_sim.yaml").read_text())


@FUZZ
@given(mutated_document(KOCH_YAML))
def test_robot_yaml(text: str) -> None:
    load_or_refuse(load_koch, text, "koch.yaml")


@FUZZ
@given(mutated_document(MAPPING_YAML))
def test_mapping_yaml(text: str) -> None:
    load_or_refuse(load_mapping, text, "mapping.yaml")


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_yaml(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for load, name in ((load_koch, "koch.yaml"), (load_mapping, "mapping.yaml")):
            path = Path(tmp) / name
            path.write_bytes(data)
            with pytest.raises(ConfigError) if data.strip() else _maybe_refused():
                load(str(path))


class _maybe_refused:
    """An empty file is an empty mapping: refused for missing keys, or loaded with defaults."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: object) -> bool:
        return kind is None or issubclass(kind, ConfigError)


def calibration_document() -> dict:
    """A calibration file as `calibrate` writes it, for koch.yaml's follower."""
    arm = load_koch().follower
    return {"arm": "follower", "joints": {j.name: {"id": j.id, "zero_raw": j.zero_raw, "range_min": 1024,
                                                   "range_max": 3072} for j in arm.joints}}


@FUZZ
@given(mutated_document(calibration_document()))
def test_calibration_file(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "follower.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_koch("koch.yaml", [f"follower.calibration={path}"])
        except ConfigError as error:
            assert str(error)


CAMERAS_YAML = yaml.safe_load((config_dir() / "cameras" / "koch_real.yaml").read_text())
TRAIN_YAML = yaml.safe_load((config_dir() / "train" / "act_sim.yaml").read_text())
SIM_YAML = yaml.safe_load((config_dir() / "sim.yaml").read_text())
CAMERA_CALIBRATION = {  # what ROS's camera_calibration writes
    "image_width": 640, "image_height": 480, "camera_name": "head", "distortion_model": "plumb_bob",
    "camera_matrix": {"rows": 3, "cols": 3, "data": [600.0, 0, 320, 0, 600, 240, 0, 0, 1]},
    "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
    "rectification_matrix": {"rows": 3, "cols": 3, "data": [1.0, 0, 0, 0, 1, 0, 0, 0, 1]},
    "projection_matrix": {"rows": 3, "cols": 4, "data": [600.0, 0, 320, 0, 0, 600, 240, 0, 0, 0, 1, 0]},
}


@FUZZ
@given(mutated_document(CAMERAS_YAML))
def test_cameras_yaml(text: str) -> None:
    from koch_camera.settings import load_cameras

    load_or_refuse(load_cameras, text, "cameras.yaml")


@FUZZ
@given(mutated_document(CAMERA_CALIBRATION))
def test_camera_calibration(text: str) -> None:
    from koch_camera.settings import load_calibration

    load_or_refuse(load_calibration, text, "head_calibration.yaml")


@FUZZ
@given(mutated_document(TRAIN_YAML))
def test_train_config(text: str) -> None:
    from kuavo_train.config import load_train_config

    load_or_refuse(load_train_config, text, "train.yaml")


@FUZZ
@given(mutated_document(SIM_YAML))
def test_sim_yaml(text: str) -> None:
    from koch_sim.sim_config import load_sim

    load_or_refuse(load_sim, text, "sim.yaml")

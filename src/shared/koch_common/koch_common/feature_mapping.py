"""The bag -> LeRobot feature mapping (config/mapping/*.yaml), typed and resolved.

`load_mapping` reads the YAML into `MappingConfig` (as written) and resolves it into a
`Mapping`: topic keys become topic names, `joints: follower|leader` becomes the joint name
list from koch.yaml, and each feature gets the `StreamSpec` the resampler uses. The policy
node reads the same file, so a feature means the same thing offline and live.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from koch_common.config import ConfigError, load_config
from koch_common.resample import POLICIES, StreamSpec
from koch_common.robot import load_koch
from koch_common.topics import topic

JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE = "sensor_msgs/msg/Image"
CLOCKS = ("header", "receive")
IMAGE_PREFIX = "observation.images."


@dataclass
class FeatureConfig:
    topic: str  # a key of topics.yaml, or a literal topic name starting with '/'
    type: str
    policy: str = "hold"
    max_staleness_s: float = 0.1
    # JointState only: 'follower' | 'leader' (names from koch.yaml) or an explicit name list.
    joints: str | list[str] | None = None


@dataclass
class MappingConfig:
    fps: int
    features: dict[str, FeatureConfig]
    clock: str = "header"
    task: str = ""


@dataclass(frozen=True)
class Feature:
    key: str  # LeRobot feature name, e.g. observation.state
    topic: str  # resolved topic name
    msgtype: str
    stream: StreamSpec
    joint_names: tuple[str, ...] = ()  # JointState: the order of the feature vector

    @property
    def is_image(self) -> bool:
        return self.msgtype == IMAGE

    @property
    def camera(self) -> str:
        return self.key.removeprefix(IMAGE_PREFIX)


@dataclass(frozen=True)
class Mapping:
    fps: int
    clock: str
    task: str
    features: tuple[Feature, ...]

    @property
    def topics(self) -> dict[str, str]:
        """topic name -> message type, once per topic."""
        return {f.topic: f.msgtype for f in self.features}

    def feature(self, key: str) -> Feature:
        for f in self.features:
            if f.key == key:
                return f
        raise KeyError(f"feature {key!r} is not in the mapping; it has {[f.key for f in self.features]}")


def _resolve_topic(value: str) -> str:
    return value if value.startswith("/") else topic(value)


def _resolve_joints(key: str, joints: str | list[str] | None) -> tuple[str, ...]:
    if isinstance(joints, list) and joints and all(isinstance(j, str) for j in joints):
        return tuple(joints)
    if joints in ("follower", "leader"):
        arm = load_koch().follower if joints == "follower" else load_koch().leader
        return tuple(arm.names)
    raise ConfigError(
        f"features.{key}.joints: expected 'follower', 'leader' or a list of joint names, got {joints!r}"
    )


def resolve(config: MappingConfig, source: str = "mapping") -> Mapping:
    if config.fps <= 0:
        raise ConfigError(f"{source}: fps must be a positive integer, got {config.fps}")
    if config.clock not in CLOCKS:
        raise ConfigError(f"{source}: clock {config.clock!r} is unknown; use one of {CLOCKS}")
    if not config.features:
        raise ConfigError(f"{source}: features is empty; map at least observation.state")
    features = []
    for key, fc in config.features.items():
        where = f"{source}: features.{key}"
        if fc.policy not in POLICIES:
            raise ConfigError(f"{where}.policy {fc.policy!r} is unknown; use one of {POLICIES}")
        if fc.max_staleness_s <= 0:
            raise ConfigError(f"{where}.max_staleness_s must be > 0, got {fc.max_staleness_s}")
        if fc.type == JOINT_STATE:
            joint_names = _resolve_joints(key, fc.joints)
        elif fc.type == IMAGE:
            if not key.startswith(IMAGE_PREFIX):
                raise ConfigError(f"{where}: image features must be named {IMAGE_PREFIX}<camera>")
            if fc.joints is not None:
                raise ConfigError(f"{where}.joints only applies to {JOINT_STATE} features")
            joint_names = ()
        else:
            raise ConfigError(f"{where}.type {fc.type!r} is not supported; use {JOINT_STATE} or {IMAGE}")
        features.append(
            Feature(
                key=key,
                topic=_resolve_topic(fc.topic),
                msgtype=fc.type,
                stream=StreamSpec(name=key, policy=fc.policy, max_staleness_s=fc.max_staleness_s),
                joint_names=joint_names,
            )
        )
    topics_seen: dict[str, str] = {}
    for f in features:
        if topics_seen.setdefault(f.topic, f.msgtype) != f.msgtype:
            raise ConfigError(f"{source}: topic {f.topic} is mapped with two message types")
    return Mapping(fps=config.fps, clock=config.clock, task=config.task, features=tuple(features))


def load_mapping(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Mapping:
    """Load and resolve a mapping YAML (a path, or relative to config/, e.g. mapping/koch_sim.yaml)."""
    return resolve(load_config(MappingConfig, path, overrides), source=str(path))

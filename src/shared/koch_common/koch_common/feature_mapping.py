"""The bag -> LeRobot feature mapping (config/mapping/*.yaml), typed and resolved.

`load_mapping` reads the YAML into `MappingConfig` (as written) and resolves it into a
`Mapping`: topic keys become topic names, `joints: follower|leader` becomes the joint name
list from koch.yaml, and each feature gets the `StreamSpec` the resampler uses (its `align`:
hold, asof or drop). The policy node reads the same file, so a feature means the same thing
offline and live.

Real publishers vary: some leave JointState's `name` empty (positions in a fixed order) or send
zero header stamps. Neither is guessed around: a stream says so explicitly (`unnamed_joints:
by_index`, `zero_stamps: receive_time`), and without it such a message is an error saying which
option to set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from koch_common.config import ConfigError, from_dict, merge, parse_overrides, read_yaml, require, resolve_config_path
from koch_common.enums import StrEnum
from koch_common.resample import ALIGN_CHOICES, Align, StreamSpec
from koch_common.robot import load_koch
from koch_common.topics import topic

JOINT_STATE = "sensor_msgs/msg/JointState"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_TYPES = (JOINT_STATE, JOINT_TRAJECTORY)
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
CLOCKS = ("header", "receive")
IMAGE_PREFIX = "observation.images."
# A depth camera is an image feature whose name ends in _depth (observation.images.head_depth beside the
# colour observation.images.head), as LeRobot names depth maps; stored as a one-channel depth image.
DEPTH_SUFFIX = "_depth"
OLD_DEPTH_PREFIX = "observation.depth."  # the layout before depth maps: a flattened float column
# The simulated Koch's mapping (under config/): what the converter, record.launch.py and the policy node use
# unless told otherwise.
DEFAULT_MAPPING = "mapping/koch_sim.yaml"


def is_depth_key(key: str) -> bool:
    """A depth camera's feature key: observation.images.<camera>_depth."""
    return key.startswith(IMAGE_PREFIX) and key.endswith(DEPTH_SUFFIX)


class UnnamedJoints(StrEnum):
    """What a joint stream does with a message whose joint names are empty (the YAML's `unnamed_joints`)."""

    REFUSE = "refuse"  # an error: without names the positions' order is a guess
    BY_INDEX = "by_index"  # the positions are in the order of `joints`, exactly one per joint


class ZeroStamps(StrEnum):
    """What a stream does with a zero header stamp on the header clock (the YAML's `zero_stamps`)."""

    REFUSE = "refuse"  # an error: a zero stamp would put the message at the epoch
    RECEIVE_TIME = "receive_time"  # the bag's receive time instead (the recorder's clock; reported)


UNNAMED_JOINTS_CHOICES = tuple(u.value for u in UnnamedJoints)
ZERO_STAMPS_CHOICES = tuple(z.value for z in ZeroStamps)


class JointLookupError(ValueError):
    """A joint message cannot give a feature's joints; the message says which option or fix applies."""


@dataclass
class LimitsConfig:
    """Quality limits: an episode that violates one is refused (not written) with the reason."""

    min_frames: int = 1
    max_stale_fraction: float = 0.0  # hold streams: frames using a sample older than max_staleness_s
    max_dropped_fraction: float = 0.05  # drop streams: frames left out
    max_gap_s: float | None = None  # longest allowed silence of any input stream (None: unchecked)

    def __post_init__(self) -> None:
        require(self.min_frames >= 1, f"min_frames {self.min_frames} must be at least 1")
        for key in ("max_stale_fraction", "max_dropped_fraction"):
            value = getattr(self, key)
            require(0.0 <= value <= 1.0, f"{key} {value} must be a fraction in [0, 1]")
        require(self.max_gap_s is None or self.max_gap_s > 0, f"max_gap_s {self.max_gap_s} must be positive (or null)")


@dataclass
class FeatureConfig:
    topic: str  # a key of topics.yaml, or a literal topic name starting with '/'
    type: str
    align: str = "hold"  # hold | asof | drop: koch_common.resample.Align
    max_staleness_s: float = 0.1
    tolerance_s: float | None = None  # asof/drop: oldest usable sample (default max_staleness_s)
    # JointState/JointTrajectory only: 'follower' | 'leader' (names from koch.yaml) or an explicit name list.
    joints: str | list[str] | None = None
    # Joint types only: refuse | by_index (positions in the order of `joints` when a message has no names).
    unnamed_joints: str | None = None
    zero_stamps: str = ZeroStamps.REFUSE.value  # refuse | receive_time (header clock: a zero stamp)

    def __post_init__(self) -> None:
        require(self.max_staleness_s > 0, f"max_staleness_s {self.max_staleness_s} must be positive (seconds)")
        require(self.tolerance_s is None or self.tolerance_s > 0,
                f"tolerance_s {self.tolerance_s} must be positive (seconds; or null for max_staleness_s)")
        require(self.unnamed_joints is None or self.unnamed_joints in UNNAMED_JOINTS_CHOICES,
                f"unnamed_joints {self.unnamed_joints!r} is unknown; use one of {UNNAMED_JOINTS_CHOICES}")
        require(self.zero_stamps in ZERO_STAMPS_CHOICES,
                f"zero_stamps {self.zero_stamps!r} is unknown; use one of {ZERO_STAMPS_CHOICES}")


@dataclass
class MappingConfig:
    fps: int
    features: dict[str, FeatureConfig]
    clock: str = "header"
    task: str = ""
    # std_msgs/String topic whose latest message (at or before an episode's end) names its task.
    task_topic: str = ""
    # Any topic: each message on it (stamped with the receive clock) starts a new episode in the bag.
    episode_marker_topic: str = ""
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def __post_init__(self) -> None:
        require(self.fps > 0, f"fps {self.fps} must be positive (frames per second)")
        require(len(self.features) > 0, "a mapping needs at least one feature")


@dataclass(frozen=True)
class Feature:
    key: str  # LeRobot feature name, e.g. observation.state
    topic: str  # resolved topic name
    msgtype: str
    stream: StreamSpec
    joint_names: tuple[str, ...] = ()  # JointState: the order of the feature vector
    unnamed_joints: UnnamedJoints = UnnamedJoints.REFUSE
    zero_stamps: ZeroStamps = ZeroStamps.REFUSE

    @property
    def is_image(self) -> bool:
        """A camera stream (colour or depth)."""
        return self.msgtype in IMAGE_TYPES

    @property
    def is_color(self) -> bool:
        """A colour camera stream, stored as video."""
        return self.is_image and not self.is_depth

    @property
    def is_depth(self) -> bool:
        """A depth stream (16UC1/32FC1 Image), stored as a one-channel millimetre depth map."""
        return is_depth_key(self.key)

    @property
    def camera(self) -> str:
        return self.key.removeprefix(IMAGE_PREFIX)

    def joint_indices(self, names: Sequence[str], count: int) -> list[int]:
        """Where this feature's joints are in a message's positions (`names`: the message's joint
        names, `count`: its number of positions), by name, or by index when the names are empty and
        the stream allows it. Here, beside the mapping, so that the converter (which uses it) and the
        policy node can read a stream the same way offline and live. Raises JointLookupError saying
        what to fix."""
        if not names:
            if self.unnamed_joints is UnnamedJoints.REFUSE:
                raise JointLookupError(
                    f"message has an empty `name` (joint names) but {count} positions; if the publisher sends them "
                    f"in the order {list(self.joint_names)}, set features.{self.key}.unnamed_joints: by_index"
                )
            if count != len(self.joint_names):
                raise JointLookupError(
                    f"message without joint names has {count} positions, but {self.key} (unnamed_joints: "
                    f"by_index) has {len(self.joint_names)} joints {list(self.joint_names)}; fix the publisher "
                    "or the mapping's joints"
                )
            return list(range(count))
        if count != len(names):
            raise JointLookupError(f"message has {len(names)} joint names but {count} positions")
        missing = [j for j in self.joint_names if j not in names]
        if missing:
            raise JointLookupError(
                f"message lacks joint(s) {missing} needed by {self.key}; it has {list(names)}. "
                "Fix the mapping's joints or the publisher."
            )
        return [list(names).index(j) for j in self.joint_names]


@dataclass(frozen=True)
class Mapping:
    fps: int
    clock: str
    task: str
    features: tuple[Feature, ...]
    task_topic: str = ""
    episode_marker_topic: str = ""
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def __post_init__(self) -> None:
        require(self.fps > 0, f"fps {self.fps} must be positive (frames per second)")
        require(len(self.features) > 0, "a mapping needs at least one feature")

    @property
    def topics(self) -> dict[str, str]:
        """topic name -> message type, once per topic."""
        return {f.topic: f.msgtype for f in self.features}

    @property
    def extra_topics(self) -> list[str]:
        """The task and episode-marker topics that are set: read from a bag, but not features."""
        return [t for t in (self.task_topic, self.episode_marker_topic) if t]

    @property
    def recorded_topics(self) -> list[str]:
        """Every topic a bag needs for this mapping: the features' plus the extra topics."""
        return [*self.topics, *(t for t in self.extra_topics if t not in self.topics)]

    @property
    def receive_time_topics(self) -> frozenset[str]:
        """Topics whose zero header stamps take the receive time (`zero_stamps: receive_time`)."""
        return frozenset(f.topic for f in self.features if f.zero_stamps is ZeroStamps.RECEIVE_TIME)

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
        if fc.align not in ALIGN_CHOICES:
            raise ConfigError(f"{where}.align {fc.align!r} is unknown; use one of {ALIGN_CHOICES}")
        if fc.max_staleness_s <= 0:
            raise ConfigError(f"{where}.max_staleness_s must be > 0, got {fc.max_staleness_s}")
        if fc.tolerance_s is not None and fc.tolerance_s <= 0:
            raise ConfigError(f"{where}.tolerance_s must be > 0 or unset, got {fc.tolerance_s}")
        if fc.type in JOINT_TYPES:
            joint_names = _resolve_joints(key, fc.joints)
        elif fc.type in IMAGE_TYPES:
            if key.startswith(OLD_DEPTH_PREFIX):
                camera = key.removeprefix(OLD_DEPTH_PREFIX)
                raise ConfigError(f"{where}: depth features are now named {IMAGE_PREFIX}<camera>{DEPTH_SUFFIX} "
                                  "(a depth map, as LeRobot names them); rename it "
                                  f"{IMAGE_PREFIX}{camera}{DEPTH_SUFFIX}")
            if is_depth_key(key) and fc.type != IMAGE:
                raise ConfigError(f"{where}: depth must come from {IMAGE} (16UC1 or 32FC1), not {fc.type}")
            if not key.startswith(IMAGE_PREFIX):
                raise ConfigError(
                    f"{where}: image features must be named {IMAGE_PREFIX}<camera> (colour) or "
                    f"{IMAGE_PREFIX}<camera>{DEPTH_SUFFIX} (depth)"
                )
            for name in ("joints", "unnamed_joints"):
                if getattr(fc, name) is not None:
                    raise ConfigError(f"{where}.{name} only applies to {JOINT_TYPES} features")
            joint_names = ()
        else:
            raise ConfigError(
                f"{where}.type {fc.type!r} is not supported; use one of {JOINT_TYPES + IMAGE_TYPES}"
            )
        features.append(
            Feature(
                key=key,
                topic=_resolve_topic(fc.topic),
                msgtype=fc.type,
                stream=StreamSpec(
                    name=key, align=Align(fc.align), max_staleness_s=fc.max_staleness_s, tolerance_s=fc.tolerance_s
                ),
                joint_names=joint_names,
                unnamed_joints=UnnamedJoints(fc.unnamed_joints or UnnamedJoints.REFUSE),
                zero_stamps=ZeroStamps(fc.zero_stamps),
            )
        )
    topics_seen: dict[str, Feature] = {}
    for f in features:
        first = topics_seen.setdefault(f.topic, f)
        if first.msgtype != f.msgtype:
            raise ConfigError(f"{source}: topic {f.topic} is mapped with two message types")
        if first.zero_stamps != f.zero_stamps:
            raise ConfigError(f"{source}: topic {f.topic} is mapped twice with different zero_stamps "
                              f"({first.key}: {first.zero_stamps}, {f.key}: {f.zero_stamps}); give both the same")
    limits = config.limits
    if limits.min_frames < 1 or not 0 <= limits.max_stale_fraction <= 1 or not 0 <= limits.max_dropped_fraction <= 1:
        raise ConfigError(f"{source}: limits need min_frames >= 1 and fractions in [0, 1], got {limits}")
    if not config.task and not config.task_topic:
        raise ConfigError(f"{source}: set `task` (text) or `task_topic` (a std_msgs/String topic)")
    return Mapping(
        fps=config.fps,
        clock=config.clock,
        task=config.task,
        features=tuple(features),
        task_topic=_resolve_topic(config.task_topic) if config.task_topic else "",
        episode_marker_topic=_resolve_topic(config.episode_marker_topic) if config.episode_marker_topic else "",
        limits=limits,
    )


# Feature keys that were renamed: a mapping still using the old name is told the new one (the resampler's
# per-stream `policy` became `align`, so "policy" means the learned policy everywhere).
RENAMED_FEATURE_KEYS = {"policy": "align"}


def _refuse_renamed_keys(data: dict[str, Any], source: str) -> None:
    features = data.get("features")
    for key, feature in (features.items() if isinstance(features, dict) else ()):
        for old, new in RENAMED_FEATURE_KEYS.items():
            if isinstance(feature, dict) and old in feature:
                raise ConfigError(f"{source}: features.{key}.{old} is now called `{new}`; rename the key "
                                  f"({new}: {feature[old]})")


def load_mapping(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Mapping:
    """Load and resolve a mapping YAML (a path, or relative to config/, e.g. DEFAULT_MAPPING)."""
    data = merge(read_yaml(path), parse_overrides(overrides))
    _refuse_renamed_keys(data, str(path))
    return resolve(from_dict(MappingConfig, data, where=resolve_config_path(path).name), source=str(path))

"""The Koch v1.1 arm model from `config/koch.yaml`: joints, limits, raw <-> radian mapping."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from koch_common.config import ConfigError, load_config, read_yaml, require, resolve_config_path
from koch_common.dynamixel_models import POSITION_TICKS_PER_TURN

RAD_PER_TICK = 2.0 * math.pi / POSITION_TICKS_PER_TURN


@dataclass
class JointSpec:
    name: str
    id: int
    model: str
    lower: float
    upper: float
    zero_raw: int = 2048
    sign: int = 1
    max_velocity: float = 3.0
    # Operating_Mode by name (koch_common.dynamixel_models.OPERATING_MODES): extended_position
    # for joints, current_position for a gripper that must grip without forcing.
    mode: str = "extended_position"
    # Torque on while the driver runs (the leader: off, except the gripper used as a spring trigger).
    torque: bool = True
    # Goal_Current (raw, ~1 mA on XL330) written on configure: in current_position mode it caps
    # the force the joint pushes with (a gripper closing on an object); None keeps the servo's.
    goal_current: int | None = None

    def __post_init__(self) -> None:
        # Written so that NaN fails each check: the safety limits are built from these numbers.
        require(math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower < self.upper,
                f"joint {self.name}: limits lower {self.lower} and upper {self.upper} must be finite, lower < upper")
        require(self.max_velocity > 0 and math.isfinite(self.max_velocity),
                f"joint {self.name}: max_velocity {self.max_velocity} must be a positive number (rad/s)")
        require(self.sign in (-1, 1), f"joint {self.name}: sign {self.sign} must be 1 or -1")
        require(0 <= self.id <= 252, f"joint {self.name}: servo id {self.id} must be in 0..252")
        require(self.goal_current is None or self.goal_current > 0,
                f"joint {self.name}: goal_current {self.goal_current} must be positive (or left out)")


@dataclass
class ArmConfig:
    port: str
    baudrate: int
    joints: list[JointSpec]
    control_rate_hz: float = 50.0
    # Written to every servo on configure: 0 = answer at once (factory 250 = 500 us per reply).
    return_delay_time: int = 0
    fast_sync_read: bool = True  # used where every servo's firmware has it; falls back by itself
    # Robustness: bus errors for this long in a row mean the bus is lost (hold safe, reconnect).
    error_timeout_s: float = 0.5
    reconnect_min_s: float = 0.1  # reconnect backoff doubles from here ...
    reconnect_max_s: float = 2.0  # ... up to here
    hardware_error_poll_s: float = 0.2  # Hardware_Error_Status poll period
    # YAML written by koch_driver's `calibrate` (relative to config/ or absolute); "" = none.
    # It sets each joint's zero_raw and narrows lower/upper to the recorded range.
    calibration: str = ""

    def __post_init__(self) -> None:
        require(len(self.joints) > 0, "an arm needs at least one joint")
        require(len(set(self.names)) == len(self.joints), f"joint names repeat: {self.names}")
        require(len(set(self.ids)) == len(self.joints), f"servo ids repeat: {self.ids}")
        for key in ("control_rate_hz", "error_timeout_s", "reconnect_min_s", "reconnect_max_s"):
            value = getattr(self, key)
            require(value > 0 and math.isfinite(value), f"{key} {value} must be a positive number")
        require(0 <= self.hardware_error_poll_s < math.inf,
                f"hardware_error_poll_s {self.hardware_error_poll_s} must be >= 0 (0: every control cycle)")
        require(self.reconnect_min_s <= self.reconnect_max_s,
                f"reconnect_min_s {self.reconnect_min_s} must not exceed reconnect_max_s {self.reconnect_max_s}")
        require(0 <= self.return_delay_time <= 254, f"return_delay_time {self.return_delay_time} must be in 0..254")

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def ids(self) -> list[int]:
        return [j.id for j in self.joints]

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints])

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints])

    @property
    def max_velocity(self) -> np.ndarray:
        return np.array([j.max_velocity for j in self.joints])

    def to_raw(self, positions_rad: np.ndarray) -> np.ndarray:
        """Radians (URDF convention) -> Present/Goal_Position ticks."""
        zero = np.array([j.zero_raw for j in self.joints])
        sign = np.array([j.sign for j in self.joints])
        return np.rint(zero + sign * np.asarray(positions_rad) / RAD_PER_TICK).astype(np.int64)

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        """Present/Goal_Position ticks -> radians (URDF convention)."""
        zero = np.array([j.zero_raw for j in self.joints])
        sign = np.array([j.sign for j in self.joints])
        return sign * (np.asarray(raw, dtype=np.float64) - zero) * RAD_PER_TICK

    def velocity_from_raw(self, raw: np.ndarray, unit_rpm: float = 0.229) -> np.ndarray:
        """Present_Velocity (0.229 rpm units on X-series) -> rad/s."""
        sign = np.array([j.sign for j in self.joints])
        return sign * np.asarray(raw, dtype=np.float64) * unit_rpm * 2.0 * math.pi / 60.0


def _vector(values: list[float], size: int, what: str) -> None:
    require(len(values) == size and all(math.isfinite(float(v)) for v in values),
            f"{what} {values} must be {size} finite numbers")


@dataclass
class ShapeConfig:
    """A collision box in its link's frame: centre and half sizes (m); `jaw`: a gripper jaw."""

    centre: list[float]
    half: list[float]
    jaw: bool = False

    def __post_init__(self) -> None:
        _vector(self.centre, 3, "shape centre")
        _vector(self.half, 3, "shape half sizes")
        require(all(h > 0 for h in self.half), f"shape half sizes {self.half} must be positive")


@dataclass
class LinkConfig:
    """The link a joint moves: the joint's origin (m) and axis in the parent link's frame, and inertia."""

    joint: str
    origin: list[float]
    axis: list[float]
    mass: float
    com: list[float]
    inertia: list[float]  # principal moments (kg m^2) about the centre of mass, along the link's axes
    shapes: list[ShapeConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        _vector(self.origin, 3, f"link {self.joint} origin")
        _vector(self.axis, 3, f"link {self.joint} axis")
        _vector(self.com, 3, f"link {self.joint} com")
        _vector(self.inertia, 3, f"link {self.joint} inertia")
        require(abs(float(np.linalg.norm(self.axis)) - 1.0) < 1e-6,
                f"link {self.joint} axis {self.axis} must be a unit vector")
        require(self.mass > 0 and all(i > 0 for i in self.inertia),
                f"link {self.joint}: mass {self.mass} and inertia {self.inertia} must be positive")


@dataclass
class BaseConfig:
    shapes: list[ShapeConfig] = field(default_factory=list)


@dataclass
class KinematicsConfig:
    """The follower's geometry (config/koch.yaml `kinematics:`): URDF, FK/IK and MuJoCo all derive from it."""

    mount_yaw: float
    links: list[LinkConfig]
    tcp: list[float]
    base: BaseConfig = field(default_factory=BaseConfig)

    def __post_init__(self) -> None:
        _vector(self.tcp, 3, "tcp")
        require(math.isfinite(self.mount_yaw), f"mount_yaw {self.mount_yaw} must be finite")

    @property
    def joint_names(self) -> list[str]:
        return [link.joint for link in self.links]


@dataclass
class SafetyConfig:
    position_margin: float = 0.02
    max_step_from_present: float = 0.35
    max_acceleration: float = 50.0  # rad/s^2 between consecutive points of a chunk (policy node)

    def __post_init__(self) -> None:
        # A negative margin would widen the limits past the joints' range; NaN would switch them off.
        require(0 <= self.position_margin < math.inf, f"position_margin {self.position_margin} must be >= 0 (rad)")
        require(0 < self.max_step_from_present < math.inf,
                f"max_step_from_present {self.max_step_from_present} must be a positive number (rad)")
        require(0 < self.max_acceleration < math.inf,
                f"max_acceleration {self.max_acceleration} must be a positive number (rad/s^2)")


@dataclass
class KochConfig:
    follower: ArmConfig
    leader: ArmConfig
    kinematics: KinematicsConfig
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    home: list[float] = field(default_factory=lambda: [0.0] * 6)  # rest pose (rad), follower joint order

    def __post_init__(self) -> None:
        require(self.kinematics.joint_names == self.follower.names,
                f"kinematics links {self.kinematics.joint_names} must name the follower's joints in order "
                f"({self.follower.names})")
        # Not checked against the limits: a calibration may narrow them; a home command passes the safety layer.
        require(len(self.home) == len(self.follower.joints) and all(math.isfinite(v) for v in self.home),
                f"home {self.home} must give one finite angle (rad) per follower joint")
        margin = self.safety.position_margin
        for arm_name, arm in (("follower", self.follower), ("leader", self.leader)):
            for joint in arm.joints:
                half_range = (joint.upper - joint.lower) / 2
                require(margin < half_range,
                        f"safety.position_margin {margin} leaves no range for {arm_name} joint {joint.name} "
                        f"([{joint.lower}, {joint.upper}]): it must be smaller than half the range ({half_range:.4g})")


# The keys `calibrate` (koch_driver) writes for every joint that `apply_calibration` reads.
CALIBRATION_KEYS = ("id", "zero_raw", "range_min", "range_max")


def _calibration_entry(path: str, joint: str, entry: object, fix: str) -> dict[str, int]:
    """A joint's entry of a calibration file as integers, or one line naming the file, the key and the fix."""
    if not isinstance(entry, dict):
        raise ConfigError(f"calibration {path}: joint {joint} is {entry!r}, not a mapping of "
                          f"{', '.join(CALIBRATION_KEYS)}; {fix}")
    values = {}
    for key in CALIBRATION_KEYS:
        if key not in entry:
            raise ConfigError(f"calibration {path}: joint {joint} has no {key!r} (the file is incomplete); {fix}")
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"calibration {path}: joint {joint}'s {key!r} is {value!r}, not an integer; {fix}")
        if not -(2**31) <= value < 2**31:  # Present_Position is a signed 32-bit register
            raise ConfigError(f"calibration {path}: joint {joint}'s {key!r} is {value}, outside a servo "
                              f"register's range; {fix}")
        values[key] = value
    return values


def apply_calibration(arm: ArmConfig, arm_name: str = "<arm>") -> ArmConfig:
    """`arm` with zero_raw and limits from its calibration file (unchanged when it has none)."""
    if not arm.calibration:
        return arm
    path = str(resolve_config_path(arm.calibration))
    fix = f"run `calibrate --arm {arm_name}` again to rewrite it"
    data = read_yaml(arm.calibration)
    recorded = data.get("joints") or {}
    if not isinstance(recorded, dict):
        raise ConfigError(f"calibration {path}: 'joints' is not a mapping of joint names; {fix}")
    joints = []
    for joint in arm.joints:
        if joint.name not in recorded:
            raise ConfigError(f"calibration {arm.calibration} has no joint {joint.name!r} (it has "
                             f"{sorted(recorded)}); {fix}")
        entry = _calibration_entry(path, joint.name, recorded[joint.name], fix)
        if entry["id"] != joint.id:
            raise ConfigError(f"calibration {arm.calibration}: joint {joint.name} was recorded on servo ID "
                             f"{entry['id']} but koch.yaml says ID {joint.id}; recalibrate")
        zero = entry["zero_raw"]
        ends = sorted(joint.sign * (np.array([entry["range_min"], entry["range_max"]]) - zero) * RAD_PER_TICK)
        lower, upper = max(joint.lower, float(ends[0])), min(joint.upper, float(ends[1]))
        if lower >= upper:
            raise ConfigError(f"calibration {arm.calibration}: joint {joint.name}'s recorded range "
                             f"{[round(float(e), 3) for e in ends]} rad misses its limits "
                             f"[{joint.lower}, {joint.upper}]; recalibrate moving it through its range")
        joints.append(replace(joint, zero_raw=zero, lower=lower, upper=upper))
    return replace(arm, joints=joints)


@lru_cache(maxsize=8)
def _load_cached(path: str, overrides: tuple[str, ...]) -> KochConfig:
    koch = load_config(KochConfig, path, list(overrides))
    return replace(koch, follower=apply_calibration(koch.follower, "follower"),
                   leader=apply_calibration(koch.leader, "leader"))


def load_koch(path: str = "koch.yaml", overrides: list[str] | None = None) -> KochConfig:
    return _load_cached(path, tuple(overrides or ()))

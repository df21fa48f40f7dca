"""The Koch v1.1 arm model from `config/koch.yaml`: joints, limits, raw <-> radian mapping."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from koch_common.config import load_config

TICKS_PER_TURN = 4096
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_TURN


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


@dataclass
class ArmConfig:
    port: str
    baudrate: int
    joints: list[JointSpec]
    control_rate_hz: float = 50.0

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


@dataclass
class KinematicsConfig:
    base_height: float
    upper_arm: float
    forearm: float
    gripper: float


@dataclass
class SafetyConfig:
    position_margin: float = 0.02
    max_step_from_present: float = 0.35


@dataclass
class KochConfig:
    follower: ArmConfig
    leader: ArmConfig
    kinematics: KinematicsConfig
    safety: SafetyConfig = field(default_factory=SafetyConfig)


@lru_cache(maxsize=8)
def _load_cached(path: str, overrides: tuple[str, ...]) -> KochConfig:
    return load_config(KochConfig, path, list(overrides))


def load_koch(path: str = "koch.yaml", overrides: list[str] | None = None) -> KochConfig:
    return _load_cached(path, tuple(overrides or ()))

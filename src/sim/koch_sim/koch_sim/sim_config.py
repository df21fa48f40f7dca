"""Typed view of `config/sim.yaml`."""

from __future__ import annotations

from dataclasses import dataclass, field

from koch_common.config import load_config


@dataclass
class EmulatorConfig:
    follower_port_link: str = "/tmp/koch_sim/follower"
    time_constant_s: float = 0.06


@dataclass
class TaskConfig:
    radius_min: float = 0.12
    radius_max: float = 0.20
    azimuth_max: float = 0.8
    target_height: float = 0.02
    success_distance: float = 0.03
    reach_duration_s: float = 1.0
    episode_duration_s: float = 2.5


@dataclass
class CameraConfig:
    width: int = 128
    height: int = 96
    fps: float = 30.0
    position: list[float] = field(default_factory=lambda: [0.16, 0.0, 0.55])
    focal_px: float = 180.0


@dataclass
class SimConfig:
    emulator: EmulatorConfig = field(default_factory=EmulatorConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)


def load_sim(path: str = "sim.yaml", overrides: list[str] | None = None) -> SimConfig:
    return load_config(SimConfig, path, overrides)

"""Typed view of `config/sim.yaml`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from koch_common.config import ConfigError, load_config, require


class TaskKind(StrEnum):
    REACH = "reach"
    PICK_PLACE = "pick_place"
    PICK_COLOR = "pick_color"
    PICK_TALLER = "pick_taller"


def task_kind(name: str) -> TaskKind:
    try:
        return TaskKind(name)
    except ValueError:
        raise ConfigError(f"task {name!r} is unknown; use one of {[k.value for k in TaskKind]}") from None


@dataclass
class EmulatorConfig:
    follower_port_link: str = "/tmp/koch_sim/follower"
    time_constant_s: float = 0.06


@dataclass
class ServoPhysics:
    """A Dynamixel model as a MuJoCo position actuator on a damped joint."""

    kp: float
    kv: float
    stall_torque_nm: float
    stall_current_a: float
    no_load_speed_rad_s: float
    armature: float = 0.0
    frictionloss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("kp", "stall_torque_nm", "stall_current_a", "no_load_speed_rad_s"):
            require(getattr(self, name) > 0, f"servo {name} {getattr(self, name)} must be positive")
        for name in ("kv", "armature", "frictionloss"):
            require(getattr(self, name) >= 0, f"servo {name} {getattr(self, name)} must be >= 0")

    @property
    def torque_constant(self) -> float:
        """N m per A at stall: what turns a current cap into a torque cap and a torque into Present_Current."""
        return self.stall_torque_nm / self.stall_current_a

    @property
    def back_emf_damping(self) -> float:
        return self.stall_torque_nm / self.no_load_speed_rad_s


@dataclass
class PhysicsConfig:
    timestep_s: float = 0.002
    world_state_rate_hz: float = 30.0
    max_lag_s: float = 0.05
    servos: dict[str, ServoPhysics] = field(default_factory=dict)
    jaw_friction: float = 1.5
    object_friction: float = 1.0
    table_friction: float = 0.6

    def __post_init__(self) -> None:
        require(0 < self.timestep_s <= 0.01, f"timestep_s {self.timestep_s} must be in (0, 0.01] s")
        require(self.world_state_rate_hz > 0, f"world_state_rate_hz {self.world_state_rate_hz} must be positive")
        require(self.max_lag_s > 0, f"max_lag_s {self.max_lag_s} must be positive")

    def servo(self, model: str) -> ServoPhysics:
        if model not in self.servos:
            raise ConfigError(f"sim.yaml physics.servos has no entry for servo model {model!r} (koch.yaml); "
                              f"add one like {sorted(self.servos)}")
        return self.servos[model]


@dataclass
class CameraConfig:
    width: int = 128
    height: int = 96
    fps: float = 30.0
    position: list[float] = field(default_factory=lambda: [0.12, 0.0, 0.45])
    fovy_deg: float = 34.0
    wrist_position: list[float] = field(default_factory=lambda: [-0.03, -0.004, 0.03])
    wrist_tilt_deg: float = 32.0
    wrist_fovy_deg: float = 75.0

    def __post_init__(self) -> None:
        require(self.width > 0 and self.height > 0, f"camera size {self.width}x{self.height} must be positive")
        for name in ("fovy_deg", "wrist_fovy_deg"):
            require(0 < getattr(self, name) < 170, f"camera {name} {getattr(self, name)} must be in (0, 170) degrees")


@dataclass
class WorkspaceConfig:
    radius_min: float = 0.095
    radius_max: float = 0.155
    azimuth_max: float = 0.8
    min_separation: float = 0.055

    def __post_init__(self) -> None:
        require(0 < self.radius_min < self.radius_max, f"workspace radii {self.radius_min}..{self.radius_max} "
                "must satisfy 0 < radius_min < radius_max")


@dataclass
class ReachConfig:
    target_height: float = 0.02
    success_distance: float = 0.03
    episode_duration_s: float = 2.5


@dataclass
class PickPlaceConfig:
    cube_half: list[float] = field(default_factory=lambda: [0.013, 0.016])
    zone_half: float = 0.035
    episode_duration_s: float = 7.5


@dataclass
class PickColorConfig:
    cubes: int = 3
    cube_half: float = 0.014
    lift_height: float = 0.03
    episode_duration_s: float = 5.0


@dataclass
class PickTallerConfig:
    short_height: list[float] = field(default_factory=lambda: [0.022, 0.026])
    tall_height: list[float] = field(default_factory=lambda: [0.04, 0.046])
    top_half: float = 0.014
    lift_height: float = 0.03
    episode_duration_s: float = 5.0


@dataclass
class TasksConfig:
    reach: ReachConfig = field(default_factory=ReachConfig)
    pick_place: PickPlaceConfig = field(default_factory=PickPlaceConfig)
    pick_color: PickColorConfig = field(default_factory=PickColorConfig)
    pick_taller: PickTallerConfig = field(default_factory=PickTallerConfig)

    def duration_s(self, kind: TaskKind | str) -> float:
        return float(getattr(self, task_kind(str(kind)).value).episode_duration_s)


@dataclass
class ExpertConfig:
    move_speed: float = 0.2
    min_segment_s: float = 0.6
    approach_height: float = 0.045
    grip_close: float = 0.05
    grip_open: float = 0.9
    settle_s: float = 0.4


@dataclass
class SimConfig:
    emulator: EmulatorConfig = field(default_factory=EmulatorConfig)
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    task: str = "reach"
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        task_kind(self.task)


def load_sim(path: str = "sim.yaml", overrides: list[str] | None = None) -> SimConfig:
    return load_config(SimConfig, path, overrides)

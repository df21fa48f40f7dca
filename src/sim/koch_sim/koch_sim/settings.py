"""The sim nodes' parameters, declared once (ROS-free): defaults, descriptions, constraints.

Unset settings take sim.yaml's values (see koch_common.settings for the rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from koch_common.config import ConfigError
from koch_common.realtime import RealtimeSettings
from koch_common.settings import setting
from koch_sim.sim_config import TaskKind

TASKS = tuple(kind.value for kind in TaskKind)


@dataclass(frozen=True, kw_only=True)
class SimWorldSettings(RealtimeSettings):
    """The simulated servos stand in for hardware: the control path's CPUs (`cpus`), normal priority."""

    follower_port_link: str | None = setting(
        None, "path where the follower's emulated servo bus (a pseudo-terminal) is linked, the driver's port; "
        "unset: sim.yaml's emulator.follower_port_link")
    task: str | None = setting(
        None, "the task laid out on the table: reach, pick_place, pick_color or pick_taller; unset: sim.yaml's task",
        choices=TASKS)
    seed: int = setting(0, "seed of the first episode's layout; ~/new_episode lays out seed + 1, seed + 2, ...")
    physics: bool = setting(
        True, "true: MuJoCo behind the servos (contacts, the task's objects); false: every servo a first-order lag "
        "that always reaches its goal (no contact, objects never move): what a fault drill uses to audit the command "
        "path alone, where a lagging, blocked arm would make the driver's present-position clamp move goals at the "
        "arm's pace")
    goal_log: str = setting(
        "", "CSV file to write every Goal_Position the emulated servos receive to (monotonic time, servo ID, raw), "
        "for the offline bounds check of fault drills (koch_sim.goal_log); empty: not recorded")


@dataclass(frozen=True, kw_only=True)
class ScriptedLeaderSettings:
    rate_hz: float = setting(30.0, "rate of the leader's joint states, or of its moves on the emulated bus (Hz)")
    task: str | None = setting(
        None, "the task ~/run_expert demonstrates (the sim world's): reach, pick_place, pick_color or pick_taller; "
        "unset: sim.yaml's task", choices=TASKS)
    home_duration_s: float = setting(1.0, "how long ~/go_home takes to move to the home pose (s)")
    leader_port_link: str = setting(
        "", "where to link an emulated leader arm's servo bus (six XL330, read by a leader driver, as on the robot); "
        "empty: no bus, this node publishes the leader's joint states itself")

    def validate(self) -> ScriptedLeaderSettings:
        for name in ("rate_hz", "home_duration_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"parameter {name}={value} must be positive")
        return self

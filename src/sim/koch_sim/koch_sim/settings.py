"""The sim nodes' parameters, declared once (ROS-free): defaults, descriptions, constraints.

Unset settings take sim.yaml's values (see koch_common.settings for the rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from koch_common.config import ConfigError
from koch_common.settings import setting


@dataclass(frozen=True, kw_only=True)
class SimWorldSettings:
    follower_port_link: str | None = setting(
        None, "path where the follower's emulated servo bus (a pseudo-terminal) is linked, the driver's port; "
        "unset: sim.yaml's emulator.follower_port_link")
    time_constant_s: float | None = setting(
        None, "first-order time constant of the emulated servos (s); unset: sim.yaml's emulator.time_constant_s",
        minimum=0.0)
    seed: int = setting(0, "seed of the target sequence (~/new_episode draws the next target)")
    goal_log: str = setting(
        "", "CSV file to write every Goal_Position the emulated servos receive to (monotonic time, servo ID, raw), "
        "for the offline bounds check of fault drills (koch_sim.goal_log); empty: not recorded")


@dataclass(frozen=True, kw_only=True)
class ScriptedLeaderSettings:
    rate_hz: float = setting(30.0, "rate of the leader's joint states, or of its moves on the emulated bus (Hz)")
    reach_duration_s: float | None = setting(
        None, "how long ~/reach takes to move the tool onto the target (s); unset: sim.yaml's task.reach_duration_s")
    home_duration_s: float = setting(1.0, "how long ~/go_home takes to move to the home pose (s)")
    leader_port_link: str = setting(
        "", "where to link an emulated leader arm's servo bus (six XL330, read by a leader driver, as on the robot); "
        "empty: no bus, this node publishes the leader's joint states itself")

    def validate(self) -> ScriptedLeaderSettings:
        for name in ("rate_hz", "reach_duration_s", "home_duration_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"parameter {name}={value} must be positive")
        return self

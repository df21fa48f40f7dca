"""The joint driver's ROS-free core: one bus loop per arm.

Each control step reads position/velocity/current of every servo in one sync read,
samples the active trajectory, passes the result through the shared safety limits and
writes all goals in one sync write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from koch_common.robot import ArmConfig
from koch_common.safety import SafetyLimits
from koch_driver.bus import BusError, DynamixelBus
from koch_driver.trajectory import TimedTrajectory, TrajectoryFollower

# Present_Current is in ~1 mA units on the XL330/XM430 (Present_Load, 0.1 %, on the XL430);
# effort is reported in those units scaled to amperes until per-model torque constants land.
CURRENT_UNIT_A = 0.001


@dataclass
class JointStateSample:
    stamp: float  # seconds on the caller's clock, taken right after the bus read
    names: list[str]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class ArmDriver:
    def __init__(self, arm: ArmConfig, limits: SafetyLimits, torque_enable: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.arm = arm
        self.clock = clock
        self.limits = limits
        self.torque_enable = torque_enable
        self.bus = DynamixelBus(arm.port, arm.baudrate, arm.ids, {j.id: j.model for j in arm.joints})
        self._follower = TrajectoryFollower()
        self._goal: np.ndarray | None = None

    def connect(self, timeout_s: float = 0.0, retry_period_s: float = 0.5) -> JointStateSample:
        """Open the port, check every servo, and hold the present pose with torque on.

        A port that is not there yet (USB adapter enumerating, emulator starting) is retried
        until `timeout_s`; then the last error, which names port, ID and model, is raised.
        Goals are synced to the present positions before torque is enabled, so the arm
        does not jump to whatever goal the servos last had.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.bus.open()
                self.bus.ping_all()
                break
            except BusError:
                self.bus.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(retry_period_s)
        state = self.read()
        self._goal = state.position.copy()
        if self.torque_enable:
            self.bus.write_goal_positions(self.arm.to_raw(self._goal))
            self.bus.set_torque(True)
        return state

    def close(self) -> None:
        self.bus.close()

    def read(self) -> JointStateSample:
        position_raw, velocity_raw, current_raw = self.bus.read_state()
        return JointStateSample(
            stamp=self.clock(),
            names=self.arm.names,
            position=self.arm.from_raw(position_raw),
            velocity=self.arm.velocity_from_raw(velocity_raw),
            effort=np.asarray(current_raw, dtype=np.float64) * CURRENT_UNIT_A,
        )

    def command(self, trajectory: TimedTrajectory, now: float) -> None:
        if self._goal is None:
            raise RuntimeError("driver is not connected")
        self._follower.replace(trajectory, self._goal, now)

    def hold(self) -> None:
        self._follower.clear()

    def step(self, dt: float) -> JointStateSample:
        """One control cycle: read, sample the trajectory, limit, write."""
        state = self.read()
        desired = self._follower.sample(state.stamp)
        if desired is not None and self.torque_enable and self._goal is not None:
            goal = self.limits.filter_point(desired, state.position)
            goal = self.limits.limit_rate(self._goal, goal, dt)
            self.bus.write_goal_positions(self.arm.to_raw(goal))
            self._goal = goal
        return state

    def joint_order(self, names: list[str]) -> list[int]:
        """Index of each of the arm's joints in `names`; a clear error for missing joints."""
        missing = [n for n in self.arm.names if n not in names]
        if missing:
            raise ValueError(f"command lacks joint(s) {missing}; expected {self.arm.names}")
        return [names.index(n) for n in self.arm.names]

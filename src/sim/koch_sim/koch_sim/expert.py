"""The scripted expert that plays the leader arm: a minimum-jerk reach to the target."""

from __future__ import annotations

import numpy as np

from koch_common.kinematics import reach_down_ik
from koch_common.robot import KinematicsConfig

HOME = np.zeros(6)


def min_jerk(start: np.ndarray, goal: np.ndarray, duration: float, t: float) -> np.ndarray:
    s = float(np.clip(t / duration, 0.0, 1.0)) if duration > 0 else 1.0
    blend = 10 * s**3 - 15 * s**4 + 6 * s**5
    return start + (goal - start) * blend


def reach_goal(target: np.ndarray, kinematics: KinematicsConfig, start: np.ndarray) -> np.ndarray:
    """Leader joint goal that puts the tcp on the target; wrist roll and gripper keep `start`."""
    goal = np.array(start, dtype=np.float64)
    goal[:4] = reach_down_ik(target, kinematics)
    return goal


class ScriptedLeader:
    """Leader-arm joint positions over time: hold, or move to a goal along a min-jerk path."""

    def __init__(self, start: np.ndarray = HOME) -> None:
        self._start = np.array(start, dtype=np.float64)
        self._goal = self._start.copy()
        self._t0 = 0.0
        self._duration = 0.0

    def move_to(self, goal: np.ndarray, now: float, duration: float) -> None:
        self._start = self.position(now)
        self._goal = np.array(goal, dtype=np.float64)
        self._t0 = now
        self._duration = duration

    def position(self, now: float) -> np.ndarray:
        return min_jerk(self._start, self._goal, self._duration, now - self._t0)

    def done(self, now: float) -> bool:
        return now - self._t0 >= self._duration

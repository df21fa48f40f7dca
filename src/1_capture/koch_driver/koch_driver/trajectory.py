"""Executes a joint trajectory (an action chunk) by time, the way ros2_control does.

Points carry absolute times (header stamp + time_from_start; a zero header stamp means
"start now"). Between points positions are interpolated linearly; before the first point
the trajectory starts from where the arm was commanded when it arrived; after the last
point the last position is held. A new trajectory replaces the remainder of the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TimedTrajectory:
    times: np.ndarray  # (T,) absolute seconds, strictly increasing
    positions: np.ndarray  # (T, J)

    def __post_init__(self) -> None:
        if self.times.ndim != 1 or self.positions.shape[0] != self.times.size or self.times.size == 0:
            raise ValueError("a trajectory needs one position row per time and at least one point")
        if np.any(np.diff(self.times) <= 0):
            raise ValueError("trajectory times must be strictly increasing")


class TrajectoryFollower:
    """Samples the active trajectory at the control rate."""

    def __init__(self) -> None:
        self._trajectory: TimedTrajectory | None = None

    def replace(self, trajectory: TimedTrajectory, current_goal: np.ndarray, now: float) -> None:
        # Prepend the current goal so motion starts from where the arm is going now.
        if trajectory.times[0] > now:
            trajectory = TimedTrajectory(
                np.concatenate([[now], trajectory.times]),
                np.vstack([current_goal, trajectory.positions]),
            )
        self._trajectory = trajectory

    def clear(self) -> None:
        self._trajectory = None

    def sample(self, now: float) -> np.ndarray | None:
        traj = self._trajectory
        if traj is None:
            return None
        if now >= traj.times[-1]:
            return traj.positions[-1]
        return np.array([np.interp(now, traj.times, traj.positions[:, j]) for j in range(traj.positions.shape[1])])

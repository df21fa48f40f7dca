"""Teleoperation core (ROS-free): the follower's target is the leader's pose, limited.

The leader's joint angles are mapped joint by joint (same names and radian convention on
both arms, see config/koch.yaml) and passed through the shared safety limits against the
follower's measured pose: clamped inside the follower's joint limits, and at most
`safety.max_step_from_present` away from where the follower is (LeRobot's "max relative
target"), so a leader yanked across its range cannot make the follower jump.
"""

from __future__ import annotations

import numpy as np

from koch_common.robot import ArmConfig
from koch_common.safety import SafetyLimits


class TeleopMirror:
    def __init__(self, leader: ArmConfig, follower: ArmConfig, limits: SafetyLimits) -> None:
        missing = [name for name in follower.names if name not in leader.names]
        if missing:
            raise ValueError(f"the leader arm has no joint(s) {missing} to mirror; its joints are {leader.names}")
        self.follower_names = follower.names
        self.limits = limits

    def order(self, leader_names: list[str]) -> list[int]:
        """Index in a leader message of each follower joint."""
        missing = [name for name in self.follower_names if name not in leader_names]
        if missing:
            raise ValueError(f"leader joint state lacks {missing}; expected {self.follower_names}")
        return [leader_names.index(name) for name in self.follower_names]

    def target(self, leader_position: np.ndarray, follower_position: np.ndarray | None) -> np.ndarray:
        """The follower goal for this leader pose; without a follower measurement, limits only."""
        leader_position = np.asarray(leader_position, dtype=np.float64)
        if follower_position is None:
            clipped = np.clip(leader_position, self.limits.lower, self.limits.upper)
            return np.where(np.isfinite(clipped), clipped, np.nan)
        return self.limits.filter_point(leader_position, np.asarray(follower_position, dtype=np.float64))

"""Joint limits every command passes through, in the driver and in the policy node alike.

ROS-free so the same checks run at both ends of the command path (defence in depth):
non-finite values are rejected, positions are clamped inside the joint limits less a
margin, the first point may lead the measured position by at most `max_step_from_present`,
and consecutive points of a chunk move no faster than each joint's velocity limit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from koch_common.robot import ArmConfig, SafetyConfig


@dataclass
class SafetyLimits:
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_step: float
    interventions: Counter[str] = field(default_factory=Counter)

    @classmethod
    def for_arm(cls, arm: ArmConfig, safety: SafetyConfig) -> SafetyLimits:
        return cls(
            lower=arm.lower + safety.position_margin,
            upper=arm.upper - safety.position_margin,
            max_velocity=arm.max_velocity,
            max_step=safety.max_step_from_present,
        )

    def filter_chunk(self, chunk: np.ndarray, measured: np.ndarray, dt: float) -> np.ndarray:
        """Make a (T, J) chunk of position targets safe to send, starting from `measured`.

        Point k is limited relative to point k-1 (point -1 being the measured position): by
        `max_step` for the first point and by `max_velocity * dt` after that. A non-finite
        value holds the previous point for that joint.
        """
        chunk = np.array(chunk, dtype=np.float64, ndmin=2)
        if chunk.shape[1] != self.lower.size:
            raise ValueError(f"chunk has {chunk.shape[1]} joints, the arm has {self.lower.size}")
        measured = np.clip(np.asarray(measured, dtype=np.float64), self.lower, self.upper)
        safe = np.empty_like(chunk)
        previous = measured
        for k, point in enumerate(chunk):
            bad = ~np.isfinite(point)
            if bad.any():
                self.interventions["non_finite"] += int(bad.sum())
                point = np.where(bad, previous, point)
            clamped = np.clip(point, self.lower, self.upper)
            if not np.array_equal(clamped, point):
                self.interventions["position_limit"] += 1
            limit = self.max_step if k == 0 else self.max_velocity * dt
            delta = np.clip(clamped - previous, -limit, limit)
            if not np.allclose(delta, clamped - previous):
                self.interventions["max_step" if k == 0 else "velocity_limit"] += 1
            safe[k] = previous + delta
            previous = safe[k]
        return safe

    def filter_point(self, target: np.ndarray, measured: np.ndarray) -> np.ndarray:
        return self.filter_chunk(np.asarray(target)[None], measured, dt=0.0)[0]

    def limit_rate(self, previous_goal: np.ndarray, goal: np.ndarray, dt: float) -> np.ndarray:
        """Move from `previous_goal` towards `goal` no faster than the velocity limits."""
        step = self.max_velocity * dt
        delta = np.asarray(goal) - previous_goal
        if np.any(np.abs(delta) > step):
            self.interventions["velocity_limit"] += 1
        return previous_goal + np.clip(delta, -step, step)

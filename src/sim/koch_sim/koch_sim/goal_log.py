"""Every goal the emulated servos received, on disk, and the offline check that none left the bounds.

The check is independent of the safety filter it audits (`koch_common.safety`): it reads only
what arrived at the servos (the emulator's record, raw ticks) and koch.yaml, so a bug anywhere on
the command path (policy node, chunk transport, driver, bus encoding) shows here.

What the command path promises for the goals the driver writes, once per control period T:
- position inside each joint's limits less the safety margin;
- per write, a step of at most `max_velocity * T` (the driver limits the step per write, not per
  wall-clock second: a late tick moves no further);
- between consecutive steps, a change of at most `max_acceleration * T^2` while the stream is
  regular (writes at most 1.5 T apart); across a longer gap (bus lost, torque off, a stalled host)
  the servo has reached its last goal and stopped, so the next step starts a new run.
Raw goals are whole ticks: each bound gets the rounding of the ticks it compares (half a tick per goal).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from koch_common.robot import RAD_PER_TICK, ArmConfig, SafetyConfig

HEADER = ("monotonic_s", "servo_id", "goal_raw")
REGULAR_GAP_PERIODS = 1.5  # writes further apart than this many periods start a new run


class GoalLogWriter:
    """Appends (monotonic time, servo ID, raw goal) rows to a CSV file, flushed on every `write`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(HEADER)
        self.rows = 0

    def write(self, goals: list[tuple[float, int, int]]) -> None:
        self._csv.writerows((f"{t:.6f}", servo_id, raw) for t, servo_id, raw in goals)
        self._file.flush()
        self.rows += len(goals)

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class GoalRecords:
    time_s: np.ndarray  # (N,) monotonic seconds
    servo_id: np.ndarray  # (N,)
    raw: np.ndarray  # (N,) Goal_Position ticks


def read_goal_log(path: Path | str) -> GoalRecords:
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != HEADER:
        raise ValueError(f"{path} is not a goal log (its first line must be {','.join(HEADER)})")
    body = np.array(rows[1:], dtype=np.float64).reshape(-1, 3)
    return GoalRecords(body[:, 0], body[:, 1].astype(np.int64), body[:, 2].astype(np.int64))


@dataclass
class JointCheck:
    goals: int = 0
    outside_position: int = 0
    outside_velocity: int = 0
    outside_acceleration: int = 0
    worst_position_excess_rad: float = 0.0  # how far the worst goal was past a limit (0: none)
    worst_step_rad: float = 0.0
    worst_step_change_rad: float = 0.0


@dataclass
class GoalCheck:
    period_s: float
    joints: dict[str, JointCheck] = field(default_factory=dict)

    @property
    def goals(self) -> int:
        return sum(j.goals for j in self.joints.values())

    @property
    def outside_any_bound(self) -> int:
        return sum(j.outside_position + j.outside_velocity + j.outside_acceleration for j in self.joints.values())

    def summary(self) -> str:
        bad = {name: j for name, j in self.joints.items() if j.outside_position or j.outside_velocity
               or j.outside_acceleration}
        text = f"{self.goals} goals received, {self.outside_any_bound} outside a bound"
        for name, j in bad.items():
            text += (f"; {name}: {j.outside_position} position (worst {j.worst_position_excess_rad:.4f} rad past), "
                     f"{j.outside_velocity} velocity (worst step {j.worst_step_rad:.4f} rad), "
                     f"{j.outside_acceleration} acceleration (worst step change {j.worst_step_change_rad:.4f} rad)")
        return text


def check_goals(records: GoalRecords, arm: ArmConfig, safety: SafetyConfig) -> GoalCheck:
    """Count the goals outside the position, velocity and acceleration bounds, joint by joint."""
    period = 1.0 / arm.control_rate_hz
    report = GoalCheck(period)
    tick = RAD_PER_TICK
    for index, joint in enumerate(arm.joints):
        mine = records.servo_id == joint.id
        times = records.time_s[mine]
        raw = np.zeros((int(mine.sum()), len(arm.joints)), np.int64)
        raw[:, index] = records.raw[mine]
        position = arm.from_raw(raw)[:, index]
        check = report.joints[joint.name] = JointCheck(goals=len(position))
        if not len(position):
            continue
        lower, upper = joint.lower + safety.position_margin, joint.upper - safety.position_margin
        excess = np.maximum(lower - position, position - upper)
        check.outside_position = int(np.sum(excess > 0.5 * tick + 1e-12))
        check.worst_position_excess_rad = float(max(excess.max(), 0.0))
        steps = np.diff(position)
        limit = joint.max_velocity * period + tick
        check.outside_velocity = int(np.sum(np.abs(steps) > limit + 1e-12))
        check.worst_step_rad = float(np.abs(steps).max(initial=0.0))
        regular = np.diff(times) <= REGULAR_GAP_PERIODS * period
        both = regular[1:] & regular[:-1]  # step k-1 and step k both inside one regular run
        changes = np.diff(steps)[both]
        limit = safety.max_acceleration * period**2 + 2 * tick
        check.outside_acceleration = int(np.sum(np.abs(changes) > limit + 1e-12))
        check.worst_step_change_rad = float(np.abs(changes).max(initial=0.0))
    return report

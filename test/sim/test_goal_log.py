"""The offline check of fault drills: every goal the servos received against koch.yaml's bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from koch_common.robot import RAD_PER_TICK, load_koch
from koch_sim.goal_log import GoalLogWriter, GoalRecords, check_goals, read_goal_log

KOCH = load_koch()
ARM = KOCH.follower
PERIOD = 1.0 / ARM.control_rate_hz


def records(trajectory: np.ndarray, times: np.ndarray | None = None) -> GoalRecords:
    """Goals (T, J) in radians, written once per period to every servo, as raw ticks."""
    steps = len(trajectory)
    times = np.arange(steps) * PERIOD if times is None else times
    raw = ARM.to_raw(trajectory)
    ids = np.array(ARM.ids)
    return GoalRecords(np.repeat(times, len(ids)), np.tile(ids, steps), raw.reshape(-1))


def smooth(steps: int = 200) -> np.ndarray:
    """A motion at a third of each joint's velocity and acceleration limits, inside the margins."""
    t = np.arange(steps) * PERIOD
    middle, half_range = (ARM.lower + ARM.upper) / 2, (ARM.upper - ARM.lower) / 2 - KOCH.safety.position_margin
    amplitude = np.minimum(ARM.max_velocity / 3 / 2.0, KOCH.safety.max_acceleration / 3 / 4.0)  # w = 2 rad/s
    amplitude = np.minimum(amplitude, half_range / 2)
    return middle + np.sin(2.0 * t)[:, None] * amplitude[None, :]


def test_a_motion_inside_every_bound_passes_and_round_trips_through_the_file(tmp_path: Path) -> None:
    goals = records(smooth())
    writer = GoalLogWriter(tmp_path / "goals.csv")
    writer.write(list(zip(goals.time_s.tolist(), goals.servo_id.tolist(), goals.raw.tolist())))
    writer.close()
    read = read_goal_log(tmp_path / "goals.csv")
    np.testing.assert_array_equal(read.raw, goals.raw)
    report = check_goals(read, ARM, KOCH.safety)
    assert report.goals == goals.raw.size and report.outside_any_bound == 0, report.summary()


def test_a_goal_past_the_margin_is_a_position_violation() -> None:
    trajectory = np.zeros((5, len(ARM.joints)))
    trajectory[2:, 0] = ARM.upper[0] - KOCH.safety.position_margin + 3 * RAD_PER_TICK  # slowly: velocity holds
    trajectory[1, 0] = trajectory[2, 0] - 0.02
    report = check_goals(records(trajectory), ARM, KOCH.safety)
    joint = report.joints[ARM.names[0]]
    assert joint.outside_position == 3 and report.outside_any_bound >= 3


def test_one_step_faster_than_max_velocity_is_a_velocity_violation() -> None:
    trajectory = np.zeros((6, len(ARM.joints)))
    trajectory[3:, 1] = ARM.max_velocity[1] * PERIOD * 1.5
    joint = check_goals(records(trajectory), ARM, KOCH.safety).joints[ARM.names[1]]
    assert joint.outside_velocity == 1


def test_a_sudden_reversal_is_an_acceleration_violation_but_not_across_a_pause() -> None:
    step = ARM.max_velocity[2] * PERIOD * 0.9  # inside the velocity limit
    moves = np.array([0.0, step, 2 * step, step])  # +v, +v, then -v: a change of 2v in one period
    trajectory = np.zeros((4, len(ARM.joints)))
    trajectory[:, 2] = moves
    joint = check_goals(records(trajectory), ARM, KOCH.safety).joints[ARM.names[2]]
    assert joint.outside_acceleration == 1 and joint.outside_velocity == 0
    paused = np.array([0.0, 1.0, 2.0, 2.0 + 0.5]) * PERIOD * 4  # the servo stopped between writes
    joint = check_goals(records(trajectory, paused), ARM, KOCH.safety).joints[ARM.names[2]]
    assert joint.outside_acceleration == 0


def test_a_file_that_is_not_a_goal_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a goal log"):
        read_goal_log(tmp_path / "x.csv")

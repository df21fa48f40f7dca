"""The scripted expert that plays the leader arm (ROS-free): a plan of joint positions over time.

Plans are straight tcp lines (jaws pointing down) timed with minimum jerk, solved with the real
geometry's inverse kinematics (koch_common.kinematics.grasp_ik) at a fixed sample rate, and
gripper moves with the arm held still. The leader's gripper closes past the object
(`grip_close`): the follower's gripper, in current-based position mode, stops at the object and
squeezes with its Goal_Current, as on the real arm.

reach: home -> the point above the target. pick_*: open, above the object, down, close, lift;
pick_place then carries the cube over the zone, lowers it, opens and rises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from koch_common.kinematics import grasp_ik, tcp_pose, tcp_position
from koch_common.robot import KochConfig
from koch_sim.layout import Layout, SceneObject
from koch_sim.sim_config import SimConfig, TaskKind, task_kind
from koch_sim.tasks import goal_object

SAMPLE_S = 0.05          # plan resolution; the leader interpolates linearly in between
GRIP_MOVE_S = 0.4        # time for a gripper move with the arm still
TIP_BELOW_TCP = 0.011    # the jaws reach this far below the tcp when pointing down (koch.yaml shapes)
TABLE_CLEARANCE = 0.003
GRIPPER = 5              # joint index of the gripper
STATIC_FACE_FROM_TCP = 0.015  # the static jaw's inner face is this far along the tool's +y (koch.yaml tcp)
JAW_CLEARANCE = 0.004


def min_jerk(start: np.ndarray, goal: np.ndarray, duration: float, t: float) -> np.ndarray:
    s = float(np.clip(t / duration, 0.0, 1.0)) if duration > 0 else 1.0
    blend = 10 * s**3 - 15 * s**4 + 6 * s**5
    return start + (goal - start) * blend


@dataclass
class Plan:
    """Joint vectors (N, 6) at times (N,) from the plan's start (s)."""

    times: list[float] = field(default_factory=list)
    joints: list[np.ndarray] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.times[-1] if self.times else 0.0

    def at(self, t: float) -> np.ndarray:
        if t >= self.times[-1]:
            return self.joints[-1]
        times = np.asarray(self.times)
        i = max(0, int(np.searchsorted(times, t, side="right")) - 1)
        span = times[i + 1] - times[i]
        w = 0.0 if span <= 0 else (t - times[i]) / span
        return (1 - w) * self.joints[i] + w * self.joints[i + 1]


class PlanBuilder:
    def __init__(self, koch: KochConfig, sim: SimConfig, start: np.ndarray) -> None:
        self.koch = koch
        self.sim = sim
        self.lower = np.array(koch.follower.lower)
        self.upper = np.array(koch.follower.upper)
        self.plan = Plan([0.0], [np.array(start, dtype=np.float64)])

    @property
    def q(self) -> np.ndarray:
        return self.plan.joints[-1]

    def _append(self, dt: float, q: np.ndarray) -> None:
        self.plan.times.append(self.plan.times[-1] + dt)
        self.plan.joints.append(q)

    def line(self, target: np.ndarray, grip_yaw: float | None = None, grip: float | None = None,
             duration: float | None = None) -> PlanBuilder:
        """A straight tcp line to `target` (jaws down), the gripper moving to `grip` on the way."""
        start_q = self.q.copy()
        p0 = tcp_position(start_q, self.koch.kinematics)
        target = np.asarray(target, dtype=np.float64)
        e = self.sim.expert
        if duration is None:
            duration = max(e.min_segment_s, float(np.linalg.norm(target - p0)) / e.move_speed)
        steps = max(1, math.ceil(duration / SAMPLE_S))
        q = start_q
        for k in range(1, steps + 1):
            point = min_jerk(p0, target, duration, duration * k / steps)
            q = grasp_ik(point, self.koch.kinematics, q, self.lower, self.upper, grip_yaw)
            if grip is not None:
                q[GRIPPER] = start_q[GRIPPER] + (grip - start_q[GRIPPER]) * k / steps
            self._append(duration / steps, q.copy())
        return self

    def grip(self, value: float) -> PlanBuilder:
        q = self.q.copy()
        q[GRIPPER] = value
        self._append(GRIP_MOVE_S, q)
        return self.hold(self.sim.expert.settle_s)

    def hold(self, seconds: float) -> PlanBuilder:
        self._append(seconds, self.q.copy())
        return self


def grasp_height(obj: SceneObject) -> float:
    """tcp height to grip `obj`: jaws 14 mm down its sides, their tips clear of the table."""
    top = obj.position[2] + obj.half[2]
    return max(top - 0.014, TIP_BELOW_TCP + TABLE_CLEARANCE)


def grip_yaw_for(obj: SceneObject, koch: KochConfig, sim: SimConfig, start: np.ndarray) -> float:
    """Close across one pair of the block's faces: of the two, the one needing the least wrist roll."""
    point = np.array([obj.position[0], obj.position[1], grasp_height(obj)])
    lower, upper = np.array(koch.follower.lower), np.array(koch.follower.upper)
    candidates = [obj.yaw, obj.yaw + math.pi / 2]
    rolls = [abs(grasp_ik(point, koch.kinematics, start, lower, upper, yaw)[4]) for yaw in candidates]
    return candidates[int(np.argmin(rolls))]


def grasp_point(obj: SceneObject, yaw: float, koch: KochConfig, start: np.ndarray) -> np.ndarray:
    """Where the tcp goes to grip `obj` across yaw: the static jaw's face `JAW_CLEARANCE` off the
    object's side (the moving jaw then pushes the object against it)."""
    centre = np.array([obj.position[0], obj.position[1], grasp_height(obj)])
    lower, upper = np.array(koch.follower.lower), np.array(koch.follower.upper)
    q = grasp_ik(centre, koch.kinematics, start, lower, upper, yaw)
    grip_axis = tcp_pose(q, koch.kinematics)[:3, 1]  # the static jaw's face lies along +y of the tool
    half_across = abs(obj.half[0] * math.cos(yaw - obj.yaw)) + abs(obj.half[1] * math.sin(yaw - obj.yaw))
    return centre + (half_across + JAW_CLEARANCE - STATIC_FACE_FROM_TCP) * grip_axis * [1.0, 1.0, 0.0]


def plan_episode(layout: Layout, koch: KochConfig, sim: SimConfig, start: np.ndarray) -> Plan:
    """The expert's whole episode for `layout`, starting from the leader's joint vector `start`."""
    kind = task_kind(layout.task)
    e = sim.expert
    goal = goal_object(layout)
    builder = PlanBuilder(koch, sim, start)
    if kind is TaskKind.REACH:
        point = np.array([*goal.position[:2], sim.tasks.reach.target_height])
        return builder.line(point, duration=1.0).hold(0.2).plan
    yaw = grip_yaw_for(goal, koch, sim, start)
    grasp = grasp_point(goal, yaw, koch, start)
    above = grasp + [0.0, 0.0, e.approach_height]
    builder.line(above, yaw, grip=e.grip_open).line(grasp, yaw).grip(e.grip_close).line(above, yaw)
    if kind is TaskKind.PICK_PLACE:
        zone = layout.find("zone")
        release = np.array([zone.position[0], zone.position[1], grasp[2] + 0.004])
        builder.line(release + [0.0, 0.0, e.approach_height]).line(release).grip(e.grip_open)
        builder.line(release + [0.0, 0.0, e.approach_height])
    return builder.hold(0.3).plan


@dataclass(frozen=True)
class _Motion:
    start: np.ndarray
    goal: np.ndarray
    t0: float
    duration: float
    plan: Plan | None = None


class ScriptedLeader:
    """Leader-arm joint positions over time: hold, move to a pose (minimum jerk), or play a plan.

    A new motion replaces the old one in one assignment, so a timer thread reading `position`
    while a service thread starts a motion never sees half of each.
    """

    def __init__(self, start: np.ndarray) -> None:
        pose = np.array(start, dtype=np.float64)
        self._motion = _Motion(pose, pose, 0.0, 0.0)

    def move_to(self, goal: np.ndarray, now: float, duration: float) -> None:
        self._motion = _Motion(self.position(now), np.array(goal, dtype=np.float64), now, duration)

    def play(self, plan: Plan, now: float) -> None:
        self._motion = _Motion(plan.joints[0], plan.joints[-1], now, plan.duration, plan)

    def position(self, now: float) -> np.ndarray:
        m = self._motion
        if m.plan is not None:
            return m.plan.at(now - m.t0)
        return min_jerk(m.start, m.goal, m.duration, now - m.t0)

    def done(self, now: float) -> bool:
        return now - self._motion.t0 >= self._motion.duration

"""Conversions between driver samples and ROS messages, shared by the driver and teleop nodes."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from koch_driver.trajectory import TimedTrajectory


def to_time_msg(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def from_time_msg(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def joint_state_msg(stamp: float, names: list[str], position: np.ndarray, velocity: np.ndarray,
                    effort: np.ndarray) -> JointState:
    msg = JointState()
    msg.header.stamp = to_time_msg(stamp)
    msg.name = list(names)
    msg.position = [float(v) for v in position]
    msg.velocity = [float(v) for v in velocity]
    msg.effort = [float(v) for v in effort]
    return msg


def trajectory_from_msg(msg: JointTrajectory, order: list[int], now: float) -> TimedTrajectory:
    """Absolute-time trajectory; a zero header stamp means the trajectory starts now."""
    start = from_time_msg(msg.header.stamp) or now
    times = np.array([start + p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
    positions = np.array([[p.positions[i] for i in order] for p in msg.points], dtype=np.float64)
    return TimedTrajectory(times, positions)

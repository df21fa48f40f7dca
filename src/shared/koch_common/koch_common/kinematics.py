"""Forward and inverse kinematics of the Koch arm's positioning chain.

The arm is a pan joint followed by a planar chain (shoulder_lift, elbow_flex, wrist_flex)
in the vertical plane the pan selects. With all angles zero the upper arm points up, the
forearm points forward and the gripper points down. Wrist roll and gripper do not move the
tool centre point (tcp).

This is the closed form of the robot model's chain: koch_bringup's URDF (urdf/koch.urdf, which
robot_state_publisher serves) is generated from the same `kinematics:` lengths and joint
limits in config/koch.yaml, with the pitch joints rotating about +y (REP 103: x forward, z up),
and test/deploy/test_urdf.py checks that the URDF's FK and `chain_points` agree pose by pose.
"""

from __future__ import annotations

import math

import numpy as np

from koch_common.robot import KinematicsConfig


def chain_points(q: np.ndarray, k: KinematicsConfig) -> np.ndarray:
    """Base, shoulder, elbow, wrist and tcp positions (5, 3) in the base frame, metres."""
    pan, lift, elbow, wrist = (float(v) for v in q[:4])
    a1 = math.pi / 2 - lift  # upper arm angle above the horizontal
    a2 = a1 - math.pi / 2 - elbow
    a3 = a2 - math.pi / 2 - wrist
    radial = [0.0, 0.0]
    height = [0.0, k.base_height]
    for length, angle in ((k.upper_arm, a1), (k.forearm, a2), (k.gripper, a3)):
        radial.append(radial[-1] + length * math.cos(angle))
        height.append(height[-1] + length * math.sin(angle))
    c, s = math.cos(pan), math.sin(pan)
    return np.array([[r * c, r * s, z] for r, z in zip(radial, height)])


def tcp_position(q: np.ndarray, k: KinematicsConfig) -> np.ndarray:
    return chain_points(q, k)[-1]


class UnreachableError(ValueError):
    pass


def reach_down_ik(target: np.ndarray, k: KinematicsConfig) -> np.ndarray:
    """Joint angles (pan, lift, elbow, wrist) that put the tcp on `target` pointing down.

    Elbow-up solution of the two-link problem from the shoulder to the wrist point straight
    above the target.
    """
    x, y, z = (float(v) for v in target)
    pan = math.atan2(y, x)
    radial = math.hypot(x, y)
    wrist_r, wrist_z = radial, z + k.gripper - k.base_height
    dist_sq = wrist_r**2 + wrist_z**2
    cos_elbow = (dist_sq - k.upper_arm**2 - k.forearm**2) / (2 * k.upper_arm * k.forearm)
    if not -1.0 <= cos_elbow <= 1.0:
        raise UnreachableError(f"target {target} is out of reach")
    bend = math.acos(cos_elbow)  # interior bend between upper arm and forearm directions
    a1 = math.atan2(wrist_z, wrist_r) + math.atan2(
        k.forearm * math.sin(bend), k.upper_arm + k.forearm * math.cos(bend)
    )
    a2 = a1 - bend
    lift = math.pi / 2 - a1
    elbow = a1 - math.pi / 2 - a2
    wrist = a2 - math.pi / 2 - (-math.pi / 2)
    return np.array([pan, lift, elbow, wrist])

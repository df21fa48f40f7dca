"""Forward and inverse kinematics of the Koch v1.1 follower, from config/koch.yaml's `kinematics:`.

The chain is the published CAD export's: each joint sits at a fixed offset in its parent
link's frame (no rotation) and turns about its own axis. The URDF (koch_bringup.urdf_model) and
the MuJoCo model (koch_sim.mjcf) are written from the same numbers, and a test checks that all
three give the same tool centre point (tcp) for random joint vectors.

The arm has five joints that move the tcp (pan, three pitch joints, wrist roll) and the
gripper's jaw, so a "tool pointing down, jaws across yaw ψ" grasp pose fixes all five: the
inverse kinematics solves it numerically (bounded least squares from a start pose), which
also copes with the CAD's lateral offsets that a planar closed form would ignore.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

from koch_common.robot import KinematicsConfig

# The jaws point along the wrist_roll link's -x; their closing direction is its y.
FINGER_AXIS = np.array([-1.0, 0.0, 0.0])
GRIP_AXIS = np.array([0.0, 1.0, 0.0])
DOWN = np.array([0.0, 0.0, -1.0])
# Orientation residuals are weighted as this many metres per unit of direction error.
ORIENTATION_WEIGHT_M = 0.05
IK_TOLERANCE_M = 1e-3
DOWN_SEED = (-0.35, 0.0, -1.2)  # shoulder_lift, elbow_flex, wrist_flex of a jaws-down pose mid-workspace


class UnreachableError(ValueError):
    pass


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix of `angle` about the unit vector `axis` (Rodrigues)."""
    x, y, z = axis
    skew = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * skew + (1.0 - math.cos(angle)) * (skew @ skew)


def mount(k: KinematicsConfig) -> np.ndarray:
    """Pose (4x4) of the CAD frame in base_link."""
    pose = np.eye(4)
    pose[:3, :3] = rotation(np.array([0.0, 0.0, 1.0]), k.mount_yaw)
    return pose


def link_poses(q: np.ndarray, k: KinematicsConfig) -> list[np.ndarray]:
    """Pose (4x4, base_link frame) of every moving link, in chain order, for joint vector `q`."""
    pose = mount(k)
    poses = []
    for link, angle in zip(k.links, np.asarray(q, dtype=np.float64), strict=False):
        local = np.eye(4)
        local[:3, :3] = rotation(np.asarray(link.axis, dtype=np.float64), float(angle))
        local[:3, 3] = link.origin
        pose = pose @ local
        poses.append(pose)
    return poses


TOOL_LINK = 4  # wrist_roll: the link that carries the static jaw and the tcp


def tcp_pose(q: np.ndarray, k: KinematicsConfig) -> np.ndarray:
    """Pose (4x4, base_link) of the tcp: the wrist_roll link's axes, at the configured tcp point."""
    pose = link_poses(np.asarray(q)[: TOOL_LINK + 1], k)[TOOL_LINK].copy()
    pose[:3, 3] = pose[:3, :3] @ np.asarray(k.tcp) + pose[:3, 3]
    return pose


def tcp_position(q: np.ndarray, k: KinematicsConfig) -> np.ndarray:
    return tcp_pose(q, k)[:3, 3]


def chain_points(q: np.ndarray, k: KinematicsConfig) -> np.ndarray:
    """Base, each positioning joint's origin (pan, lift, elbow, wrist flex, wrist roll) and the tcp: (7, 3)."""
    poses = link_poses(np.asarray(q)[: TOOL_LINK + 1], k)
    return np.array([np.zeros(3), *(p[:3, 3] for p in poses), tcp_position(q, k)])


def grasp_ik(target: np.ndarray, k: KinematicsConfig, start: np.ndarray, lower: np.ndarray,
             upper: np.ndarray, grip_yaw: float | None = None) -> np.ndarray:
    """Joint vector (like `start`, gripper kept) with the tcp on `target`, jaws pointing down.

    `grip_yaw` (rad, about z): the direction the jaws close along, modulo pi; None: any. The
    solution stays within [lower, upper] and starts from `start`, so neighbouring targets give
    neighbouring poses. Raises UnreachableError when the tcp misses by more than 1 mm.
    """
    target = np.asarray(target, dtype=np.float64)
    q = np.array(start, dtype=np.float64)
    active = slice(0, TOOL_LINK + 1)

    def residual(x: np.ndarray) -> np.ndarray:
        q[active] = x
        pose = tcp_pose(q, k)
        finger = pose[:3, :3] @ FINGER_AXIS
        parts = [pose[:3, 3] - target, ORIENTATION_WEIGHT_M * (finger - DOWN)]
        if grip_yaw is not None:
            grip = pose[:3, :3] @ GRIP_AXIS
            # zero when the jaws close along ±(cos ψ, sin ψ): the grip axis's component across it
            across = -math.sin(grip_yaw) * grip[0] + math.cos(grip_yaw) * grip[1]
            parts.append(ORIENTATION_WEIGHT_M * np.array([across]))
        return np.concatenate(parts)

    lo, hi = np.asarray(lower, dtype=np.float64)[active], np.asarray(upper, dtype=np.float64)[active]
    # From the start pose first (continuity); should that end in a local minimum against a joint
    # limit, once more from a neutral jaws-down pose facing the target.
    seeds = [q[active].copy(), np.array([-math.atan2(target[1], target[0]), *DOWN_SEED, q[TOOL_LINK]])]
    for seed in seeds:
        best = least_squares(residual, np.clip(seed, lo + 1e-6, hi - 1e-6), bounds=(lo, hi), xtol=1e-10, ftol=1e-10)
        q[active] = best.x
        miss = float(np.linalg.norm(tcp_position(q, k) - target))
        if miss <= IK_TOLERANCE_M:
            break
    if miss > IK_TOLERANCE_M:
        raise UnreachableError(f"target {np.round(target, 4).tolist()} is out of reach pointing down "
                               f"(best pose misses by {miss * 1000:.1f} mm)")
    return q

"""Renders a camera's view (RGB and registered depth) of the simulated arm and target.

The head camera is a pinhole camera looking straight down at the table; the wrist camera rides
on the gripper and looks along it, so its pose follows the joint state. The arm is drawn from
forward kinematics of the joint state, so the image always agrees with the measured pose; the
target is a red disk. Colour and depth come from one pass over the same primitives, drawn far
to near (painter's algorithm), so an RGB pixel and its depth pixel always show the same thing.
Depth is the z distance along the optical axis in millimetres (`16UC1`, 0 = no return), as a
RealSense publishes it aligned to colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from koch_common.kinematics import chain_points
from koch_common.robot import KinematicsConfig
from koch_sim.sim_config import CameraConfig

TABLE_RGB = (214, 206, 190)
BASE_RGB = (150, 150, 160)
ARM_RGB = (60, 60, 70)
JOINT_RGB = (240, 170, 40)
TARGET_RGB = (220, 30, 30)
MOUNTS = ("head", "wrist")
NEAR_M = 0.02  # geometry closer than this to the lens is not drawn (it would cover the image)
PIECES = 6  # each link is drawn as pieces so its depth varies along it


@dataclass(frozen=True)
class CameraPose:
    """Camera in the world: `rotation` columns are the optical frame's x (right), y (down), z (forward)."""

    position: np.ndarray
    rotation: np.ndarray


# head camera: forward = world -z, image right = world -y, image down = world -x (base at the bottom)
HEAD_ROTATION = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def wrist_pose(points: np.ndarray, pan: float, offset_m: float, tilt_rad: float = 0.35) -> CameraPose:
    """Wrist camera from the chain points: `offset_m` behind the gripper axis at the wrist joint,
    looking along the gripper, tilted by `tilt_rad` towards it so the fingertip is in view."""
    wrist, tcp = points[3], points[4]
    axis = (tcp - wrist) / np.linalg.norm(tcp - wrist)
    right = np.array([-np.sin(pan), np.cos(pan), 0.0])  # horizontal, normal to the arm's plane
    towards_axis = np.cross(axis, right)
    forward = np.cos(tilt_rad) * axis + np.sin(tilt_rad) * towards_axis
    down = np.cross(forward, right)
    return CameraPose(wrist - offset_m * towards_axis, np.stack([right, down, forward], axis=1))


class SceneRenderer:
    def __init__(self, camera: CameraConfig, kinematics: KinematicsConfig, mount: str = "head",
                 wrist_offset_m: float = 0.035) -> None:
        if mount not in MOUNTS:
            raise ValueError(f"camera mount {mount!r} is unknown; use one of {MOUNTS}")
        self.camera = camera
        self.kinematics = kinematics
        self.mount = mount
        self.wrist_offset_m = wrist_offset_m
        self.head_pose = CameraPose(np.asarray(camera.position, dtype=np.float64), HEAD_ROTATION)
        self._head_background = self._draw_table(self.head_pose)

    def camera_matrix(self) -> np.ndarray:
        c = self.camera
        return np.array([[c.focal_px, 0.0, c.width / 2], [0.0, c.focal_px, c.height / 2], [0.0, 0.0, 1.0]])

    def pose(self, joint_positions: np.ndarray) -> CameraPose:
        """Where the camera is for this joint state (fixed for the head, on the gripper for the wrist)."""
        if self.mount == "head":
            return self.head_pose
        q = np.asarray(joint_positions, dtype=np.float64)
        return wrist_pose(chain_points(q, self.kinematics), float(q[0]), self.wrist_offset_m)

    def project(self, points: np.ndarray, pose: CameraPose | None = None) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixel coordinates (N, 2) and depth along the optical axis (N,)."""
        pose = pose or self.head_pose
        cam = (np.atleast_2d(points) - pose.position) @ pose.rotation
        depth = cam[:, 2]
        safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
        u = self.camera.width / 2 + self.camera.focal_px * cam[:, 0] / safe
        v = self.camera.height / 2 + self.camera.focal_px * cam[:, 1] / safe
        return np.stack([u, v], axis=1), depth

    def _table_depth(self, pose: CameraPose) -> np.ndarray:
        """Per-pixel depth (m) of the table plane z = 0; 0 where a pixel's ray misses it."""
        c = self.camera
        u = (np.arange(c.width) + 0.5 - c.width / 2) / c.focal_px
        v = (np.arange(c.height) + 0.5 - c.height / 2) / c.focal_px
        r = pose.rotation
        # world z of the ray (u, v, 1) in the optical frame; depth t solves position_z + t * ray_z = 0
        ray_z = r[2, 0] * u[None, :] + r[2, 1] * v[:, None] + r[2, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -pose.position[2] / ray_z
        return np.where((ray_z < 0) & np.isfinite(t), t, 0.0)

    def _draw_table(self, pose: CameraPose) -> tuple[np.ndarray, np.ndarray]:
        c = self.camera
        depth = np.round(self._table_depth(pose) * 1000.0).clip(0, 65535).astype(np.uint16)
        img = np.empty((c.height, c.width, 3), np.uint8)
        img[:] = TABLE_RGB
        img[depth == 0] = 0  # sky: nothing there
        base_px, base_depth = self.project(np.array([[0.0, 0.0, 0.0]]), pose)
        if base_depth[0] > NEAR_M:
            radius = self._px(0.03, float(base_depth[0]))
            cv2.circle(img, _pt(base_px[0]), radius, BASE_RGB, -1, cv2.LINE_AA)
        return img, depth

    def _px(self, size_m: float, depth_m: float) -> int:
        return max(1, round(self.camera.focal_px * size_m / max(depth_m, NEAR_M)))

    def render(self, joint_positions: np.ndarray, target: np.ndarray | None) -> np.ndarray:
        """RGB image (H, W, 3) uint8 of the arm at `joint_positions` and the target."""
        return self.render_rgbd(joint_positions, target)[0]

    def render_rgbd(self, joint_positions: np.ndarray, target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 and depth (H, W) uint16 millimetres, registered pixel for pixel."""
        q = np.asarray(joint_positions, dtype=np.float64)
        pose = self.pose(q)
        background = self._head_background if self.mount == "head" else self._draw_table(pose)
        img, depth = background[0].copy(), background[1].copy()
        for prim in sorted(self._primitives(q, target, pose), key=lambda p: -p[0]):
            self._draw(img, depth, *prim)
        return img, depth

    def _primitives(self, q: np.ndarray, target: np.ndarray | None, pose: CameraPose) -> list[tuple]:
        """(depth_m, kind, pixels, size_px, rgb) of the target, link pieces and joints in view."""
        prims: list[tuple] = []
        if target is not None:
            px, d = self.project(np.asarray(target, dtype=np.float64)[None], pose)
            if d[0] > NEAR_M:
                prims.append((float(d[0]), "disk", px[0], self._px(0.014, float(d[0])), TARGET_RGB))
        points = chain_points(q, self.kinematics)[1:]
        # the wrist camera rides on the gripper link: it sees the fingertip, not the link it is bolted to
        links = len(points) - 1 if self.mount == "head" else len(points) - 2
        for a, b in list(zip(points[:-1], points[1:]))[:links]:
            fractions = np.linspace(0.0, 1.0, PIECES + 1)
            ends = a[None] + fractions[:, None] * (b - a)[None]
            px, d = self.project(ends, pose)
            for i in range(PIECES):
                if d[i] > NEAR_M and d[i + 1] > NEAR_M:
                    mid = 0.5 * float(d[i] + d[i + 1])
                    prims.append((mid, "line", (px[i], px[i + 1]), self._px(0.018, min(d[i], d[i + 1])), ARM_RGB))
        px, d = self.project(points[1:], pose)
        for pixel, dist in zip(px, d):
            if dist > NEAR_M:
                # joints sit a little in front of the links they connect, so they are drawn on top
                prims.append((float(dist) - 0.005, "disk", pixel, self._px(0.01, float(dist)), JOINT_RGB))
        return prims

    @staticmethod
    def _draw(img: np.ndarray, depth: np.ndarray, dist: float, kind: str, pixels, size: int, rgb) -> None:
        mm = int(np.clip(round(dist * 1000.0), 1, 65535))
        if kind == "disk":
            cv2.circle(img, _pt(pixels), size, rgb, -1, cv2.LINE_AA)
            cv2.circle(depth, _pt(pixels), size, mm, -1, cv2.LINE_8)
        else:
            cv2.line(img, _pt(pixels[0]), _pt(pixels[1]), rgb, size, cv2.LINE_AA)
            cv2.line(depth, _pt(pixels[0]), _pt(pixels[1]), mm, size, cv2.LINE_8)


def _pt(p: np.ndarray) -> tuple[int, int]:
    # clipped so a point far outside the image cannot overflow OpenCV's int coordinates
    return int(np.clip(round(float(p[0])), -1e6, 1e6)), int(np.clip(round(float(p[1])), -1e6, 1e6))

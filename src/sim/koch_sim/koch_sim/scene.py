"""Renders the head camera's view of the simulated arm and target.

A pinhole camera looks straight down at the table. The arm is drawn from forward
kinematics of the joint state, so the image always agrees with the measured pose; the
target is a red disk. Nearer things are drawn larger, which gives the policy a depth cue.
"""

from __future__ import annotations

import cv2
import numpy as np

from koch_common.kinematics import chain_points
from koch_common.robot import KinematicsConfig
from koch_sim.sim_config import CameraConfig

TABLE_RGB = (214, 206, 190)
ARM_RGB = (60, 60, 70)
JOINT_RGB = (240, 170, 40)
TARGET_RGB = (220, 30, 30)


class SceneRenderer:
    def __init__(self, camera: CameraConfig, kinematics: KinematicsConfig) -> None:
        self.camera = camera
        self.kinematics = kinematics
        self._background = self._draw_table()

    def camera_matrix(self) -> np.ndarray:
        c = self.camera
        return np.array([[c.focal_px, 0.0, c.width / 2], [0.0, c.focal_px, c.height / 2], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixel coordinates (N, 2) and depth below the camera (N,)."""
        cam = np.asarray(self.camera.position)
        rel = np.atleast_2d(points) - cam
        depth = -rel[:, 2]
        # Image right = world -y, image down = world -x: the arm's base is at the bottom.
        u = self.camera.width / 2 + self.camera.focal_px * (-rel[:, 1]) / depth
        v = self.camera.height / 2 + self.camera.focal_px * (-rel[:, 0]) / depth
        return np.stack([u, v], axis=1), depth

    def _draw_table(self) -> np.ndarray:
        img = np.empty((self.camera.height, self.camera.width, 3), np.uint8)
        img[:] = TABLE_RGB
        base_px, _ = self.project(np.array([[0.0, 0.0, 0.0]]))
        cv2.circle(img, _pt(base_px[0]), self._px(0.03, 0.0), (150, 150, 160), -1, cv2.LINE_AA)
        return img

    def _px(self, size_m: float, height_m: float) -> int:
        return max(1, round(self.camera.focal_px * size_m / (self.camera.position[2] - height_m)))

    def render(self, joint_positions: np.ndarray, target: np.ndarray | None) -> np.ndarray:
        """RGB image (H, W, 3) uint8 of the arm at `joint_positions` and the target."""
        img = self._background.copy()
        if target is not None:
            px, _ = self.project(np.asarray(target)[None])
            cv2.circle(img, _pt(px[0]), self._px(0.014, float(target[2])), TARGET_RGB, -1, cv2.LINE_AA)
        points = chain_points(np.asarray(joint_positions), self.kinematics)[1:]
        pixels, _ = self.project(points)
        for i in range(len(points) - 1):
            thickness = self._px(0.018, float(max(points[i, 2], points[i + 1, 2])))
            cv2.line(img, _pt(pixels[i]), _pt(pixels[i + 1]), ARM_RGB, thickness, cv2.LINE_AA)
        for point, pixel in zip(points[1:], pixels[1:]):
            cv2.circle(img, _pt(pixel), self._px(0.01, float(point[2])), JOINT_RGB, -1, cv2.LINE_AA)
        return img


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))

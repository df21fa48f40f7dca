"""The simulated camera source: renders the scene from the latest joint state and target."""

from __future__ import annotations

import threading

import numpy as np

from koch_common.robot import load_koch
from koch_sim.scene import SceneRenderer
from koch_sim.sim_config import CameraConfig


class SimSceneSource:
    """Thread-safe holder of the world state the renderer draws."""

    def __init__(self, camera: CameraConfig) -> None:
        self.renderer = SceneRenderer(camera, load_koch().kinematics)
        self._lock = threading.Lock()
        self._joints = np.zeros(6)
        self._target: np.ndarray | None = None

    def set_joints(self, joint_positions: np.ndarray) -> None:
        with self._lock:
            self._joints = np.asarray(joint_positions, dtype=np.float64)

    def set_target(self, target: np.ndarray) -> None:
        with self._lock:
            self._target = np.asarray(target, dtype=np.float64)

    def capture(self) -> np.ndarray:
        with self._lock:
            joints, target = self._joints, self._target
        return self.renderer.render(joints, target)

    def intrinsics(self) -> np.ndarray:
        return self.renderer.camera_matrix()

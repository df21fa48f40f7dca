"""The simulated camera source: renders the scene from the latest joint state and target.

RGB and depth come from one render of one world state and carry one stamp, taken when the
tick fires (the moment the simulated shutter opens), before rendering.
"""

from __future__ import annotations

import threading

import numpy as np

from koch_camera.settings import CameraSettings, Intrinsics, pinhole
from koch_camera.source import Clock, Frame, Pacer
from koch_common.robot import load_koch
from koch_sim.scene import SceneRenderer
from koch_sim.sim_config import CameraConfig, load_sim


def sim_camera_config(settings: CameraSettings | None = None) -> CameraConfig:
    """sim.yaml's camera, at the settings' resolution (focal length scaled with the width)."""
    camera = load_sim().camera
    if settings is None:
        return camera
    if settings.width:
        scale = settings.width / camera.width
        camera.width, camera.height = settings.width, settings.height
        camera.focal_px *= scale
    if settings.focal_px:
        camera.focal_px = settings.focal_px
    camera.fps = settings.fps
    return camera


class SimSceneSource:
    """Thread-safe holder of the world state the renderer draws; paced at the camera's fps."""

    def __init__(self, camera: CameraConfig, mount: str = "head", depth: bool = False,
                 clock: Clock | None = None) -> None:
        self.renderer = SceneRenderer(camera, load_koch().kinematics, mount)
        self.description = f"sim {mount} camera"
        self.with_depth = depth
        self.clock = clock
        self.fps = camera.fps
        self._pacer = Pacer(camera.fps)
        self._lock = threading.Lock()
        self._joints: np.ndarray = np.zeros(6)
        self._target: np.ndarray | None = None

    def set_joints(self, joint_positions: np.ndarray) -> None:
        with self._lock:
            self._joints = np.asarray(joint_positions, dtype=np.float64)

    def set_target(self, target: np.ndarray) -> None:
        with self._lock:
            self._target = np.asarray(target, dtype=np.float64)

    def state(self) -> tuple[np.ndarray, np.ndarray | None]:
        with self._lock:
            return self._joints, self._target

    def capture(self) -> np.ndarray:
        joints, target = self.state()
        return self.renderer.render(joints, target)

    # -- CameraSource --------------------------------------------------------------------------
    def open(self) -> None:
        self._pacer = Pacer(self.fps)

    def read(self) -> Frame:
        sequence = self._pacer.wait()
        stamp = self.clock() if self.clock else 0
        joints, target = self.state()
        color, depth = self.renderer.render_rgbd(joints, target)
        return Frame(color, "rgb8", stamp, sequence, depth if self.with_depth else None)

    def close(self) -> None:
        pass

    def intrinsics(self) -> Intrinsics:
        c = self.renderer.camera
        return pinhole(c.width, c.height, c.focal_px)

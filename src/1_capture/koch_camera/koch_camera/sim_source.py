"""The simulated camera source: renders the MuJoCo scene from the sim's published world state.

The world state (arm joint positions from /sim/joint_states, objects from /sim/objects) is
held here and rendered by koch_sim.render at the camera's rate. RGB and depth come from one
world state and carry one stamp, taken when the tick fires (the moment the simulated shutter
opens), before rendering.
"""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np

from koch_camera.settings import CameraSettings, Intrinsics
from koch_camera.source import Clock, Frame, Pacer
from koch_common.robot import load_koch
from koch_sim.layout import SceneObject
from koch_sim.sim_config import CameraConfig, SimConfig, load_sim


def sim_camera_config(settings: CameraSettings | None = None) -> SimConfig:
    """sim.yaml, with the camera's size, rate and (when set) focal length from the settings.

    A focal length in pixels sets the mount's vertical field of view at that image height.
    """
    sim = load_sim()
    if settings is None:
        return sim
    camera: CameraConfig = sim.camera
    if settings.width:
        camera.width, camera.height = settings.width, settings.height
    camera.fps = settings.fps
    if settings.focal_px:
        fovy = math.degrees(2 * math.atan(camera.height / 2 / settings.focal_px))
        if settings.mount == "head":
            camera = dataclasses.replace(camera, fovy_deg=fovy)
        else:
            camera = dataclasses.replace(camera, wrist_fovy_deg=fovy)
    return dataclasses.replace(sim, camera=camera)


class SimSceneSource:
    """Thread-safe holder of the world state the renderer draws; paced at the camera's fps."""

    def __init__(self, sim: SimConfig, mount: str = "head", depth: bool = False, clock: Clock | None = None) -> None:
        from koch_sim.render import SceneRenderer

        c = sim.camera
        self.renderer = SceneRenderer(load_koch(), sim, mount, c.width, c.height)
        self.description = f"sim {mount} camera"
        self.with_depth = depth
        self.clock = clock
        self.fps = c.fps
        self._pacer = Pacer(c.fps)
        self._lock = threading.Lock()
        self._joints: np.ndarray = np.array(load_koch().home)
        self._objects: tuple[SceneObject, ...] = ()

    def set_joints(self, joint_positions: np.ndarray) -> None:
        with self._lock:
            self._joints = np.asarray(joint_positions, dtype=np.float64)

    def set_objects(self, objects: tuple[SceneObject, ...]) -> None:
        with self._lock:
            self._objects = objects

    def state(self) -> tuple[np.ndarray, tuple[SceneObject, ...]]:
        with self._lock:
            return self._joints, self._objects

    # -- CameraSource --------------------------------------------------------------------------
    def open(self) -> None:
        self._pacer = Pacer(self.fps)

    def read(self) -> Frame:
        sequence = self._pacer.wait()
        stamp = self.clock() if self.clock else 0
        joints, objects = self.state()
        if self.with_depth:
            color, depth = self.renderer.render_rgbd(joints, objects)
            return Frame(color, "rgb8", stamp, sequence, depth)
        return Frame(self.renderer.render_rgb(joints, objects), "rgb8", stamp, sequence, None)

    def close(self) -> None:
        self.renderer.close()

    def intrinsics(self) -> Intrinsics:
        r = self.renderer
        return Intrinsics(r.width, r.height, r.camera_matrix())

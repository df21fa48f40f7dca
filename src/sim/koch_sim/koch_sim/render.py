"""Renders a simulated camera (RGB and registered depth) with MuJoCo, headless (ROS-free).

The renderer builds the very MuJoCo model the sim world steps (koch_sim.mjcf) from the
published world state (the arm's joint positions and the layout's objects at their poses) and
only draws it: no physics runs here. Depth is MuJoCo's linearised z-buffer, the distance
along the optical axis, in millimetres (`16UC1`, 0 = no return), as a RealSense publishes it
aligned to colour. Rendering uses EGL (Mesa's software rasteriser on a machine without a GPU)
unless MUJOCO_GL says otherwise, with shadows off: shadow maps cost ~30x the frame time there.

A MuJoCo GL context belongs to the thread that made it, so the renderer makes its context on
first use, in the thread that renders (the camera node's capture thread).
"""

from __future__ import annotations

from dataclasses import replace

import mujoco  # the GL backend: koch_sim/__init__.py sets MUJOCO_GL (egl) before this import
import numpy as np

from koch_common.robot import KochConfig
from koch_sim.layout import ObjectRole, SceneObject
from koch_sim.mjcf import HEAD_CAMERA, WRIST_CAMERA, camera_intrinsics, object_joint, scene_xml
from koch_sim.sim_config import SimConfig

MOUNTS = (HEAD_CAMERA, WRIST_CAMERA)
NO_RETURN_FRACTION = 0.99  # depth at or beyond this fraction of the far plane is "no return"


def _in_slots(objects: tuple[SceneObject, ...]) -> tuple[SceneObject, ...]:
    """The objects renamed by their place in the layout (`block_0`, `marker_1`, ...). The renderer only
    draws, so names carry nothing for it; pick_color names its cubes by colour, and keyed by those
    names every new layout would be a new model."""
    return tuple(replace(o, name=f"{o.role.value}_{i}") for i, o in enumerate(objects))


def _structure(objects: tuple[SceneObject, ...]) -> tuple[ObjectRole, ...]:
    """What only a new model can change: how many objects there are and what they are. Sizes, colours
    and marker poses change in place (`_restyle`), so a new episode's layout costs no new GL context."""
    return tuple(o.role for o in objects)


class SceneRenderer:
    def __init__(self, koch: KochConfig, sim: SimConfig, mount: str, width: int, height: int) -> None:
        if mount not in MOUNTS:
            raise ValueError(f"camera mount {mount!r} is unknown; use one of {MOUNTS}")
        self.koch = koch
        self.sim = sim
        self.mount = mount
        self.width, self.height = width, height
        self._structure: tuple | None = None
        self._renderer: mujoco.Renderer | None = None
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None

    @property
    def fovy_deg(self) -> float:
        c = self.sim.camera
        return c.fovy_deg if self.mount == HEAD_CAMERA else c.wrist_fovy_deg

    def _build(self, objects: tuple[SceneObject, ...]) -> None:
        self.close()
        model = mujoco.MjModel.from_xml_string(scene_xml(self.koch, self.sim, objects))
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        self.model, self.data = model, mujoco.MjData(model)
        self._renderer = mujoco.Renderer(model, self.height, self.width)
        self._structure = _structure(objects)

    def _restyle(self, objects: tuple[SceneObject, ...]) -> None:
        """Give the objects of this (same-structure) layout their sizes and colours, and the markers,
        fixed geoms of the world body, their poses. A renderer rebuilt per episode takes a new GL
        context (~0.5 s on software Mesa): a gap in every camera stream at each new episode."""
        model = self.model
        assert model is not None
        for obj in objects:
            geom = model.geom(obj.name).id
            model.geom_size[geom] = obj.half
            model.geom_rbound[geom] = float(np.linalg.norm(obj.half))
            model.geom_rgba[geom] = obj.rgba
            if obj.role is ObjectRole.MARKER:
                model.geom_pos[geom] = obj.position
                model.geom_quat[geom] = obj.quaternion

    def pose(self, joints: np.ndarray, objects: tuple[SceneObject, ...]) -> None:
        """Put the model in this world state (built once per set of objects, restyled per layout)."""
        objects = _in_slots(objects)
        if self.model is None or self._structure != _structure(objects):
            self._build(objects)
        self._restyle(objects)  # a few array writes: cheaper than telling whether the layout changed
        assert self.model is not None and self.data is not None
        n = len(self.koch.follower.joints)
        self.data.qpos[:n] = joints
        for obj in objects:
            if obj.role is ObjectRole.BLOCK:
                address = self.model.jnt_qposadr[self.model.joint(object_joint(obj.name)).id]
                self.data.qpos[address : address + 7] = [*obj.position, *obj.quaternion]
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def render_rgbd(self, joints: np.ndarray, objects: tuple[SceneObject, ...]) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 and depth (H, W) uint16 millimetres, registered pixel for pixel."""
        color = self.render_rgb(joints, objects)
        return color, self._render_depth()

    def render_rgb(self, joints: np.ndarray, objects: tuple[SceneObject, ...]) -> np.ndarray:
        """RGB (H, W, 3) uint8 only: a camera without depth does not pay for a second pass."""
        self.pose(np.asarray(joints, dtype=np.float64), objects)
        renderer = self._renderer
        assert renderer is not None
        renderer.update_scene(self.data, camera=self.mount)
        return renderer.render().copy()

    def _render_depth(self) -> np.ndarray:
        """Depth of the pose `render_rgb` set, (H, W) uint16 millimetres."""
        renderer = self._renderer
        assert renderer is not None and self.model is not None
        renderer.enable_depth_rendering()
        renderer.update_scene(self.data, camera=self.mount)
        metres = renderer.render()
        renderer.disable_depth_rendering()
        far = self.model.vis.map.zfar * self.model.stat.extent
        depth = np.where(metres >= NO_RETURN_FRACTION * far, 0.0, np.round(metres * 1000.0))
        return depth.clip(0, 65535).astype(np.uint16)

    def camera_matrix(self) -> np.ndarray:
        return camera_intrinsics(self.fovy_deg, self.width, self.height)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

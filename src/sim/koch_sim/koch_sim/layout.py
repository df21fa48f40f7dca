"""What is on the table in one episode (ROS-free): boxes that physics moves and flat markers it does not.

The sim world builds its MuJoCo model from a layout, publishes the layout's objects as a
`visualization_msgs/MarkerArray` (pose, size, colour: all a renderer needs, and RViz shows it),
and the cameras rebuild the same model from that message, so what is rendered is what is
simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np


class ObjectRole(StrEnum):
    BLOCK = "block"    # a rigid box with a free joint: pushed, gripped, lifted
    MARKER = "marker"  # a flat patch on the table (a target, a zone): seen, never touched


@dataclass(frozen=True)
class SceneObject:
    name: str
    role: ObjectRole
    half: tuple[float, float, float]          # half sizes (m)
    rgba: tuple[float, float, float, float]
    position: tuple[float, float, float]      # centre, base_link frame (m)
    quaternion: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # w x y z
    mass: float = 0.05                        # kg, blocks only

    @property
    def yaw(self) -> float:
        w, x, y, z = self.quaternion
        return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))

    def moved(self, position: np.ndarray, quaternion: np.ndarray) -> SceneObject:
        x, y, z = (float(v) for v in position)
        w, qx, qy, qz = (float(v) for v in quaternion)
        return replace(self, position=(x, y, z), quaternion=(w, qx, qy, qz))


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


@dataclass(frozen=True)
class Layout:
    """One episode's scene: its objects at their start poses and the task text naming the goal."""

    task: str
    seed: int
    text: str
    objects: tuple[SceneObject, ...]

    def find(self, name: str) -> SceneObject:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(f"no object {name!r} in this layout; it has {[o.name for o in self.objects]}")

    @property
    def blocks(self) -> tuple[SceneObject, ...]:
        return tuple(o for o in self.objects if o.role is ObjectRole.BLOCK)

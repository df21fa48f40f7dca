"""The MuJoCo model of the simulated Koch, written from config/koch.yaml and sim.yaml (ROS-free).

One function writes the whole scene: the arm (bodies at the kinematics' joint origins, the
same axes, masses and box shapes as the URDF), one position actuator per servo, the table,
the episode's objects and the two cameras. The sim world steps it; the camera nodes build the
same model from the published layout and only render it.

Servos: a `position` actuator (kp, kv) whose force saturates at the model's stall torque, on a
joint damped by stall torque / no-load speed (the motor's back-EMF: a saturated joint cannot
outrun its no-load speed). The physics (koch_sim.physics) caps the gripper's force at its
Goal_Current in current-based position mode and switches actuators off with Torque_Enable.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np

from koch_common.robot import KochConfig
from koch_sim.layout import ObjectRole, SceneObject
from koch_sim.sim_config import SimConfig

LINK_RGBA = "0.22 0.22 0.25 1"
SERVO_RGBA = "0.12 0.12 0.13 1"
JAW_RGBA = "0.93 0.93 0.9 1"
BASE_RGBA = "0.95 0.62 0.15 1"
TABLE_RGBA = "0.80 0.74 0.64 1"
TABLE_HALF = (0.35, 0.35)
HEAD_CAMERA = "head"
HEAD_XYAXES = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # the head camera's x (image right) and y (image up)
WRIST_CAMERA = "wrist"


def _v(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def body_name(joint: str) -> str:
    return f"{joint}_link"


def object_joint(name: str) -> str:
    return f"{name}_free"


def scene_xml(koch: KochConfig, sim: SimConfig, objects: tuple[SceneObject, ...] = ()) -> str:
    """MJCF text of the arm, table, cameras and `objects` (blocks get free joints, markers are flat patches)."""
    k = koch.kinematics
    physics = sim.physics
    root = ET.Element("mujoco", model="koch_v1_1_sim")
    ET.SubElement(root, "compiler", angle="radian", autolimits="true")
    ET.SubElement(root, "option", timestep=f"{physics.timestep_s:g}", integrator="implicitfast",
                  cone="elliptic", impratio="10")
    visual = ET.SubElement(root, "visual")
    # shadow maps cost ~30x the frame time on a software rasteriser; the cameras do without
    ET.SubElement(visual, "quality", shadowsize="0")
    ET.SubElement(visual, "headlight", ambient="0.4 0.4 0.4", diffuse="0.25 0.25 0.25", specular="0 0 0")
    ET.SubElement(visual, "map", znear="0.01", zfar="5")
    assets = ET.SubElement(root, "asset")
    ET.SubElement(assets, "material", name="matte", specular="0", shininess="0", reflectance="0")
    default = ET.SubElement(root, "default")
    ET.SubElement(default, "geom", material="matte", friction=f"{physics.object_friction:g} 0.005 0.0001",
                  solref="0.004 1", solimp="0.95 0.99 0.001")
    world = ET.SubElement(root, "worldbody")
    ET.SubElement(world, "light", name="top", pos="0.1 0 1.2", dir="0 0 -1", diffuse="0.45 0.45 0.45",
                  specular="0 0 0", castshadow="false")
    ET.SubElement(world, "geom", name="table", type="plane", size=f"{TABLE_HALF[0]} {TABLE_HALF[1]} 0.01",
                  rgba=TABLE_RGBA, friction=f"{physics.table_friction:g} 0.005 0.0001")
    cam = sim.camera
    # MuJoCo cameras look along their -z with +y up: image right = world -y, image up = world +x.
    ET.SubElement(world, "camera", name=HEAD_CAMERA, pos=_v(cam.position), xyaxes=_v(HEAD_XYAXES.ravel()),
                  fovy=f"{cam.fovy_deg:g}")
    _arm(world, koch, sim)
    for obj in objects:
        _object(world, obj)
    actuators = ET.SubElement(root, "actuator")
    for joint in koch.follower.joints:
        servo = physics.servo(joint.model)
        ET.SubElement(actuators, "position", name=joint.name, joint=joint.name, kp=f"{servo.kp:g}",
                      kv=f"{servo.kv:g}", forcerange=f"{-servo.stall_torque_nm:g} {servo.stall_torque_nm:g}",
                      ctrlrange=f"{joint.lower:g} {joint.upper:g}")
    # The simple boxes of neighbouring links overlap where the real servos nest in their brackets.
    contact = ET.SubElement(root, "contact")
    pan, lift, elbow = (body_name(link.joint) for link in k.links[:3])
    for a, b in (("arm_mount", pan), ("arm_mount", lift), (pan, elbow)):
        ET.SubElement(contact, "exclude", body1=a, body2=b)
    return ET.tostring(root, encoding="unicode")


def _arm(world: ET.Element, koch: KochConfig, sim: SimConfig) -> None:
    k = koch.kinematics
    joints = {j.name: j for j in koch.follower.joints}
    mount = ET.SubElement(world, "body", name="arm_mount", euler=f"0 0 {k.mount_yaw:.9f}")
    for shape in k.base.shapes:
        ET.SubElement(mount, "geom", type="box", pos=_v(shape.centre), size=_v(shape.half), rgba=BASE_RGBA)
    parent = mount
    physics = sim.physics
    for index, link in enumerate(k.links):
        joint = joints[link.joint]
        servo = physics.servo(joint.model)
        body = ET.SubElement(parent, "body", name=body_name(link.joint), pos=_v(link.origin))
        ET.SubElement(body, "inertial", pos=_v(link.com), mass=f"{link.mass:g}", diaginertia=_v(link.inertia))
        ET.SubElement(body, "joint", name=link.joint, axis=_v(link.axis), range=f"{joint.lower:g} {joint.upper:g}",
                      damping=f"{servo.back_emf_damping:.6g}", armature=f"{servo.armature:g}",
                      frictionloss=f"{servo.frictionloss:g}")
        for shape in link.shapes:
            attributes = {"type": "box", "pos": _v(shape.centre), "size": _v(shape.half),
                          "rgba": JAW_RGBA if shape.jaw else (SERVO_RGBA if index % 2 else LINK_RGBA)}
            if shape.jaw:
                attributes.update(friction=f"{physics.jaw_friction:g} 0.02 0.0005", condim="4", priority="1")
            ET.SubElement(body, "geom", attributes)
        if index == 4:  # the wrist_roll link carries the static jaw, the tcp and the wrist camera
            ET.SubElement(body, "site", name="tcp", pos=_v(k.tcp), size="0.003", rgba="1 0 0 0.5", group="4")
            _wrist_camera(body, sim)
        parent = body


def _wrist_camera(body: ET.Element, sim: SimConfig) -> None:
    """On the gripper's servo, looking along the jaws (the link's -x), tilted down (-z) to their tips."""
    tilt = math.radians(sim.camera.wrist_tilt_deg)
    up = (-math.sin(tilt), 0.0, math.cos(tilt))
    ET.SubElement(body, "camera", name=WRIST_CAMERA, pos=_v(sim.camera.wrist_position),
                  xyaxes=_v((0.0, 1.0, 0.0, *up)), fovy=f"{sim.camera.wrist_fovy_deg:g}")


def _object(world: ET.Element, obj: SceneObject) -> None:
    rgba = _v(obj.rgba)
    if obj.role is ObjectRole.MARKER:
        # a flat patch lying on the table, visible to the cameras, never in contact
        ET.SubElement(world, "geom", name=obj.name, type="box", pos=_v(obj.position), quat=_v(obj.quaternion),
                      size=_v(obj.half), rgba=rgba, contype="0", conaffinity="0")
        return
    body = ET.SubElement(world, "body", name=obj.name, pos=_v(obj.position), quat=_v(obj.quaternion))
    ET.SubElement(body, "freejoint", name=object_joint(obj.name))
    ET.SubElement(body, "geom", name=obj.name, type="box", size=_v(obj.half), rgba=rgba, mass=f"{obj.mass:g}",
                  condim="4", priority="1")


def head_optical_pose(sim: SimConfig) -> np.ndarray:
    """4x4 world pose of the head camera's optical frame (x right, y down, z along the view), for
    projecting world points into its image (e.g. drawing a path on an evaluation video)."""
    x_axis, up = HEAD_XYAXES
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x_axis, -up, -np.cross(x_axis, up)], axis=1)
    pose[:3, 3] = sim.camera.position
    return pose


def project(points: np.ndarray, camera_pose: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) and depths along the optical axis (N,) of world `points` (N, 3)."""
    local = (np.asarray(points, dtype=np.float64) - camera_pose[:3, 3]) @ camera_pose[:3, :3]
    depth = local[:, 2]
    pixels = (local @ k.T)[:, :2] / depth[:, None]
    return pixels, depth


def camera_intrinsics(fovy_deg: float, width: int, height: int) -> np.ndarray:
    """3x3 pinhole matrix of a MuJoCo camera: square pixels, principal point at the image centre."""
    focal = height / 2 / math.tan(math.radians(fovy_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])

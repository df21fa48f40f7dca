"""The Koch URDF: parses, matches config/koch.yaml, and its forward kinematics is the project's FK."""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from koch_bringup import graph
from koch_bringup.urdf_model import CAMERA_FRAME, default_urdf, link_transforms, parse_joints, urdf_xml
from koch_common.kinematics import chain_points, reach_down_ik, tcp_position
from koch_common.robot import load_koch
from koch_sim.scene import SceneRenderer
from koch_sim.sim_config import load_sim

ROOT = Path(__file__).resolve().parents[2]
URDF_FILE = ROOT / "src/5_deploy/koch_bringup/urdf/koch.urdf"
KOCH = load_koch()
K = KOCH.kinematics
TEXT = URDF_FILE.read_text()


def tcp(q: list[float]) -> np.ndarray:
    return link_transforms(TEXT, dict(zip(KOCH.follower.names, q)))["tcp"][:3, 3]


def test_urdf_parses_into_one_tree_with_a_tcp_frame() -> None:
    root = ET.fromstring(TEXT)
    links = {link.get("name") for link in root.findall("link")}
    joints = parse_joints(TEXT)
    children = [j.child for j in joints.values()]
    assert len(children) == len(set(children)), "a link has two parents"
    assert links - set(children) == {"base_link"}, "base_link is the only root"
    assert {"tcp", CAMERA_FRAME} <= links
    for link in root.findall("link"):
        for visual in link.findall("visual"):
            assert visual.find("geometry") is not None, link.get("name")


def test_the_installed_file_is_the_generated_one() -> None:
    assert default_urdf() == TEXT, "urdf/koch.urdf is stale: run `koch_urdf > src/5_deploy/koch_bringup/urdf/koch.urdf`"
    assert graph.data_file("urdf/koch.urdf").read_text() == TEXT


def test_joint_names_and_limits_match_the_config() -> None:
    movable = {n: j for n, j in parse_joints(TEXT).items() if j.type == "revolute"}
    assert list(movable) == KOCH.follower.names
    for spec in KOCH.follower.joints:
        joint = movable[spec.name]
        assert (joint.lower, joint.upper) == (spec.lower, spec.upper), spec.name
    root = ET.fromstring(TEXT)
    velocities = {j.get("name"): float(j.find("limit").get("velocity")) for j in root.findall("joint")
                  if j.find("limit") is not None}
    assert velocities == {j.name: j.max_velocity for j in KOCH.follower.joints}


def test_zero_angle_is_the_calibrated_raw_zero() -> None:
    # The URDF's q = 0 is koch.yaml's zero_raw tick, with its sign: the driver's radians are URDF angles.
    for arm in (KOCH.follower, KOCH.leader):
        np.testing.assert_array_equal(arm.to_raw(np.zeros(len(arm.joints))), [j.zero_raw for j in arm.joints])
        ticks = arm.to_raw(np.full(len(arm.joints), 0.5))
        assert all(np.sign(t - j.zero_raw) == j.sign for t, j in zip(ticks, arm.joints))


# Hand-computed from koch.yaml: base_height 0.06, upper_arm 0.12, forearm 0.13, gripper 0.07.
KNOWN_POSES = {
    "zero: upper arm up, forearm forward, gripper down": ([0, 0, 0, 0, 0, 0], [0.13, 0.0, 0.11]),
    "pan +90 deg: the same, facing +y": ([math.pi / 2, 0, 0, 0, 0, 0], [0.0, 0.13, 0.11]),
    "elbow -90 deg: forearm up, gripper forward": ([0, 0, -math.pi / 2, 0, 0, 0], [0.07, 0.0, 0.31]),
    "lift +90 deg: upper arm forward, forearm down, gripper back": ([0, math.pi / 2, 0, 0, 0, 0],
                                                                    [0.05, 0.0, -0.07]),
    "wrist -90 deg: gripper forward": ([0, 0, 0, -math.pi / 2, 0, 0], [0.20, 0.0, 0.18]),
    "roll and gripper do not move the tcp": ([0, 0, 0, 0, 1.2, 0.8], [0.13, 0.0, 0.11]),
}


@pytest.mark.parametrize("name", sorted(KNOWN_POSES))
def test_forward_kinematics_of_known_poses(name: str) -> None:
    q, expected = KNOWN_POSES[name]
    assert (K.base_height, K.upper_arm, K.forearm, K.gripper) == (0.06, 0.12, 0.13, 0.07), "update the table"
    np.testing.assert_allclose(tcp(q), expected, atol=1e-9)
    np.testing.assert_allclose(tcp_position(np.array(q), K), expected, atol=1e-9)


def test_project_fk_equals_urdf_fk_on_random_poses() -> None:
    rng = np.random.default_rng(0)
    frames = ["base_link", "upper_arm_link", "forearm_link", "wrist_link", "tcp"]
    for _ in range(200):
        q = rng.uniform(KOCH.follower.lower, KOCH.follower.upper)
        poses = link_transforms(TEXT, dict(zip(KOCH.follower.names, q)))
        np.testing.assert_allclose([poses[f][:3, 3] for f in frames], chain_points(q, K), atol=1e-12)


def test_ik_solution_points_the_urdf_gripper_down_onto_the_target() -> None:
    target = np.array([0.16, 0.05, 0.02])
    q = np.zeros(6)
    q[:4] = reach_down_ik(target, K)
    pose = link_transforms(TEXT, dict(zip(KOCH.follower.names, q)))["tcp"]
    np.testing.assert_allclose(pose[:3, 3], target, atol=1e-9)
    np.testing.assert_allclose(pose[:3, :3] @ [0, 0, -1], [0, 0, -1], atol=1e-9)  # tool axis straight down


def test_camera_optical_frame_projects_like_the_simulated_camera() -> None:
    camera = load_sim().camera
    renderer = SceneRenderer(camera, K)
    optical = link_transforms(TEXT, {})[CAMERA_FRAME]
    points = np.array([[0.1, 0.05, 0.0], [0.2, -0.08, 0.05], [0.13, 0.0, 0.11]])
    in_camera = (np.linalg.inv(optical) @ np.c_[points, np.ones(len(points))].T)[:3].T
    pixels = renderer.camera_matrix() @ (in_camera / in_camera[:, 2:3]).T
    # The URDF stores angles to 6 significant digits: a thousandth of a pixel.
    np.testing.assert_allclose(pixels[:2].T, renderer.project(points)[0], atol=2e-3)


def test_generator_rejects_a_config_whose_joints_are_not_the_koch_chain() -> None:
    koch = load_koch()
    # a copy: load_koch() is cached and shared by every test in the session
    follower = dataclasses.replace(koch.follower, joints=koch.follower.joints[:5])
    five_joints = dataclasses.replace(koch, follower=follower)
    with pytest.raises(ValueError, match="must be"):
        urdf_xml(five_joints)

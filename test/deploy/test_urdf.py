"""The Koch URDF: parses, matches config/koch.yaml, and its forward kinematics is the project's FK."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from koch_bringup import graph
from koch_bringup.urdf_model import CAMERA_FRAME, default_urdf, link_transforms, parse_joints
from koch_common.kinematics import chain_points, grasp_ik
from koch_common.robot import load_koch
from koch_sim.sim_config import load_sim

ROOT = Path(__file__).resolve().parents[2]
URDF_FILE = ROOT / "src/5_deploy/koch_bringup/urdf/koch.urdf"
KOCH = load_koch()
K = KOCH.kinematics
TEXT = URDF_FILE.read_text()


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


def test_project_fk_equals_urdf_fk_on_random_poses() -> None:
    rng = np.random.default_rng(0)
    frames = ["base_link", *(f"{name}_link" for name in KOCH.follower.names[:5]), "tcp"]
    for _ in range(200):
        q = rng.uniform(KOCH.follower.lower, KOCH.follower.upper)
        poses = link_transforms(TEXT, dict(zip(KOCH.follower.names, q)))
        np.testing.assert_allclose([poses[f][:3, 3] for f in frames], chain_points(q, K), atol=1e-8)


def test_ik_solution_points_the_urdf_jaws_down_onto_the_target() -> None:
    target = np.array([0.13, 0.05, 0.02])
    q = grasp_ik(target, K, np.array(KOCH.home), KOCH.follower.lower, KOCH.follower.upper)
    pose = link_transforms(TEXT, dict(zip(KOCH.follower.names, q)))["tcp"]
    np.testing.assert_allclose(pose[:3, 3], target, atol=1e-3)
    np.testing.assert_allclose(pose[:3, :3] @ [-1, 0, 0], [0, 0, -1], atol=0.02)  # the fingers point down


def test_camera_optical_frame_projects_like_the_simulated_camera() -> None:
    """The URDF's head camera frame with MuJoCo's intrinsics puts points where the MuJoCo camera sees them."""
    import mujoco

    from koch_sim.mjcf import camera_intrinsics, scene_xml

    sim = load_sim()
    model = mujoco.MjModel.from_xml_string(scene_xml(KOCH, sim))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    optical = link_transforms(TEXT, {})[CAMERA_FRAME]
    cam = model.camera("head").id
    # MuJoCo's camera looks along its -z with +y up; the optical frame along +z with +y down
    np.testing.assert_allclose(optical[:3, :3], data.cam_xmat[cam].reshape(3, 3) @ np.diag([1, -1, -1]), atol=1e-6)
    np.testing.assert_allclose(optical[:3, 3], data.cam_xpos[cam], atol=1e-9)
    points = np.array([[0.1, 0.05, 0.0], [0.2, -0.08, 0.05]])
    in_camera = (np.linalg.inv(optical) @ np.c_[points, np.ones(len(points))].T)[:3].T
    k = camera_intrinsics(sim.camera.fovy_deg, sim.camera.width, sim.camera.height)
    u, v, _ = k @ (in_camera / in_camera[:, 2:3]).T
    assert np.all((u > 0) & (u < sim.camera.width) & (v > 0) & (v < sim.camera.height))


def test_a_config_whose_joints_are_not_the_kinematic_chain_is_refused() -> None:
    koch = load_koch()
    # a copy: load_koch() is cached and shared by every test in the session
    follower = dataclasses.replace(koch.follower, joints=koch.follower.joints[:5])
    with pytest.raises(ValueError, match="kinematics links .* must name the follower's joints in order"):
        dataclasses.replace(koch, follower=follower, home=koch.home[:5])
    renamed = [dataclasses.replace(j, name=f"j{i}") for i, j in enumerate(koch.follower.joints)]
    with pytest.raises(ValueError, match="must name the follower's joints"):
        dataclasses.replace(koch, follower=dataclasses.replace(koch.follower, joints=renamed))

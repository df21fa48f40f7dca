"""The simulated world's geometry: kinematics, expert and rendered camera agree."""

from __future__ import annotations

import math

import numpy as np
import pytest

from koch_common.kinematics import UnreachableError, chain_points, reach_down_ik, tcp_position
from koch_common.robot import load_koch
from koch_sim.expert import ScriptedLeader, min_jerk, reach_goal
from koch_sim.scene import ARM_RGB, JOINT_RGB, TARGET_RGB, SceneRenderer, wrist_pose
from koch_sim.sim_config import load_sim
from koch_sim.task import sample_target, tcp_distance

KIN = load_koch().kinematics
SIM = load_sim()


def test_zero_pose_is_the_documented_l_shape() -> None:
    points = chain_points(np.zeros(6), KIN)
    # upper arm straight up, forearm forward, gripper straight down
    np.testing.assert_allclose(points[2], [0, 0, KIN.base_height + KIN.upper_arm], atol=1e-12)
    np.testing.assert_allclose(points[3], [KIN.forearm, 0, KIN.base_height + KIN.upper_arm], atol=1e-12)
    np.testing.assert_allclose(points[4], [KIN.forearm, 0, KIN.base_height + KIN.upper_arm - KIN.gripper],
                               atol=1e-12)


def test_pan_rotates_the_arm_about_the_vertical_axis() -> None:
    q = np.array([math.pi / 2, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(tcp_position(q, KIN), [0, KIN.forearm, 0.11], atol=1e-12)


def test_ik_reaches_every_sampled_target_within_joint_limits() -> None:
    arm = load_koch().follower
    rng = np.random.default_rng(7)
    for _ in range(200):
        target = sample_target(rng, SIM.task)
        q = reach_goal(target, KIN, np.zeros(6))
        assert np.linalg.norm(tcp_position(q, KIN) - target) < 1e-9
        assert np.all(q >= arm.lower) and np.all(q <= arm.upper)


def test_unreachable_target_is_refused() -> None:
    with pytest.raises(UnreachableError):
        reach_down_ik(np.array([1.0, 0.0, 0.0]), KIN)


def test_targets_are_far_from_the_start_pose() -> None:
    """Holding the start pose must never count as success, or the baseline is meaningless."""
    rng = np.random.default_rng(0)
    distances = [tcp_distance(np.zeros(6), sample_target(rng, SIM.task), KIN) for _ in range(500)]
    assert min(distances) > 2 * SIM.task.success_distance


def test_min_jerk_starts_and_ends_at_rest() -> None:
    a, b = np.zeros(3), np.ones(3)
    np.testing.assert_allclose(min_jerk(a, b, 2.0, 0.0), a)
    np.testing.assert_allclose(min_jerk(a, b, 2.0, 1.0), 0.5 * b)
    np.testing.assert_allclose(min_jerk(a, b, 2.0, 5.0), b)
    leader = ScriptedLeader(np.zeros(6))
    leader.move_to(np.ones(6), now=10.0, duration=1.0)
    assert not leader.done(10.5) and leader.done(11.0)
    np.testing.assert_allclose(leader.position(11.0), np.ones(6))


def test_rendered_target_appears_where_the_camera_projects_it() -> None:
    renderer = SceneRenderer(SIM.camera, KIN)
    target = np.array([0.2, 0.1, SIM.task.target_height])
    image = renderer.render(np.zeros(6), target)
    assert image.shape == (SIM.camera.height, SIM.camera.width, 3) and image.dtype == np.uint8
    pixels, _ = renderer.project(target[None])
    u, v = pixels[0]
    assert tuple(image[round(v), round(u)]) == TARGET_RGB
    # the red disk moves with the target: nothing red where it used to be
    moved = renderer.render(np.zeros(6), np.array([0.15, -0.1, SIM.task.target_height]))
    assert tuple(moved[round(v), round(u)]) != TARGET_RGB


def test_rendered_arm_follows_the_joint_state() -> None:
    renderer = SceneRenderer(SIM.camera, KIN)
    home = renderer.render(np.zeros(6), None)
    q = np.zeros(6)
    q[0] = 0.6
    panned = renderer.render(q, None)
    assert np.abs(home.astype(int) - panned.astype(int)).sum() > 1000


def test_depth_is_registered_to_the_rgb_render_in_millimetres() -> None:
    renderer = SceneRenderer(SIM.camera, KIN)
    target = np.array([0.2, 0.1, SIM.task.target_height])
    rgb, depth = renderer.render_rgbd(np.zeros(6), target)
    np.testing.assert_array_equal(rgb, renderer.render(np.zeros(6), target))
    assert depth.dtype == np.uint16 and depth.shape == rgb.shape[:2]
    cam_height_mm = round(SIM.camera.position[2] * 1000)
    red = np.all(rgb == TARGET_RGB, axis=2)
    table = np.all(rgb == (214, 206, 190), axis=2)
    assert red.any() and np.all(depth[red] == cam_height_mm - round(target[2] * 1000))
    assert np.all(depth[table] == cam_height_mm)
    # the arm is nearer than the table wherever it is drawn, and the wrist joint at its own depth
    arm = np.all(rgb == ARM_RGB, axis=2) | np.all(rgb == JOINT_RGB, axis=2)
    assert arm.any() and depth[arm].max() < cam_height_mm
    wrist_px, wrist_depth = renderer.project(chain_points(np.zeros(6), KIN)[3][None])
    u, v = np.round(wrist_px[0]).astype(int)
    assert abs(int(depth[v, u]) - wrist_depth[0] * 1000) < 8  # the wrist joint, a sphere


def test_wrist_camera_moves_with_the_arm_and_sees_the_fingertip() -> None:
    renderer = SceneRenderer(SIM.camera, KIN, mount="wrist")
    rng = np.random.default_rng(3)
    for _ in range(5):
        target = sample_target(rng, SIM.task)
        q = reach_goal(target + np.array([0.0, 0.0, 0.04]), KIN, np.zeros(6))
        pose = renderer.pose(q)
        points = chain_points(q, KIN)
        np.testing.assert_allclose(pose.rotation.T @ pose.rotation, np.eye(3), atol=1e-12)
        assert np.linalg.norm(pose.position - points[3]) == pytest.approx(renderer.wrist_offset_m)
        rgb, depth = renderer.render_rgbd(q, target)
        # the fingertip and, 4 cm below it, the target are in view, where the pose projects them
        for point in (points[4], target):
            px, d = renderer.project(point[None], pose)
            u, v = np.round(px[0]).astype(int)
            assert 0 <= u < SIM.camera.width and 0 <= v < SIM.camera.height
            assert abs(int(depth[v, u]) - d[0] * 1000) <= 6  # joints are spheres: 5 mm nearer
    assert not np.array_equal(wrist_pose(chain_points(q, KIN), float(q[0]), 0.03).position,
                              renderer.pose(np.zeros(6)).position)

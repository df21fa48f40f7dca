"""The simulated Koch's physics through the real bus, and its cameras against the world state.

The follower's servos are the Dynamixel emulator over a pty driven by the real dynamixel_sdk
(koch_driver.ArmDriver), with MuJoCo behind them (koch_sim.physics.ServoBridge): what is
checked here is what the driver, and so every node above it, sees.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pytest

from koch_common.dynamixel_models import model_by_name
from koch_common.kinematics import grasp_ik, link_poses
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_driver.driver import ArmDriver
from koch_sim.dxl_emulator import DynamixelBusEmulator
from koch_sim.expert import grasp_point, grip_yaw_for
from koch_sim.layout import Layout
from koch_sim.mjcf import camera_intrinsics, head_optical_pose
from koch_sim.physics import KochPhysics, ServoBridge
from koch_sim.sim_config import load_sim
from koch_sim.tasks import sample_layout

KOCH = load_koch()
SIM = load_sim()
ARM = KOCH.follower
LOWER, UPPER = np.array(ARM.lower), np.array(ARM.upper)
DT = 1.0 / ARM.control_rate_hz
OPEN = 0.9


def _grasp_pose(layout: Layout) -> np.ndarray:
    """The arm around the cube, jaws open, as the expert would reach it."""
    cube = layout.find("cube")
    home = np.array(KOCH.home)
    yaw = grip_yaw_for(cube, KOCH, SIM, home)
    q = grasp_ik(grasp_point(cube, yaw, KOCH, home), KOCH.kinematics, home, LOWER, UPPER, yaw)
    q[5] = OPEN
    return q


class Rig:
    """Physics started in real time, the emulator on a pty, and a driver on it."""

    def __init__(self, tmp_path: Path, layout: Layout, start: np.ndarray) -> None:
        self.physics = KochPhysics(KOCH, SIM, layout, start)
        raw = ARM.to_raw(start)
        self.emulator = DynamixelBusEmulator(
            [(j.id, model_by_name(j.model).model_number) for j in ARM.joints], link_path=str(tmp_path / "follower"),
            initial_positions={j.id: int(r) for j, r in zip(ARM.joints, raw)}, plant=ServoBridge(self.physics, ARM))
        arm = dataclasses.replace(ARM, port=str(tmp_path / "follower"))
        self.driver = ArmDriver(arm, SafetyLimits.for_arm(arm, KOCH.safety), clock=time.monotonic)

    def __enter__(self) -> Rig:
        self.physics.start()
        self.emulator.start()
        self.driver.connect(timeout_s=5.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.driver.close()
        self.emulator.stop()
        self.physics.stop()

    def run(self, target: np.ndarray, seconds: float) -> list:
        """Command `target` at the control rate for `seconds`; the driver's samples."""
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.monotonic()
            self.driver.command_point(target, now)
            sample = self.driver.step(DT)
            assert sample is not None
            samples.append(sample)
            time.sleep(max(0.0, DT - (time.monotonic() - now)))
        return samples

    def grip(self, body: str) -> dict[str, float]:
        """Where each jaw touches `body` now: the contact's position across the static jaw (m)."""
        data, model = self.physics.data, self.physics.model
        jaws = {model.body("wrist_roll_link").id: "static", model.body("gripper_link").id: "moving"}
        across = data.xmat[model.body("wrist_roll_link").id].reshape(3, 3)[:, 1]
        target = model.body(body).id
        touching: dict[str, list[float]] = {}
        for contact in data.contact[: data.ncon]:
            bodies = {model.geom_bodyid[contact.geom1], model.geom_bodyid[contact.geom2]}
            if target in bodies:
                for b in bodies & set(jaws):
                    touching.setdefault(jaws[b], []).append(float(contact.pos @ across))
        return {jaw: float(np.mean(points)) for jaw, points in touching.items()}


def test_gripper_stops_at_the_cube_within_its_goal_current_and_lifts_it(tmp_path: Path) -> None:
    layout = sample_layout("pick_place", 1003, SIM)
    cube = layout.find("cube")
    start = _grasp_pose(layout)
    goal_current_a = ARM.joints[5].goal_current / 1000.0
    with Rig(tmp_path, layout, start) as rig:
        rig.run(start, 0.5)
        closed = start.copy()
        closed[5] = 0.05  # past the cube: only the current limit stops the jaw
        samples = rig.run(closed, 1.5)
        gripper = samples[-1].position[5]
        assert gripper > 0.3, f"the jaw stopped at the cube ({gripper:.3f} rad), not at its goal"
        contacts = rig.grip("cube")
        assert set(contacts) == {"static", "moving"}, "both jaws hold the cube"
        width = contacts["static"] - contacts["moving"]
        assert width == pytest.approx(2 * cube.half[0], abs=0.002), "the jaws stop at the cube's width"
        currents = np.array([abs(s.effort[5]) for s in samples[len(samples) // 2 :]])
        assert currents.max() <= goal_current_a + 1e-3, "the squeeze stays within Goal_Current"
        assert currents.min() > 0.5 * goal_current_a, "and it does squeeze"
        before = rig.physics.state().poses["cube"][0]
        lifted = closed.copy()
        lifted[1:4] = grasp_ik(np.array([*before[:2], before[2] + 0.05]), KOCH.kinematics, samples[-1].position,
                               LOWER, UPPER)[1:4]
        rig.run(lifted, 1.5)
        after = rig.physics.state().poses["cube"][0]
    assert after[2] - before[2] > 0.035, f"the gripped cube rose with the gripper ({after[2] - before[2]:.3f} m)"


def test_a_cube_pushed_by_the_arm_moves(tmp_path: Path) -> None:
    layout = sample_layout("pick_place", 1003, SIM)
    cube = layout.find("cube")
    centre = np.array(cube.position)
    radial = centre[:2] / np.linalg.norm(centre[:2])
    # the closed jaws 4 cm short of the cube (towards the base), low over the table, then swept through it
    near = np.array([*(centre[:2] - 0.045 * radial), 0.02])
    far = np.array([*(centre[:2] + 0.03 * radial), 0.02])
    start = grasp_ik(near, KOCH.kinematics, np.array(KOCH.home), LOWER, UPPER)
    start[5] = 0.0
    end = grasp_ik(far, KOCH.kinematics, start, LOWER, UPPER)
    with Rig(tmp_path, layout, start) as rig:
        rig.run(start, 0.3)
        for w in np.linspace(0, 1, 40):
            rig.run((1 - w) * start + w * end, 0.04)
        rig.run(end, 0.5)
        moved = rig.physics.state().poses["cube"][0]
    assert np.linalg.norm(moved[:2] - centre[:2]) > 0.01, "the arm pushed the cube along the table"


def test_physics_keeps_real_time_across_episodes() -> None:
    """A new layout keeps the simulation clock: nothing is counted as skipped, the factor stays ~1."""
    physics = KochPhysics(KOCH, SIM, sample_layout("pick_color", 1, SIM)).start()
    try:
        time.sleep(1.2)
        for seed in (2, 3):
            physics.load(sample_layout("pick_color", seed, SIM))
            time.sleep(0.6)
        timing = physics.timing()
    finally:
        physics.stop()
    assert timing.skipped_s < 0.05, f"{timing.skipped_s:.3f} s counted as skipped"
    assert physics.state().sim_time == pytest.approx(timing.steps * SIM.physics.timestep_s)
    assert 0.9 < timing.real_time_factor < 1.1


def _project(point: np.ndarray, camera_pose: np.ndarray, k: np.ndarray) -> tuple[int, int, float]:
    """Pixel (u, v) and depth along the optical axis of a world point; pose columns: optical x (right), y (down), z."""
    local = camera_pose[:3, :3].T @ (point - camera_pose[:3, 3])
    u, v, _ = k @ (local / local[2])
    return int(u), int(v), float(local[2])


def _optical_pose(position: np.ndarray, mujoco_axes: np.ndarray) -> np.ndarray:
    """MuJoCo camera axes (x right, y up, looking along -z) -> optical frame (x right, y down, z forward)."""
    pose = np.eye(4)
    pose[:3, :3] = mujoco_axes @ np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = position
    return pose


def _head_pose() -> np.ndarray:
    return _optical_pose(np.array(SIM.camera.position), np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))


def test_the_head_cameras_optical_pose_for_projections_is_the_rendered_one() -> None:
    """koch_sim.mjcf.head_optical_pose (rollout videos draw with it) against this file's own derivation."""
    np.testing.assert_allclose(head_optical_pose(SIM), _head_pose(), atol=1e-12)


def _wrist_pose(q: np.ndarray) -> np.ndarray:
    """From the project's FK and sim.yaml's mount, independently of MuJoCo."""
    link = link_poses(q, KOCH.kinematics)[4]
    tilt = math.radians(SIM.camera.wrist_tilt_deg)
    x, up = np.array([0.0, 1.0, 0.0]), np.array([-math.sin(tilt), 0.0, math.cos(tilt)])
    axes = np.stack([x, up, np.cross(x, up)], axis=1)
    return _optical_pose(link[:3, :3] @ SIM.camera.wrist_position + link[:3, 3], link[:3, :3] @ axes)


@pytest.mark.parametrize("mount", ["head", "wrist"])
def test_images_agree_with_the_world_state_and_depth_measures_the_top_face(mount: str) -> None:
    """Each cube's top-face centre, projected with the camera's pose and intrinsics, shows the cube:
    its colour, and a depth equal to the camera-to-face distance within 2 mm (or the arm, nearer)."""
    from koch_sim.render import SceneRenderer

    width, height = 320, 240
    renderer = SceneRenderer(KOCH, SIM, mount, width, height)
    k = camera_intrinsics(renderer.fovy_deg, width, height)
    np.testing.assert_allclose(renderer.camera_matrix(), k)
    seen = 0
    try:
        for seed in range(4):
            layout = sample_layout("pick_color", seed, SIM)
            q = np.array(KOCH.home)
            if mount == "wrist":  # the jaws 8 cm above the first cube, 2 cm behind it: the cube is in view
                cube = layout.blocks[0]
                q = grasp_ik(np.array([cube.position[0] - 0.02, cube.position[1], 0.08]), KOCH.kinematics, q,
                             LOWER, UPPER)
            pose = _head_pose() if mount == "head" else _wrist_pose(q)
            color, depth = renderer.render_rgbd(q, layout.objects)
            for cube in layout.blocks:
                u, v, distance = _project(np.array(cube.position) + [0.0, 0.0, cube.half[2]], pose, k)
                if not (0 <= u < width and 0 <= v < height):
                    continue
                measured = depth[v, u] / 1000.0
                if abs(measured - distance) > 0.002:
                    # only the arm can come between a camera and a cube's top face here
                    assert 0 < measured < distance - 0.002, (mount, seed, cube.name, measured, distance)
                    continue
                hue = np.asarray(cube.rgba[:3])
                pixel = np.asarray(color[v, u], dtype=float)
                assert np.argmax(pixel) == np.argmax(hue), (mount, seed, cube.name, pixel, hue)
                seen += 1
    finally:
        renderer.close()
    assert seen >= 4, f"only {seen} cube tops were in view and unoccluded"


def test_the_head_camera_shows_each_episodes_target_where_it_lies() -> None:
    """Markers (the reach target, the place zone) move between episodes too: one renderer, several layouts."""
    from koch_sim.render import SceneRenderer

    width, height = 320, 240
    renderer = SceneRenderer(KOCH, SIM, "head", width, height)
    k = camera_intrinsics(renderer.fovy_deg, width, height)
    try:
        for seed in range(1000, 1006):
            target = sample_layout("reach", seed, SIM).find("target")
            color, depth = renderer.render_rgbd(np.array(KOCH.home), (target,))
            u, v, distance = _project(np.array(target.position) + [0.0, 0.0, target.half[2]], _head_pose(), k)
            if abs(depth[v, u] / 1000.0 - distance) > 0.002:
                continue  # under the arm
            red, green, blue = (int(c) for c in color[v, u])
            assert red > 2 * max(green, blue), (seed, color[v, u])
            # and nowhere else: the red pixels are all around the projected centre
            rgb = color.astype(int)
            ys, xs = np.nonzero(rgb[..., 0] > 2 * rgb[..., 1:].max(axis=2))
            assert np.hypot(xs - u, ys - v).max() < 0.03 / distance * k[0, 0]
    finally:
        renderer.close()


def test_a_new_layout_restyles_the_scene_without_a_new_gl_context() -> None:
    """A new episode's layout (other sizes, colours, marker poses) draws exactly what a renderer built
    for it draws, on the same GL context: a rebuild per episode left a gap in every camera stream."""
    from koch_sim.render import SceneRenderer

    width, height = 160, 120
    for task in ("pick_place", "pick_color"):  # pick_color's cubes are named by their colours
        _restyles_in_place(SceneRenderer(KOCH, SIM, "head", width, height), task)


def _restyles_in_place(reused, task: str) -> None:
    from koch_sim.render import SceneRenderer

    width, height = reused.width, reused.height
    try:
        reused.render_rgbd(np.array(KOCH.home), sample_layout(task, 0, SIM).objects)
        context = reused._renderer
        names = {tuple(o.name for o in sample_layout(task, seed, SIM).objects) for seed in range(4)}
        assert task != "pick_color" or len(names) > 1, "the seeds must change the objects' names"
        for seed in (1, 2, 3):
            objects = sample_layout(task, seed, SIM).objects
            fresh = SceneRenderer(KOCH, SIM, "head", width, height)
            try:
                expected = fresh.render_rgbd(np.array(KOCH.home), objects)
            finally:
                fresh.close()
            color, depth = reused.render_rgbd(np.array(KOCH.home), objects)
            assert reused._renderer is context, "a same-structure layout must not rebuild the renderer"
            np.testing.assert_array_equal(color, expected[0])
            np.testing.assert_array_equal(depth, expected[1])
    finally:
        reused.close()

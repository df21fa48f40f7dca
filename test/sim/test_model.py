"""One robot model: koch.yaml's kinematics, the URDF, the MuJoCo model and the IK agree; tasks are seeded."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from koch_bringup.urdf_model import default_urdf, link_transforms
from koch_common.kinematics import UnreachableError, grasp_ik, tcp_pose, tcp_position
from koch_common.robot import load_koch
from koch_sim.expert import plan_episode
from koch_sim.layout import ObjectRole
from koch_sim.mjcf import scene_xml
from koch_sim.sim_config import TaskKind, load_sim
from koch_sim.tasks import block_down_on, goal_object, judge, sample_layout, success_rule

KOCH = load_koch()
K = KOCH.kinematics
SIM = load_sim()
LOWER, UPPER = np.array(KOCH.follower.lower), np.array(KOCH.follower.upper)


def test_urdf_fk_and_mujoco_give_one_tcp_for_random_joint_vectors() -> None:
    model = mujoco.MjModel.from_xml_string(scene_xml(KOCH, SIM))
    data = mujoco.MjData(model)
    urdf = default_urdf()
    rng = np.random.default_rng(0)
    for _ in range(100):
        q = rng.uniform(LOWER, UPPER)
        data.qpos[:6] = q
        mujoco.mj_kinematics(model, data)
        fk = tcp_pose(q, K)
        from_urdf = link_transforms(urdf, dict(zip(KOCH.follower.names, q)))["tcp"]
        np.testing.assert_allclose(data.site("tcp").xpos, fk[:3, 3], atol=1e-3)
        np.testing.assert_allclose(from_urdf[:3, 3], fk[:3, 3], atol=1e-3)
        np.testing.assert_allclose(data.site("tcp").xmat.reshape(3, 3), fk[:3, :3], atol=1e-6)


def test_published_geometry_at_zero_and_the_joint_directions() -> None:
    # All zeros: the CAD pose, upper arm up and forearm + gripper forward: the shoulder-lift axis
    # 56.3 mm above the table, the tcp ~0.21 m forward at the height of the elbow.
    zero = tcp_position(np.zeros(6), K)
    assert zero[0] == pytest.approx(0.208, abs=0.002) and zero[2] == pytest.approx(0.1673, abs=0.001)
    up = tcp_position(np.array([0, 0.5, 0, 0, 0, 0]), K)
    assert up[0] < zero[0] and up[2] > zero[2], "positive lift leans back"
    assert tcp_position(np.array([0, 0, 0.5, 0, 0, 0]), K)[2] < zero[2], "positive elbow bends down"
    assert tcp_position(np.array([0.5, 0, 0, 0, 0, 0]), K)[1] < 0, "positive pan turns right (to -y)"
    np.testing.assert_allclose(tcp_position(np.array([0, 0, 0, 0, 1.0, -1.2]), K)[[0, 2]], zero[[0, 2]], atol=0.02)


@pytest.mark.parametrize("yaw", [None, 0.3, math.pi / 2])
def test_grasp_ik_puts_the_tcp_on_the_target_jaws_down(yaw: float | None) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        r, a = rng.uniform(0.1, 0.15), rng.uniform(-0.8, 0.8)
        target = np.array([r * math.cos(a), r * math.sin(a), rng.uniform(0.015, 0.06)])
        q = grasp_ik(target, K, np.array(KOCH.home), LOWER, UPPER, yaw)
        pose = tcp_pose(q, K)
        np.testing.assert_allclose(pose[:3, 3], target, atol=1e-3)
        np.testing.assert_allclose(pose[:3, :3] @ [-1.0, 0, 0], [0, 0, -1], atol=0.02)  # fingers down
        if yaw is not None:
            grip = pose[:3, 1]
            assert abs(abs(grip[0] * math.cos(yaw) + grip[1] * math.sin(yaw)) - 1) < 1e-3
        assert np.all(q >= LOWER) and np.all(q <= UPPER)


def test_grasp_ik_says_when_a_target_is_out_of_reach() -> None:
    with pytest.raises(UnreachableError, match="out of reach"):
        grasp_ik(np.array([0.4, 0.0, 0.02]), K, np.array(KOCH.home), LOWER, UPPER)


@pytest.mark.parametrize("task", [k.value for k in TaskKind])
def test_layouts_are_seeded_separated_and_planned(task: str) -> None:
    assert sample_layout(task, 5, SIM) == sample_layout(task, 5, SIM)
    assert sample_layout(task, 5, SIM) != sample_layout(task, 6, SIM)
    for seed in range(1000, 1012):
        layout = sample_layout(task, seed, SIM)
        goal_object(layout)
        points = [np.array(o.position[:2]) for o in layout.objects]
        radii = [np.linalg.norm(p) for p in points]
        assert all(SIM.workspace.radius_min - 1e-9 <= r <= SIM.workspace.radius_max + 1e-9 for r in radii)
        assert all(np.linalg.norm(a - b) >= SIM.workspace.min_separation for i, a in enumerate(points)
                   for b in points[i + 1 :])
        for block in layout.blocks:
            assert block.position[2] == pytest.approx(block.half[2])  # resting on the table
        plan_episode(layout, KOCH, SIM, np.array(KOCH.home))  # the expert reaches everything


def test_pick_taller_blocks_look_alike_from_the_head_camera() -> None:
    camera_z = SIM.camera.position[2]
    for seed in range(20):
        a, b = sample_layout("pick_taller", seed, SIM).blocks
        assert a.rgba == b.rgba and a.role is b.role is ObjectRole.BLOCK
        assert abs(a.half[2] - b.half[2]) > 0.005
        # apparent half size of each top face (pinhole): equal, so colour and outline do not tell them apart
        apparent = [o.half[0] / (camera_z - 2 * o.half[2]) for o in (a, b)]
        assert apparent[0] == pytest.approx(apparent[1], rel=1e-9)


def test_pick_color_names_one_of_its_cubes() -> None:
    texts = set()
    for seed in range(30):
        layout = sample_layout("pick_color", seed, SIM)
        goal = goal_object(layout)
        assert goal.name.removeprefix("cube_") in layout.text
        assert len({o.rgba for o in layout.blocks}) == len(layout.blocks) == SIM.tasks.pick_color.cubes
        texts.add(layout.text)
    assert len(texts) > 2


@pytest.mark.parametrize("task", [TaskKind.PICK_COLOR, TaskKind.PICK_TALLER])
def test_the_first_block_the_experts_jaws_come_down_on_is_the_goal(task: TaskKind) -> None:
    """What a rollout reports as the block a policy chose, read off the expert's own tcp path."""
    for seed in range(1000, 1010):
        layout = sample_layout(task, seed, SIM)
        plan = plan_episode(layout, KOCH, SIM, np.array(KOCH.home))
        seen = [block_down_on(layout, layout.objects, tcp_position(plan.at(t), K))
                for t in np.arange(0.0, plan.duration, 0.1)]
        assert seen[0] is None, "home is clear of every block"
        chosen = [name for name in seen if name is not None]
        assert chosen and chosen[0] == goal_object(layout).name
        # over the other block (in xy) but high above it is not "down on" it
        other = next(o for o in layout.blocks if o.name != chosen[0])
        assert block_down_on(layout, layout.objects, np.array([*other.position[:2], 0.12])) is None
        assert block_down_on(layout, layout.objects, np.array([*other.position[:2], 0.03])) == other.name


def test_the_reach_rule_in_words_follows_the_threshold_judge_uses() -> None:
    sim = load_sim(overrides=["tasks.reach.success_distance=0.05"])
    layout = sample_layout(TaskKind.REACH, 1001, sim)
    target = np.asarray(goal_object(layout).position) + [0.0, 0.0, sim.tasks.reach.target_height]
    assert success_rule(TaskKind.REACH, sim)[0] == "tcp within 5 cm of the target"
    assert judge(layout, layout.objects, target + [0.045, 0.0, 0.0], sim).success
    assert not judge(layout, layout.objects, target + [0.055, 0.0, 0.0], sim).success

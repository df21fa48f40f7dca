"""The policy node over real DDS, running a real ACT checkpoint loaded like the robot does.

The checkpoint is a tiny ACT built by the training code on a real LeRobot dataset and
saved in LeRobot's format; it is untrained, so its actions are arbitrary, which is the
point: whatever it outputs, what reaches the driver must stay inside the limits.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import SetBool
from synthetic_reach import HEIGHT, WIDTH, SyntheticDataset
from trajectory_msgs.msg import JointTrajectory

from koch_bringup.ros_session import RosSession, ros_session, wait_for
from koch_common.image_codec import to_fields
from koch_common.policy_runtime import build_policy
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_policy.policy_node import PolicyNode
from kuavo_train.config import DatasetConfig
from kuavo_train.data import load_metadata

KOCH = load_koch()
ARM = KOCH.follower
FPS = 30.0
TINY_ACT = {"chunk_size": 20, "n_action_steps": 10, "dim_model": 32, "n_heads": 2, "dim_feedforward": 64,
            "n_encoder_layers": 1, "n_decoder_layers": 1, "use_vae": False, "dropout": 0.0}


@pytest.fixture(scope="module")
def checkpoint(reach_dataset: SyntheticDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    meta = load_metadata(DatasetConfig(repo_id=reach_dataset.repo_id, root=str(reach_dataset.root)))
    runtime = build_policy("act", TINY_ACT, meta.features, meta.stats,
                           ["observation.state", "observation.images.head"])
    # Large random output weights: the untrained chunk jumps far outside the joint limits.
    import torch

    with torch.no_grad():
        runtime.policy.model.action_head.weight.mul_(200.0)
    path = tmp_path_factory.mktemp("ckpt") / "pretrained_model"
    runtime.save(path)
    return path


class FakeWorld:
    """Publishes the follower state and head image the way the driver and camera do."""

    def __init__(self, ros: RosSession) -> None:
        self.node = ros.node("world")
        self.state_pub = self.node.create_publisher(JointState, "/follower/joint_states", 10)
        self.image_pub = self.node.create_publisher(Image, "/head/color/image_raw", qos_profile_sensor_data)
        self.position = np.array([0.1, 0.2, -0.1, 0.0, 0.0, 0.3])
        fields = to_fields(np.full((HEIGHT, WIDTH, 3), 200, np.uint8), "rgb8")
        self.image = Image(height=fields.height, width=fields.width, encoding="rgb8", step=fields.step,
                           data=fields.data)
        self.publishing = True
        self.node.create_timer(1 / FPS, self.tick)

    def tick(self) -> None:
        if not self.publishing:
            return
        stamp = self.node.get_clock().now().to_msg()
        state = JointState(name=ARM.names, position=[float(v) for v in self.position])
        state.header.stamp = stamp
        self.image.header.stamp = stamp
        self.state_pub.publish(state)
        self.image_pub.publish(self.image)


def _start(ros: RosSession, checkpoint: Path) -> tuple[FakeWorld, list[tuple[float, JointTrajectory]]]:
    ros.add(PolicyNode(context=ros.context, namespace="policy",
                       parameter_overrides=[Parameter("checkpoint", value=str(checkpoint))],
                       cli_args=["--ros-args", "-r", "action_chunk:=/follower/joint_commands"]))
    world = FakeWorld(ros)
    probe = ros.node("probe")
    chunks: list[tuple[float, JointTrajectory]] = []
    probe.create_subscription(JointTrajectory, "/follower/joint_commands",
                              lambda m: chunks.append((time.monotonic(), m)), 100)
    return world, chunks


def _enable(ros: RosSession, on: bool) -> None:
    node = ros.nodes[-1]
    assert ros.call(node, SetBool, "/policy/policy/enable", SetBool.Request(data=on)).success


def test_disabled_node_publishes_nothing_and_enabled_chunks_stay_inside_limits(checkpoint: Path) -> None:
    with ros_session() as ros:
        world, chunks = _start(ros, checkpoint)
        time.sleep(1.0)
        assert chunks == [], "a disabled policy must not command the arm"
        _enable(ros, True)
        wait_for(lambda: len(chunks) > 60, 20.0, "action chunks")
        limits = SafetyLimits.for_arm(ARM, KOCH.safety)
        full = [m for _, m in chunks if len(m.points) > 1]
        assert full, "the model's chunks were published"
        for _, msg in chunks:
            assert list(msg.joint_names) == ARM.names
            positions = np.array([p.positions for p in msg.points])
            assert np.all(positions >= limits.lower - 1e-9) and np.all(positions <= limits.upper + 1e-9)
            assert np.all(np.abs(positions[0] - world.position) <= limits.max_step + 1e-6)
            assert np.all(np.abs(np.diff(positions, axis=0)) <= limits.max_velocity / FPS + 1e-9)
            times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
            np.testing.assert_allclose(times, np.arange(len(times)) / FPS, atol=1e-6)
        # The publish rate is a performance figure (demo and benchmark print it), not asserted here:
        # on a shared CI host the scheduler, not the node, decides it.


def test_stale_observation_holds_the_measured_position_within_two_ticks(checkpoint: Path) -> None:
    with ros_session() as ros:
        world, chunks = _start(ros, checkpoint)
        _enable(ros, True)
        wait_for(lambda: any(len(m.points) > 1 for _, m in chunks), 20.0, "a model chunk")
        world.publishing = False
        stopped = time.monotonic()
        staleness = 0.1  # mapping/koch_sim.yaml max_staleness_s
        wait_for(lambda: chunks[-1][0] > stopped + staleness + 3 / FPS, 5.0, "ticks after staleness")
        holds = [(t, m) for t, m in chunks if t > stopped and len(m.points) == 1]
        assert holds, "a stale observation must produce hold commands"
        first_hold = holds[0][0]
        # generous bound: it catches a node that never notices, not scheduling noise
        assert first_hold - stopped <= staleness + 1.0
        np.testing.assert_allclose(holds[-1][1].points[0].positions, world.position, atol=1e-6)
        assert all(len(m.points) == 1 for t, m in chunks if t > first_hold)

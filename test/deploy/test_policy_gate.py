"""The runner's safety gate (ROS-free): e-stop latch, deadman, and that every command is a SafeChunk."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sensor_msgs.msg import Image

from koch_bringup.ros_session import wait_for
from koch_common.image_codec import to_fields
from koch_common.resample import Align, StreamSpec
from koch_common.robot import load_koch
from koch_common.safety import SafeChunk, SafetyLimits
from koch_policy.gate import GateState, SafetyGate
from koch_policy.policy_node import decode_image
from koch_policy.runner import PolicyRunner, RunnerIntervention, TickKind
from koch_policy.trajectory_cdr import safe_chunk_cdr

KOCH = load_koch()
FPS = 30.0
STREAMS = {"observation.state": StreamSpec("observation.state", Align.HOLD, 0.1)}


def _runner(gate: SafetyGate, predict=lambda obs: np.full((20, 6), 0.05)) -> PolicyRunner:
    return PolicyRunner(predict, STREAMS, SafetyLimits.for_arm(KOCH.follower, KOCH.safety), FPS, 10,
                        clock=lambda: 0.0, gate=gate)


def test_estop_latches_on_the_next_tick_and_holds_the_latched_position_until_reset() -> None:
    gate = SafetyGate()
    runner = _runner(gate)
    try:
        runner.push("observation.state", 0.0, np.zeros(6))
        runner.tick(0.0)
        wait_for(lambda: runner.inferences, 5.0, "inference")
        assert runner.tick(0.001).kind is TickKind.CHUNK
        assert runner.limits.interventions[RunnerIntervention.ESTOP] == 0  # reported before the first one
        assert gate.state(0.0) is GateState.OPEN
        assert gate.estop() and not gate.estop()
        assert gate.state(0.0) is GateState.ESTOP
        out = runner.tick(2 / FPS)
        assert out.kind is TickKind.ESTOP and isinstance(out.command, SafeChunk)
        np.testing.assert_array_equal(out.positions, np.zeros((1, 6)))
        for k in range(3, 30):  # the arm drifts; the hold stays where it latched
            runner.push("observation.state", k / FPS, np.full(6, 0.1))
            out = runner.tick(k / FPS)
            assert out.kind is TickKind.ESTOP
            np.testing.assert_array_equal(out.positions, np.zeros((1, 6)))
        assert gate.reset_estop() and gate.state(30 / FPS) is GateState.OPEN
        out = runner.tick(30 / FPS)
        assert out.kind is not TickKind.ESTOP
        assert runner.limits.interventions[RunnerIntervention.ESTOP] == 28
    finally:
        runner.close()


def test_deadman_holds_until_heartbeats_arrive() -> None:
    gate = SafetyGate(deadman_timeout_s=0.2)
    runner = _runner(gate)
    try:
        runner.push("observation.state", 0.0, np.zeros(6))
        assert runner.tick(0.0).kind is TickKind.DEADMAN
        gate.heartbeat(0.0)
        assert runner.tick(0.05).kind in (TickKind.HOLD, TickKind.CHUNK)
        assert runner.tick(0.3).kind is TickKind.DEADMAN  # heartbeat older than the timeout
        assert gate.state(0.3) is GateState.DEADMAN and gate.state(0.1) is GateState.OPEN
        gate.estop()
        assert gate.state(0.3) is GateState.ESTOP  # the e-stop wins over the deadman
        assert runner.limits.interventions[RunnerIntervention.DEADMAN] == 2
    finally:
        runner.close()
    with pytest.raises(ValueError, match="deadman_timeout_s"):
        SafetyGate(-1.0)


def _published(command: SafeChunk, names: list[str], stamp: tuple[int, int]):
    """The JointTrajectory a subscriber receives from the node's serialized publication."""
    from rclpy.serialization import deserialize_message
    from trajectory_msgs.msg import JointTrajectory

    return deserialize_message(safe_chunk_cdr(command, names, stamp, FPS), JointTrajectory)


def _expected_trajectory(command: SafeChunk, names: list[str], stamp: tuple[int, int]):
    """The JointTrajectory message for a chunk, built with rclpy's message classes: point k due at k/fps
    after the stamp, a one-point hold a tick after it."""
    from array import array

    from builtin_interfaces.msg import Duration, Time
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    count = len(command.positions)
    times = [round(1e9 / FPS)] if count == 1 else [round(k * 1e9 / FPS) for k in range(count)]
    msg = JointTrajectory(joint_names=list(names), points=[
        JointTrajectoryPoint(positions=array("d", p), velocities=array("d", v),
                             time_from_start=Duration(sec=t // 10**9, nanosec=t % 10**9))
        for p, v, t in zip(command.positions, command.velocities(), times)])
    msg.header.stamp = Time(sec=stamp[0], nanosec=stamp[1])
    return msg


def test_only_safe_chunks_become_trajectories_with_increasing_times() -> None:
    with pytest.raises(TypeError, match="SafeChunk"):
        safe_chunk_cdr(np.zeros((3, 6)), KOCH.follower.names, (0, 0), FPS)  # type: ignore[arg-type]
    limits = SafetyLimits.for_arm(KOCH.follower, KOCH.safety)

    hold = _published(limits.hold(np.zeros(6)), KOCH.follower.names, (5, 0))
    assert len(hold.points) == 1 and hold.points[0].time_from_start.nanosec > 0  # never ends at the stamp
    chunk = limits.safe_chunk(np.linspace(0, 0.1, 8)[:, None] * np.ones(6), np.zeros(6), 1 / FPS)
    msg = _published(chunk, KOCH.follower.names, (5, 0))
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
    assert np.all(np.diff(times) > 0)
    assert all(len(p.velocities) == 6 for p in msg.points)


def test_the_published_bytes_are_the_trajectory_message() -> None:
    limits = SafetyLimits.for_arm(KOCH.follower, KOCH.safety)
    rng = np.random.default_rng(0)
    # the points' CDR alignment depends on the names' lengths: both cases
    for names, steps in zip([KOCH.follower.names, ["j"] * 6, ["joint"] * 6] * 2, (10, 7, 1, 20, 3, 2)):
        chunk = limits.safe_chunk(np.cumsum(rng.normal(0, 0.01, (steps, 6)), axis=0), np.zeros(6), 1 / FPS)
        stamp = (int(rng.integers(0, 2**31)), int(rng.integers(0, 10**9)))
        assert _published(chunk, names, stamp) == _expected_trajectory(chunk, names, stamp)


@pytest.mark.parametrize(("encoding", "raw", "millimetres"), [("16UC1", np.uint16(1500), 1500),
                                                              ("32FC1", np.float32(0.75), 750)])
def test_depth_images_decode_to_the_stored_millimetres(encoding: str, raw, millimetres: int) -> None:
    """Live depth is handed to the runtime as the converter stores it (uint16 millimetres, H x W x 1)."""
    fields = to_fields(np.full((4, 5), raw), encoding)
    msg = Image(height=fields.height, width=fields.width, encoding=encoding, step=fields.step, data=fields.data)
    depth = decode_image(msg)
    assert depth.shape == (4, 5, 1) and depth.dtype == np.uint16
    np.testing.assert_array_equal(depth, millimetres)


@pytest.mark.parametrize("joints", [1, 5, 6, 7])
def test_serialized_trajectories_of_any_arm_deserialize_to_the_same_message(joints: int) -> None:
    from array import array

    from builtin_interfaces.msg import Duration, Time
    from rclpy.serialization import deserialize_message
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from koch_policy.trajectory_cdr import joint_trajectory_cdr

    rng = np.random.default_rng(joints)
    for name_length in range(1, 9):  # the names' lengths move the points' 8-byte alignment
        names = [f"{k}" * name_length for k in range(joints)]
        positions, velocities = rng.normal(size=(2, 4, joints))
        times = [0, 33_333_333, 1_066_666_667, 2_000_000_000]
        published = joint_trajectory_cdr((7, 9), names, positions, velocities, times)
        msg = JointTrajectory(joint_names=names, points=[
            JointTrajectoryPoint(positions=array("d", p), velocities=array("d", v),
                                 time_from_start=Duration(sec=t // 10**9, nanosec=t % 10**9))
            for p, v, t in zip(positions, velocities, times)])
        msg.header.stamp = Time(sec=7, nanosec=9)
        assert deserialize_message(published, JointTrajectory) == msg


@pytest.mark.dds
def test_chunk_stamps_follow_the_node_clock_simulated_time_included() -> None:
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock

    from koch_bringup.ros_session import ros_session
    from koch_policy.policy_node import clock_now_ns

    with ros_session() as ros:
        wall = ros.node("wall_clock")
        before = time.time_ns()
        assert before <= clock_now_ns(wall.get_clock()) <= time.time_ns()
        sim = ros.add(Node("sim_clock", context=ros.context,
                           parameter_overrides=[Parameter("use_sim_time", value=True)]))
        clock_pub = ros.node("clock_source").create_publisher(Clock, "/clock", 10)
        simulated = Clock()
        simulated.clock.sec, simulated.clock.nanosec = 42, 7

        def reads_simulated_time() -> bool:
            clock_pub.publish(simulated)
            return clock_now_ns(sim.get_clock()) == 42_000_000_007

        wait_for(reads_simulated_time, 10.0, "the /clock time on a use_sim_time node")

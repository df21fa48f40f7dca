"""Teleoperation over two emulated buses and the real dynamixel_sdk.

The scripted expert moves the leader arm's servos by hand (torque off), the leader driver
reads them, `TeleopMirror` limits the target against the follower's measured pose, and the
follower driver tracks it. Stated tracking error: while the leader moves at up to ~1.2 rad/s,
every follower joint stays within 0.25 rad of the leader pose (the lag is the control period
+ the servo's 50 ms response + the 50 Hz rate limit); once the leader stops, within 0.02 rad.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest

from koch_common.dynamixel_models import model_by_name
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_driver.driver import ArmDriver
from koch_driver.teleop import TeleopMirror
from koch_sim.dxl_emulator import DynamixelBusEmulator
from koch_sim.expert import ScriptedLeader
from koch_sim.leader_arm import LeaderArmEmulator

pytestmark = pytest.mark.dds

KOCH = load_koch()
DT = 1.0 / KOCH.follower.control_rate_hz
TRACKING_ERROR_MOVING = 0.25
TRACKING_ERROR_SETTLED = 0.02


def test_follower_tracks_the_moving_leader(tmp_path: Path) -> None:
    follower_servos = [(j.id, model_by_name(j.model).model_number) for j in KOCH.follower.joints]
    with (
        LeaderArmEmulator(KOCH.leader, link_path=str(tmp_path / "leader")) as leader_arm,
        DynamixelBusEmulator(follower_servos, time_constant_s=0.05, link_path=str(tmp_path / "follower")),
    ):
        leader = ArmDriver(dataclasses.replace(KOCH.leader, port=str(tmp_path / "leader")),
                           SafetyLimits.for_arm(KOCH.leader, KOCH.safety), clock=time.monotonic)
        follower_arm = dataclasses.replace(KOCH.follower, port=str(tmp_path / "follower"))
        follower_limits = SafetyLimits.for_arm(follower_arm, KOCH.safety)
        follower = ArmDriver(follower_arm, follower_limits, clock=time.monotonic)
        leader.connect(timeout_s=5.0)
        follower.connect(timeout_s=5.0)
        # Leader: every joint free to move by hand, the gripper holds like a spring trigger.
        torque = [leader_arm.emulator.read_field(i, "Torque_Enable") for i in KOCH.leader.ids]
        assert torque == [0, 0, 0, 0, 0, 1]
        assert leader_arm.emulator.read_field(6, "Operating_Mode") == 5
        mirror = TeleopMirror(KOCH.leader, follower_arm, follower_limits)

        home = np.zeros(6)  # where both emulated arms start
        expert = ScriptedLeader(home)
        goal = np.array([0.6, -0.5, 0.7, -0.6, 0.8, 0.8])
        start = time.monotonic()
        target = goal
        expert.move_to(target, start, 1.2)
        errors_moving: list[float] = []
        follower_state = follower.step(DT)
        previous, catching_up_until, stalls = start, 0.0, 0
        settle_until = None
        while settle_until is None or time.monotonic() < settle_until:
            now = time.monotonic()
            if now - previous > 3 * DT:
                # The host stalled this loop (shared CI cores): the control rate was not held, so
                # the next 0.3 s are a catch-up, not tracking at the control rate; they are not scored.
                catching_up_until, stalls = now + 0.3, stalls + 1
            previous = now
            if expert.done(now) and settle_until is None:
                # Back and forth until enough cycles were scored on a busy host, ending on `goal`.
                if target is goal and (len(errors_moving) >= 30 or now - start > 30.0):
                    settle_until = now + 1.0
                else:
                    target = home if target is goal else goal
                    expert.move_to(target, now, 1.2)
            leader_arm.impose(expert.position(now))
            leader_state = leader.step(DT)
            assert leader_state is not None
            measured = None if follower_state is None else follower_state.position
            follower.command_point(mirror.target(leader_state.position, measured), now)
            follower_state = follower.step(DT)
            assert follower_state is not None
            if not expert.done(now) and now >= catching_up_until:
                errors_moving.append(np.abs(follower_state.position - leader_state.position).max())
            time.sleep(max(0.0, DT - (time.monotonic() - now)))
        settled = np.abs(follower_state.position - goal).max()
        print(f"teleop tracking: max error moving {max(errors_moving):.3f} rad over {len(errors_moving)} "
              f"cycles ({stalls} host stalls skipped), settled {settled:.4f} rad")
        assert len(errors_moving) >= 10, "too few cycles at the control rate to judge tracking"
        assert max(errors_moving) < TRACKING_ERROR_MOVING
        assert settled < TRACKING_ERROR_SETTLED
        # The trigger springs back: squeezed by hand, released, it returns to its rest (its goal).
        rest = leader_arm.emulator.read_field(6, "Goal_Position")
        leader_arm.emulator.set_present_position(6, rest + 400)
        assert leader_arm.emulator.read_field(6, "Present_Current") < 0  # pushing back against the hand
        time.sleep(0.5)
        assert abs(leader_arm.emulator.read_field(6, "Present_Position") - rest) <= 2
        leader.close()
        follower.close()


def test_scripted_expert_drives_the_follower_through_an_emulated_leader_bus_over_dds(tmp_path: Path) -> None:
    """The real-robot topology: expert -> leader servos -> leader driver -> teleop -> follower driver."""
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from visualization_msgs.msg import MarkerArray

    from koch_bringup.ros_session import ros_session, wait_for
    from koch_driver.driver_node import DriverNode
    from koch_driver.teleop_node import TeleopNode
    from koch_sim.scripted_leader_node import ScriptedLeaderNode
    from koch_sim.sim_config import load_sim
    from koch_sim.tasks import sample_layout
    from koch_sim.world_msgs import objects_to_markers

    # Drivers built in this process keep the test process's CPUs (a node takes the CPU budget's otherwise).
    these_cpus = Parameter("cpus", value=sorted(os.sched_getaffinity(0)))

    follower_servos = [(j.id, model_by_name(j.model).model_number) for j in KOCH.follower.joints]
    leader_link, follower_link = str(tmp_path / "leader"), str(tmp_path / "follower")
    with (
        DynamixelBusEmulator(follower_servos, time_constant_s=0.05, link_path=follower_link),
        ros_session() as ros,
    ):
        ros.add(ScriptedLeaderNode(context=ros.context, namespace="leader", cli_args=[
            "--ros-args", "-r", "objects:=/sim/objects", "-r", "task:=/sim/task"],
            parameter_overrides=[Parameter("leader_port_link", value=leader_link), Parameter("task", value="reach")]))
        ros.add(DriverNode(context=ros.context, namespace="leader", parameter_overrides=[
            Parameter("arm", value="leader"), Parameter("port", value=leader_link), these_cpus]))
        ros.add(DriverNode(context=ros.context, namespace="follower",
                           parameter_overrides=[Parameter("port", value=follower_link), these_cpus]))
        ros.add(TeleopNode(context=ros.context, cli_args=[
            "--ros-args", "-r", "leader_joint_states:=/leader/joint_states",
            "-r", "follower_joint_states:=/follower/joint_states",
            "-r", "follower_commands:=/follower/joint_commands"]))
        probe = ros.node("probe")
        leader_states: list[JointState] = []
        follower_states: list[JointState] = []
        probe.create_subscription(JointState, "/leader/joint_states", leader_states.append, 50)
        probe.create_subscription(JointState, "/follower/joint_states", follower_states.append, 50)
        layout = sample_layout("reach", 7, load_sim())
        objects_pub = probe.create_publisher(MarkerArray, "/sim/objects", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        task_pub = probe.create_publisher(String, "/sim/task", latched)
        task_pub.publish(String(data=layout.text))
        wait_for(lambda: leader_states and follower_states, 15.0, "leader and follower joint states")
        home = np.array(leader_states[-1].position)

        def run_expert() -> bool:
            objects_pub.publish(objects_to_markers(layout.objects, probe.get_clock().now().to_msg()))
            return ros.call(probe, Trigger, "/leader/scripted_leader/run_expert", Trigger.Request()).success

        wait_for(run_expert, 10.0, "the expert knowing the scene")
        wait_for(lambda: np.abs(np.array(leader_states[-1].position) - home).max() > 0.3, 10.0, "leader moving")

        def settled() -> bool:  # the expert's 1 s reach is over and the follower caught up
            if len(leader_states) < 3:
                return False
            leader_still = np.allclose(leader_states[-1].position, leader_states[-3].position, atol=1e-4)
            return leader_still and np.allclose(follower_states[-1].position, leader_states[-1].position, atol=0.02)

        wait_for(settled, 15.0, "the follower reaching the leader's final pose")
        np.testing.assert_allclose(follower_states[-1].position, leader_states[-1].position, atol=0.02)

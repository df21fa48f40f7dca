"""Driver and teleop nodes over real DDS, on the emulated servo bus."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from koch_bringup.ros_session import RosSession, publish_until, ros_session, wait_for
from koch_common.dynamixel_models import model_by_name
from koch_common.robot import load_koch
from koch_driver.driver_node import DriverNode
from koch_driver.teleop_node import TeleopNode
from koch_sim.dxl_emulator import HW_OVERLOAD, DynamixelBusEmulator

pytestmark = pytest.mark.dds

ARM = load_koch().follower
# Drivers built in this process keep the test process's CPUs (a node takes the CPU budget's otherwise).
THESE_CPUS = Parameter("cpus", value=sorted(os.sched_getaffinity(0)))
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def emulator(tmp_path: Path):
    servos = [(j.id, model_by_name(j.model).model_number) for j in ARM.joints]
    with DynamixelBusEmulator(servos, time_constant_s=0.05, link_path=str(tmp_path / "follower")) as em:
        yield em


def _trajectory(positions: list[list[float]], times: list[float]) -> JointTrajectory:
    msg = JointTrajectory()
    msg.joint_names = list(reversed(ARM.names))  # order must not matter
    for pos, t in zip(positions, times):
        point = JointTrajectoryPoint(positions=list(reversed(pos)))
        point.time_from_start.sec = int(t)
        point.time_from_start.nanosec = int((t - int(t)) * 1e9)
        msg.points.append(point)
    return msg


def _start_driver(ros: RosSession, port: Path) -> tuple[list[JointState], Publisher]:
    """The follower driver on `port`, and a probe recording its states and sending commands."""
    ros.add(DriverNode(context=ros.context, namespace="follower",
                       parameter_overrides=[Parameter("port", value=str(port)), THESE_CPUS]))
    probe = ros.node("probe")
    states: list[JointState] = []
    probe.create_subscription(JointState, "/follower/joint_states", states.append, 50)
    return states, probe.create_publisher(JointTrajectory, "/follower/joint_commands", 10)


def _watch_diagnostics(ros: RosSession) -> tuple[Node, list[DiagnosticArray]]:
    probe = ros.node("diag_probe")
    diagnostics: list[DiagnosticArray] = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 50)
    return probe, diagnostics


def test_driver_publishes_states_and_follows_a_trajectory(emulator, tmp_path: Path) -> None:
    with ros_session() as ros:
        states, command_pub = _start_driver(ros, tmp_path / "follower")
        wait_for(lambda: len(states) > 5, 10.0, "joint states")

        count = len(states)
        # the loop keeps running (rates are benchmark figures, not asserted on a shared CI host)
        wait_for(lambda: len(states) > count + 20, 10.0, "more joint states")
        stamps = [s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in states]
        assert np.all(np.diff(stamps) > 0), "joint states must be stamped at read time, increasing"
        assert list(states[-1].name) == ARM.names

        goal = [0.4, 0.3, -0.3, 0.2, 0.1, 0.5]
        wait_for(lambda: command_pub.get_subscription_count() > 0, 5.0, "driver subscription")
        publish_until(command_pub, _trajectory([[0.2, 0.15, -0.15, 0.1, 0.05, 0.25], goal], [0.5, 1.0]),
                      lambda: np.allclose(states[-1].position, goal, atol=0.01), 10.0, "arm reaching the goal",
                      every=4.0)
        # the servos settle on the goal in raw ticks too (the published state may lead the emulator's present
        # position by a control period on a busy host)
        def servos_at_goal() -> bool:
            raw = emulator.present_positions()
            return bool(np.allclose(ARM.from_raw(np.array([raw[i] for i in ARM.ids])), goal, atol=0.01))

        wait_for(servos_at_goal, 2.0, "the servos' raw present positions at the goal")


def test_driver_never_commands_outside_the_joint_limits(emulator, tmp_path: Path) -> None:
    with ros_session() as ros:
        states, command_pub = _start_driver(ros, tmp_path / "follower")
        wait_for(lambda: states and command_pub.get_subscription_count() > 0, 10.0, "driver")

        def goal_rad() -> np.ndarray:
            return ARM.from_raw(np.array([emulator.read_field(j.id, "Goal_Position") for j in ARM.joints]))

        start = np.array(states[-1].position)
        publish_until(command_pub, _trajectory([[9.0, -9.0, 9.0, -9.0, 9.0, 9.0]], [0.0]),
                      lambda: states[-1].position[0] > start[0] + 0.05, 10.0, "the arm moving to the clipped target")
        def settled() -> bool:
            before = goal_rad()
            time.sleep(0.3)
            return bool(np.allclose(goal_rad(), before, atol=1e-3))

        wait_for(settled, 15.0, "the arm settling on the limits")
        assert np.all(goal_rad() <= ARM.upper + 1e-3) and np.all(goal_rad() >= ARM.lower - 1e-3)
        assert np.all(np.abs(np.array(states[-1].position)) <= np.maximum(np.abs(ARM.upper), np.abs(ARM.lower)) + 1e-3)

        held = goal_rad()
        # the first command arrived, so writer and reader are matched: this one arrives too, and is rejected
        command_pub.publish(_trajectory([[0.0, 0.0, 0.0, 0.0, 0.0, float("nan")]], [0.0]))
        time.sleep(1.0)
        np.testing.assert_allclose(goal_rad(), held, atol=2e-3, err_msg="a chunk holding a NaN is rejected whole")


def test_teleop_mirrors_the_leader_onto_the_follower(emulator, tmp_path: Path) -> None:
    with ros_session() as ros:
        ros.add(DriverNode(context=ros.context, namespace="follower",
                           parameter_overrides=[Parameter("port", value=str(tmp_path / "follower")), THESE_CPUS]))
        ros.add(TeleopNode(context=ros.context, cli_args=[
            "--ros-args", "-r", "leader_joint_states:=/leader/joint_states",
            "-r", "follower_commands:=/follower/joint_commands"]))
        probe = ros.node("probe")
        states: list[JointState] = []
        probe.create_subscription(JointState, "/follower/joint_states", states.append, 50)
        leader_pub = probe.create_publisher(JointState, "/leader/joint_states", 10)
        wait_for(lambda: states and leader_pub.get_subscription_count() > 0, 10.0, "teleop")
        leader = [-0.3, 0.2, 0.1, -0.2, 0.0, 0.3]
        # The driver's velocity limit paces the motion by its loop; a loaded CI host runs that loop slowly.
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not np.allclose(states[-1].position, leader, atol=0.01):
            leader_pub.publish(JointState(name=ARM.names, position=leader))
            time.sleep(1 / 30)
        np.testing.assert_allclose(states[-1].position, leader, atol=0.01)


def test_driver_node_survives_an_unplug_and_reconnects(emulator, tmp_path: Path) -> None:
    with ros_session() as ros:
        states, _ = _start_driver(ros, tmp_path / "follower")
        probe, diagnostics = _watch_diagnostics(ros)
        wait_for(lambda: len(states) > 3, 10.0, "joint states")
        emulator.unplug()

        def bus_reported(level: bytes, text: str, since: int) -> bool:
            return any(s.level == level and s.name.endswith("follower bus") and text in s.message
                       for d in diagnostics[since:] for s in d.status)

        wait_for(lambda: bus_reported(DiagnosticStatus.ERROR, "disconnected", 0), 10.0, "disconnected in /diagnostics")
        seen = len(diagnostics)
        emulator.replug()
        count = len(states)
        wait_for(lambda: len(states) > count + 3, 15.0, "joint states again after the reconnect")
        wait_for(lambda: bus_reported(DiagnosticStatus.OK, "ok", seen), 10.0, "bus ok again in /diagnostics")
        reconnects = [v.value for d in diagnostics for s in d.status for v in s.values if v.key == "reconnects"]
        assert reconnects[-1] == "1"


def test_driver_reports_hardware_errors_and_serves_torque_reboot_hold(emulator, tmp_path: Path) -> None:
    with ros_session() as ros:
        states, _ = _start_driver(ros, tmp_path / "follower")
        probe, diagnostics = _watch_diagnostics(ros)
        point_pub = probe.create_publisher(JointState, "/follower/joint_position_command", 10)
        wait_for(lambda: states and point_pub.get_subscription_count() > 0, 10.0, "driver")

        # single-point streaming
        goal = [0.2, -0.1, 0.3, 0.0, -0.2, 0.1]
        publish_until(point_pub, JointState(name=ARM.names, position=goal),
                      lambda: np.allclose(states[-1].position, goal, atol=0.01), 10.0, "streamed point reached")

        emulator.set_hardware_error(3, HW_OVERLOAD)

        def servo3_error() -> bool:
            return any(s.level == DiagnosticStatus.ERROR and "ID 3" in s.name and "overload error" in s.message
                       for d in diagnostics for s in d.status)

        wait_for(servo3_error, 10.0, "overload on ID 3 in /diagnostics")
        reply = ros.call(probe, Trigger, "/follower/koch_driver/reboot", Trigger.Request())
        assert reply.success and "[3]" in reply.message, reply.message
        assert emulator.read_field(3, "Hardware_Error_Status") == 0
        assert emulator.read_field(3, "Torque_Enable") == 1

        reply = ros.call(probe, SetBool, "/follower/koch_driver/torque", SetBool.Request(data=False))
        assert reply.success
        assert [emulator.read_field(i, "Torque_Enable") for i in ARM.ids] == [0] * 6
        reply = ros.call(probe, SetBool, "/follower/koch_driver/torque", SetBool.Request(data=True))
        assert reply.success and emulator.read_field(1, "Torque_Enable") == 1
        reply = ros.call(probe, Trigger, "/follower/koch_driver/hold", Trigger.Request())
        assert reply.success and reply.message.startswith("holding")


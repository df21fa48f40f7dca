"""Driver, teleop and camera nodes over real DDS, on the emulated servo bus."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PointStamped
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from koch_bringup.ros_session import RosSession, ros_session, wait_for
from koch_camera.camera_node import CameraNode
from koch_common.dynamixel_models import model_by_name
from koch_common.image_codec import from_fields
from koch_common.robot import load_koch
from koch_driver.driver_node import DriverNode
from koch_driver.teleop_node import TeleopNode
from koch_sim.dxl_emulator import DynamixelBusEmulator

ARM = load_koch().follower
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
                       parameter_overrides=[Parameter("port", value=str(port))]))
    probe = ros.node("probe")
    states: list[JointState] = []
    probe.create_subscription(JointState, "/follower/joint_states", states.append, 50)
    return states, probe.create_publisher(JointTrajectory, "/follower/joint_commands", 10)


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
        command_pub.publish(_trajectory([[0.2, 0.15, -0.15, 0.1, 0.05, 0.25], goal], [0.5, 1.0]))
        wait_for(lambda: np.allclose(states[-1].position, goal, atol=0.01), 5.0, "arm reaching the goal")
        # the servos hold the goal in raw ticks too
        raw = emulator.present_positions()
        np.testing.assert_allclose(ARM.from_raw(np.array([raw[i] for i in ARM.ids])), goal, atol=0.01)


def test_driver_never_commands_outside_the_joint_limits(emulator, tmp_path: Path) -> None:
    with ros_session() as ros:
        states, command_pub = _start_driver(ros, tmp_path / "follower")
        wait_for(lambda: states and command_pub.get_subscription_count() > 0, 10.0, "driver")
        command_pub.publish(_trajectory([[9.0, -9.0, 9.0, -9.0, 9.0, float("nan")]], [0.0]))
        time.sleep(2.0)
        goals = np.array([emulator.read_field(j.id, "Goal_Position") for j in ARM.joints])
        goal_rad = ARM.from_raw(goals)
        assert np.all(goal_rad <= ARM.upper + 1e-3) and np.all(goal_rad >= ARM.lower - 1e-3)
        assert abs(goal_rad[5]) < 1e-3, "a NaN target holds the joint where it was"
        assert np.all(np.abs(np.array(states[-1].position)) <= ARM.upper + 1e-3)


def test_teleop_mirrors_the_leader_onto_the_follower(emulator, tmp_path: Path) -> None:
    with ros_session() as ros:
        ros.add(DriverNode(context=ros.context, namespace="follower",
                           parameter_overrides=[Parameter("port", value=str(tmp_path / "follower"))]))
        ros.add(TeleopNode(context=ros.context, cli_args=[
            "--ros-args", "-r", "leader_joint_states:=/leader/joint_states",
            "-r", "follower_commands:=/follower/joint_commands"]))
        probe = ros.node("probe")
        states: list[JointState] = []
        probe.create_subscription(JointState, "/follower/joint_states", states.append, 50)
        leader_pub = probe.create_publisher(JointState, "/leader/joint_states", 10)
        wait_for(lambda: states and leader_pub.get_subscription_count() > 0, 10.0, "teleop")
        leader = [-0.3, 0.2, 0.1, -0.2, 0.0, 0.3]
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not np.allclose(states[-1].position, leader, atol=0.01):
            leader_pub.publish(JointState(name=ARM.names, position=leader))
            time.sleep(1 / 30)
        np.testing.assert_allclose(states[-1].position, leader, atol=0.01)


def test_sim_camera_publishes_rgb_images_with_capture_stamps_and_camera_info() -> None:
    with ros_session() as ros:
        ros.add(CameraNode(context=ros.context, namespace="head", cli_args=[
            "--ros-args", "-r", "joint_states:=/follower/joint_states", "-r", "target:=/sim/target"]))
        probe = ros.node("probe")
        images: list[Image] = []
        infos: list[CameraInfo] = []
        probe.create_subscription(Image, "/head/color/image_raw", images.append, qos_profile_sensor_data)
        probe.create_subscription(CameraInfo, "/head/color/camera_info", infos.append, qos_profile_sensor_data)
        target_pub = probe.create_publisher(PointStamped, "/sim/target", LATCHED)
        target_pub.publish(PointStamped())
        wait_for(lambda: len(images) > 3, 10.0, "images")
        count = len(images)
        wait_for(lambda: len(images) > count + 10, 10.0, "more images")
        image = images[-1]
        assert image.encoding == "rgb8"
        array = from_fields(image.height, image.width, image.encoding, image.step, bytes(image.data))
        assert array.shape == (image.height, image.width, 3)
        stamps = [i.header.stamp.sec + i.header.stamp.nanosec * 1e-9 for i in images]
        assert np.all(np.diff(stamps) > 0)
        assert infos and infos[-1].width == image.width and infos[-1].k[0] > 0
        image_stamps = {(i.header.stamp.sec, i.header.stamp.nanosec) for i in images}
        assert any((i.header.stamp.sec, i.header.stamp.nanosec) in image_stamps for i in infos), \
            "CameraInfo carries the stamp of the image it describes"

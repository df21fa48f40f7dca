"""rclpy node around ArmDriver: `joint_states` out, `joint_commands` (JointTrajectory) in."""

from __future__ import annotations

import dataclasses

from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from koch_common.node_runner import run_node
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_driver.bus import BusError
from koch_driver.driver import ArmDriver
from koch_driver.ros_convert import joint_state_msg, trajectory_from_msg


class DriverNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("koch_driver", **kwargs)
        arm_name = self.declare_parameter("arm", "follower").value
        koch = load_koch()
        configured = getattr(koch, arm_name)
        # A copy: the loaded config is cached and shared, so parameters must not mutate it.
        arm = dataclasses.replace(
            configured,
            port=self.declare_parameter("port", configured.port).value,
            baudrate=self.declare_parameter("baudrate", configured.baudrate).value,
        )
        rate = self.declare_parameter("control_rate_hz", arm.control_rate_hz).value
        torque = self.declare_parameter("torque_enable", arm_name == "follower").value
        connect_timeout = self.declare_parameter("connect_timeout_s", 10.0).value
        self.driver = ArmDriver(arm, SafetyLimits.for_arm(arm, koch.safety), torque_enable=torque,
                                clock=self.now)
        self.driver.connect(timeout_s=connect_timeout)
        self.get_logger().info(f"{arm_name} arm on {arm.port}: {len(arm.joints)} servos, torque {torque}")
        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.create_subscription(JointTrajectory, "joint_commands", self.on_command, 10)
        self.period = 1.0 / rate
        self.bus_errors = 0
        self.create_timer(self.period, self.on_tick)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_command(self, msg: JointTrajectory) -> None:
        if not msg.points:
            self.driver.hold()
            return
        try:
            trajectory = trajectory_from_msg(msg, self.driver.joint_order(list(msg.joint_names)), self.now())
        except ValueError as err:
            self.get_logger().error(f"rejected joint command: {err}")
            return
        self.driver.command(trajectory, self.now())

    def on_tick(self) -> None:
        try:
            state = self.driver.step(self.period)
        except BusError as err:
            # A transient bus error must not kill the driver: the servos keep their last goal
            # (hold) and the next cycle tries again; no joint state is published for this one.
            self.bus_errors += 1
            self.get_logger().warning(f"bus error #{self.bus_errors}: {err}", throttle_duration_sec=1.0)
            return
        self.state_pub.publish(
            joint_state_msg(state.stamp, state.names, state.position, state.velocity, state.effort)
        )

    def destroy_node(self) -> None:
        self.driver.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(DriverNode, args)

"""Teleoperation: the follower mirrors the leader arm's joint states.

Each leader sample becomes a single-point JointTrajectory for the follower ("go there now"),
limited by `TeleopMirror` against the follower's latest joint state (max relative target);
the follower driver applies the same limits again and its velocity limit (defence in depth).
"""

from __future__ import annotations

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from koch_common.node_params import declare_settings
from koch_common.node_runner import run_node
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_driver.settings import TeleopSettings
from koch_driver.teleop import TeleopMirror


class TeleopNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("koch_teleop", **kwargs)
        declare_settings(self, TeleopSettings)  # none: both arms and the limits come from koch.yaml
        koch = load_koch()
        self.mirror = TeleopMirror(koch.leader, koch.follower, SafetyLimits.for_arm(koch.follower, koch.safety))
        self.follower_position: np.ndarray | None = None
        self.command_pub = self.create_publisher(JointTrajectory, "follower_commands", 10)
        self.create_subscription(JointState, "leader_joint_states", self.on_leader, 10)
        self.create_subscription(JointState, "follower_joint_states", self.on_follower, 10)

    def on_follower(self, msg: JointState) -> None:
        try:
            order = self.mirror.order(list(msg.name))
        except ValueError:
            return
        self.follower_position = np.array([msg.position[i] for i in order])

    def on_leader(self, msg: JointState) -> None:
        try:
            order = self.mirror.order(list(msg.name))
        except ValueError as err:
            self.get_logger().error(str(err), throttle_duration_sec=2.0)
            return
        target = self.mirror.target(np.array([msg.position[i] for i in order]), self.follower_position)
        # A zero header stamp and time_from_start mean "go there now" to the driver.
        command = JointTrajectory()
        command.joint_names = list(self.mirror.follower_names)
        command.points = [JointTrajectoryPoint(positions=[float(v) for v in target])]
        self.command_pub.publish(command)


def main(args: list[str] | None = None) -> None:
    run_node(TeleopNode, args)

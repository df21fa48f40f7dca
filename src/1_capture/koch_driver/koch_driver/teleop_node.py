"""Teleoperation: the follower mirrors the leader arm's joint states.

Each leader sample becomes a single-point JointTrajectory for the follower; the follower
driver's safety limits (max step from present, velocity) bound how fast it may follow.
"""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from koch_common.node_runner import run_node


class TeleopNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("koch_teleop", **kwargs)
        self.command_pub = self.create_publisher(JointTrajectory, "follower_commands", 10)
        self.create_subscription(JointState, "leader_joint_states", self.on_leader, 10)

    def on_leader(self, msg: JointState) -> None:
        # A zero header stamp and time_from_start mean "go there now" to the driver.
        command = JointTrajectory()
        command.joint_names = list(msg.name)
        command.points = [JointTrajectoryPoint(positions=list(msg.position))]
        self.command_pub.publish(command)


def main(args: list[str] | None = None) -> None:
    run_node(TeleopNode, args)

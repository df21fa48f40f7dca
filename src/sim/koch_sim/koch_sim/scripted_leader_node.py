"""The scripted expert as a leader arm: publishes leader joint states at a fixed rate.

`~/go_home` moves the leader to the home pose, `~/reach` to the pose that puts the tcp on
the current target (from the sim's target topic). Teleop mirrors it onto the follower.

With `leader_port_link` set, the expert instead moves an emulated leader arm (six XL330-M077
behind a pty linked there, see `koch_sim.leader_arm`) by hand, and a leader driver
(`driver` with arm:=leader on that port) publishes the leader's joint states, as on the robot.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from koch_common.node_params import declare_settings
from koch_common.node_runner import run_node
from koch_common.robot import load_koch
from koch_sim.expert import HOME, ScriptedLeader, reach_goal
from koch_sim.leader_arm import LeaderArmEmulator
from koch_sim.settings import ScriptedLeaderSettings
from koch_sim.sim_config import load_sim

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class ScriptedLeaderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("scripted_leader", **kwargs)
        # Every parameter, its default and description: koch_sim.settings.ScriptedLeaderSettings.
        settings = declare_settings(self, ScriptedLeaderSettings)
        self.koch = load_koch()
        self.task = load_sim().task
        self.reach_duration = (self.task.reach_duration_s if settings.reach_duration_s is None
                               else settings.reach_duration_s)
        self.home_duration = settings.home_duration_s
        self.leader = ScriptedLeader(HOME)
        link = settings.leader_port_link
        self.leader_bus: LeaderArmEmulator | None = None
        if link:
            self.leader_bus = LeaderArmEmulator(self.koch.leader, link_path=link).start()
            self.get_logger().info(f"leader servos emulated on {self.leader_bus.port} (linked at {link})")
        self.target: np.ndarray | None = None
        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.create_subscription(PointStamped, "target", self.on_target, LATCHED)
        self.create_service(Trigger, "~/go_home", self.on_go_home)
        self.create_service(Trigger, "~/reach", self.on_reach)
        self.create_timer(1.0 / settings.rate_hz, self.on_tick)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_target(self, msg: PointStamped) -> None:
        self.target = np.array([msg.point.x, msg.point.y, msg.point.z])

    def on_go_home(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.leader.move_to(HOME, self.now(), self.home_duration)
        response.success = True
        response.message = f"moving home over {self.home_duration:.2f} s"
        return response

    def on_reach(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.target is None:
            response.success = False
            response.message = "no target received yet on the target topic"
            return response
        now = self.now()
        goal = reach_goal(self.target, self.koch.kinematics, self.leader.position(now))
        self.leader.move_to(goal, now, self.reach_duration)
        response.success = True
        response.message = f"reaching {self.target.round(3).tolist()} over {self.reach_duration:.2f} s"
        return response

    def on_tick(self) -> None:
        now = self.now()
        if self.leader_bus is not None:
            self.leader_bus.impose(self.leader.position(now))  # the leader driver reads and publishes
            return
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = self.koch.leader.names
        msg.position = [float(v) for v in self.leader.position(now)]
        self.state_pub.publish(msg)


    def destroy_node(self) -> None:
        if self.leader_bus is not None:
            self.leader_bus.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(ScriptedLeaderNode, args)

"""The scripted expert as a leader arm: publishes leader joint states at a fixed rate.

`~/go_home` moves the leader to koch.yaml's home pose; `~/run_expert` plans the task's whole
demonstration (koch_sim.expert) from the scene as the sim publishes it (`objects`, a
MarkerArray, and the `task` text) and plays it. Teleop mirrors the leader onto the follower,
so the demonstration reaches the simulated arm through the driver and the servo bus.

With `leader_port_link` set, the expert instead moves an emulated leader arm (six XL330-M077
behind a pty linked there, see `koch_sim.leader_arm`) by hand, and a leader driver
(`driver` with arm:=leader on that port) publishes the leader's joint states, as on the robot.
"""

from __future__ import annotations

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from koch_common.kinematics import UnreachableError
from koch_common.node_params import declare_settings
from koch_common.node_runner import run_node
from koch_common.robot import load_koch
from koch_sim.expert import ScriptedLeader, plan_episode
from koch_sim.layout import Layout, SceneObject
from koch_sim.leader_arm import LeaderArmEmulator
from koch_sim.settings import ScriptedLeaderSettings
from koch_sim.sim_config import load_sim, task_kind
from koch_sim.world_msgs import markers_to_objects

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class ScriptedLeaderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("scripted_leader", **kwargs)
        # Every parameter, its default and description: koch_sim.settings.ScriptedLeaderSettings.
        settings = declare_settings(self, ScriptedLeaderSettings)
        self.koch = load_koch()
        self.sim = load_sim()
        self.task = task_kind(settings.task or self.sim.task)
        self.home_duration = settings.home_duration_s
        self.leader = ScriptedLeader(np.array(self.koch.home))
        link = settings.leader_port_link
        self.leader_bus: LeaderArmEmulator | None = None
        if link:
            self.leader_bus = LeaderArmEmulator(self.koch.leader, link_path=link,
                                                initial=np.array(self.koch.home)).start()
            self.get_logger().info(f"leader servos emulated on {self.leader_bus.port} (linked at {link})")
        self.objects: tuple[SceneObject, ...] = ()
        self.text = ""
        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.create_subscription(MarkerArray, "objects", self.on_objects, 10)
        self.create_subscription(String, "task", self.on_task, LATCHED)
        # Planning a pick takes a few hundred ms of inverse kinematics: the services run beside the
        # timer (two executor threads), so the leader's joint states never pause while it plans.
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/go_home", self.on_go_home, callback_group=services)
        self.create_service(Trigger, "~/run_expert", self.on_run_expert, callback_group=services)
        self.create_timer(1.0 / settings.rate_hz, self.on_tick, callback_group=MutuallyExclusiveCallbackGroup())

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_objects(self, msg: MarkerArray) -> None:
        self.objects = markers_to_objects(msg)

    def on_task(self, msg: String) -> None:
        self.text = msg.data

    def on_go_home(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.leader.move_to(np.array(self.koch.home), self.now(), self.home_duration)
        response.success = True
        response.message = f"moving home over {self.home_duration:.2f} s"
        return response

    def on_run_expert(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self.objects or not self.text:
            response.success = False
            response.message = "no scene yet: nothing received on the objects and task topics"
            return response
        layout = Layout(self.task.value, -1, self.text, self.objects)
        try:
            plan = plan_episode(layout, self.koch, self.sim, self.leader.position(self.now()))
        except (UnreachableError, KeyError, ValueError) as err:
            response.success = False
            response.message = f"no plan for this scene: {err}"
            return response
        self.leader.play(plan, self.now())
        response.success = True
        response.message = f"{self.task.value}: {self.text!r}, {plan.duration:.2f} s"
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
    run_node(ScriptedLeaderNode, args, threads=2)

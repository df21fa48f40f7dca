"""The simulated world: the follower arm's servos behind a pseudo-terminal, and the target.

The Dynamixel emulator serves the follower's six servos on a pty linked at
`follower_port_link`; the driver opens that path like a USB serial adapter. `~/new_episode`
places a new target drawn from the seeded generator and publishes it (latched) on `target`.
`~/unplug` (SetBool: true pulls the USB cable, false plugs it back in) and the `goal_log`
parameter (every goal the servos receive, to a CSV file) serve fault drills.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_srvs.srv import SetBool, Trigger

from koch_common.dynamixel_models import model_by_name
from koch_common.node_params import declare_settings
from koch_common.node_runner import run_node
from koch_common.robot import load_koch
from koch_sim.dxl_emulator import DynamixelBusEmulator
from koch_sim.goal_log import GoalLogWriter
from koch_sim.settings import SimWorldSettings
from koch_sim.sim_config import load_sim
from koch_sim.task import sample_target

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SimWorldNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_world", **kwargs)
        # Every parameter, its default and description: koch_sim.settings.SimWorldSettings.
        settings = declare_settings(self, SimWorldSettings)
        sim = load_sim()
        self.task = sim.task
        link = sim.emulator.follower_port_link if settings.follower_port_link is None else settings.follower_port_link
        tau = sim.emulator.time_constant_s if settings.time_constant_s is None else settings.time_constant_s
        self.rng = np.random.default_rng(settings.seed)
        arm = load_koch().follower
        self.emulator = DynamixelBusEmulator(
            [(j.id, model_by_name(j.model).model_number) for j in arm.joints], time_constant_s=tau, link_path=link
        )
        self.goal_log: GoalLogWriter | None = None
        if settings.goal_log:
            self.emulator.record_goals()
            self.goal_log = GoalLogWriter(settings.goal_log)
            self.create_timer(0.2, self.write_goals)
        self.emulator.start()
        self.get_logger().info(f"follower servos emulated on {self.emulator.port} (linked at {link})")
        self.target_pub = self.create_publisher(PointStamped, "target", LATCHED)
        self.create_service(Trigger, "~/new_episode", self.on_new_episode)
        self.create_service(SetBool, "~/unplug", self.on_unplug)
        self.target = sample_target(self.rng, self.task)
        self.publish_target()

    def publish_target(self) -> None:
        msg = PointStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "base_link"
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in self.target)
        self.target_pub.publish(msg)

    def on_new_episode(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.target = sample_target(self.rng, self.task)
        self.publish_target()
        response.success = True
        response.message = " ".join(f"{v:.4f}" for v in self.target)
        return response

    def on_unplug(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        unplugged = self.emulator.unplugged
        if request.data and not unplugged:
            self.emulator.unplug()
        elif not request.data and unplugged:
            self.emulator.replug()
        response.success = True
        response.message = "unplugged" if request.data else f"plugged in at {self.emulator.port}"
        return response

    def write_goals(self) -> None:
        if self.goal_log is not None:
            self.goal_log.write(self.emulator.take_goals())

    def destroy_node(self) -> None:
        self.emulator.stop()
        if self.goal_log is not None:
            self.write_goals()
            self.goal_log.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(SimWorldNode, args)

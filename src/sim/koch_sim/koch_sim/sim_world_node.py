"""The simulated world: MuJoCo physics behind the follower's servo bus, and the task's scene.

The Dynamixel emulator serves the follower's six servos on a pty linked at
`follower_port_link`; the driver opens that path like a USB serial adapter, and the servos'
motion comes from the MuJoCo model (koch_sim.physics), stepped in real time. The world state
goes out for the simulated cameras and RViz: `joint_states` (the arm as simulated) and
`objects` (a MarkerArray of the scene's objects at their poses), both at
physics.world_state_rate_hz. `task` (latched std_msgs/String, repeated every second) carries
the episode's task text for the recorder and the converter. `~/new_episode` lays out the next seeded episode
(seed, seed + 1, ...; the response names the seed) around the arm where it stands.
`/diagnostics` reports the real-time factor and any simulated time skipped because the host
could not keep up. `~/unplug` (SetBool) and `goal_log` serve fault drills.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import MarkerArray

from koch_common.cpu_budget import place_this_process
from koch_common.dynamixel_models import model_by_name
from koch_common.node_params import declare_settings
from koch_common.node_runner import run_node
from koch_common.robot import load_koch
from koch_sim.dxl_emulator import DynamixelBusEmulator
from koch_sim.goal_log import GoalLogWriter
from koch_sim.physics import KochPhysics, ServoBridge
from koch_sim.settings import SimWorldSettings
from koch_sim.sim_config import load_sim, task_kind
from koch_sim.tasks import sample_layout
from koch_sim.world_msgs import objects_to_markers

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Below this real-time factor the diagnostics say WARN: the simulated robot is slower than a real one.
RTF_WARN = 0.95


class SimWorldNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_world", **kwargs)
        # Every parameter, its default and description: koch_sim.settings.SimWorldSettings.
        settings = declare_settings(self, SimWorldSettings)
        self.get_logger().info(place_this_process(SimWorldSettings.CPU_ROLE, settings.cpus, 0))
        self.sim = load_sim()
        self.koch = load_koch()
        self.task = task_kind(settings.task or self.sim.task)
        link = settings.follower_port_link or self.sim.emulator.follower_port_link
        self.seed = settings.seed
        self.episode = 0
        self.reported_skip_s = 0.0
        layout = sample_layout(self.task, self.seed, self.sim)
        self.physics = KochPhysics(self.koch, self.sim, layout)
        self.simulated = settings.physics
        arm = self.koch.follower
        home_raw = arm.to_raw(np.array(self.koch.home))
        self.emulator = DynamixelBusEmulator(
            [(j.id, model_by_name(j.model).model_number) for j in arm.joints], link_path=link,
            initial_positions={j.id: int(raw) for j, raw in zip(arm.joints, home_raw)},
            time_constant_s=self.sim.emulator.time_constant_s,
            plant=ServoBridge(self.physics, arm) if self.simulated else None)
        self.goal_log: GoalLogWriter | None = None
        if settings.goal_log:
            self.emulator.record_goals()
            self.goal_log = GoalLogWriter(settings.goal_log)
            self.create_timer(0.2, self.write_goals)
        self.task_pub = self.create_publisher(String, "task", LATCHED)
        self.objects_pub = self.create_publisher(MarkerArray, "objects", 10)
        self.joints_pub = self.create_publisher(JointState, "joint_states", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/new_episode", self.on_new_episode)
        self.create_service(SetBool, "~/unplug", self.on_unplug)
        if self.simulated:
            self.physics.start()
        self.emulator.start()
        dynamics = f"MuJoCo at {1 / self.sim.physics.timestep_s:.0f} Hz" if self.simulated else "first-order servos"
        self.get_logger().info(f"{self.task.value}: follower servos emulated on {self.emulator.port} "
                               f"(linked at {link}), {dynamics}")
        self.publish_task()
        self.create_timer(1.0 / self.sim.physics.world_state_rate_hz, self.publish_world)
        self.create_timer(1.0, self.publish_diagnostics)

    def publish_task(self) -> None:
        self.task_pub.publish(String(data=self.physics.layout.text))

    def publish_world(self) -> None:
        stamp = self.get_clock().now().to_msg()
        state = self.physics.state()
        msg = JointState()
        msg.header.stamp = stamp
        msg.header.frame_id = "base_link"
        msg.name = self.koch.follower.names
        if self.simulated:
            msg.position = [float(v) for v in state.joints]
            msg.velocity = [float(v) for v in state.velocities]
        else:  # the first-order servos' positions; the scene stands still
            arm = self.koch.follower
            present = self.emulator.present_positions()
            msg.position = [float(v) for v in arm.from_raw(np.array([present[j.id] for j in arm.joints]))]
        self.joints_pub.publish(msg)
        self.objects_pub.publish(objects_to_markers(self.physics.objects_now(state), stamp))

    def publish_diagnostics(self) -> None:
        self.publish_task()  # again every second: a recorder started after the latched message still gets it
        if not self.simulated:
            return
        timing = self.physics.timing()
        if timing.skipped_s > self.reported_skip_s:
            self.get_logger().warning(
                f"physics fell {timing.skipped_s - self.reported_skip_s:.3f} s behind the wall clock and skipped it "
                f"(real-time factor {timing.real_time_factor:.3f}): the host is overloaded")
            self.reported_skip_s = timing.skipped_s
        status = DiagnosticStatus(name="sim_world: physics", hardware_id="sim")
        status.level = DiagnosticStatus.OK if timing.real_time_factor >= RTF_WARN else DiagnosticStatus.WARN
        status.message = f"real-time factor {timing.real_time_factor:.3f}"
        status.values = [KeyValue(key="real_time_factor", value=f"{timing.real_time_factor:.4f}"),
                         KeyValue(key="skipped_s", value=f"{timing.skipped_s:.3f}"),
                         KeyValue(key="steps", value=str(timing.steps)),
                         KeyValue(key="task", value=self.task.value),
                         KeyValue(key="seed", value=str(self.physics.layout.seed))]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.diag_pub.publish(msg)

    def on_new_episode(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.episode += 1
        layout = sample_layout(self.task, self.seed + self.episode, self.sim)
        self.physics.load(layout)
        self.publish_task()
        self.publish_world()
        response.success = True
        response.message = f"seed {layout.seed}: {layout.text}"
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
        self.physics.stop()
        if self.goal_log is not None:
            self.write_goals()
            self.goal_log.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(SimWorldNode, args)

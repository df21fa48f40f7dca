"""rclpy node around ArmDriver.

Topics: `joint_states` out (stamped at bus read time); `joint_commands` (JointTrajectory,
executed by time_from_start) and `joint_position_command` (JointState, single-point
streaming: go there now, through the limits) in; `/diagnostics` (DiagnosticArray: bus health,
reconnects, Fast Sync Read use, each servo's decoded Hardware_Error_Status).
Services: `~/torque` (std_srvs/SetBool), `~/reboot` and `~/hold` (std_srvs/Trigger).
"""

from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from koch_common.cpu_budget import place_this_process
from koch_common.latency_trace import DRIVER_STAGES, ChunkTrace, StageWindow, TraceLog
from koch_common.node_params import declare_settings
from koch_common.node_runner import run_node
from koch_common.realtime import LateCycleCounter
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_driver.bus import BusError
from koch_driver.driver import ArmDriver
from koch_driver.ros_convert import joint_state_msg, to_time_msg, trajectory_from_msg
from koch_driver.settings import DriverSettings


class DriverNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("koch_driver", **kwargs)
        # Every parameter, its default and description: koch_driver.settings.DriverSettings.
        settings = declare_settings(self, DriverSettings)
        placement = place_this_process(DriverSettings.CPU_ROLE, settings.cpus, 0)  # logged once it started
        koch = load_koch()
        arm = settings.apply_to(getattr(koch, settings.arm))
        self.arm_name = settings.arm
        torque = settings.torque_enable
        self.driver = ArmDriver(arm, SafetyLimits.for_arm(arm, koch.safety), torque_enable=torque,
                                clock=self.now)
        self.driver.log = self._warn
        # Each command's receipt -> first goal write (the policy node reports the path before it).
        self.traces = StageWindow(DRIVER_STAGES)
        self.trace_log = TraceLog(settings.trace_log) if settings.trace_log else None
        self.driver.on_trace = self._on_trace
        self.driver.connect(timeout_s=settings.connect_timeout_s)
        self.get_logger().info(
            f"{self.arm_name} arm on {arm.port}: {len(arm.joints)} servos, torque on IDs "
            f"{self.driver.torque_ids if torque else []}, fast sync read {self.driver.bus.uses_fast_sync_read}; "
            f"{placement}")
        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointTrajectory, "joint_commands", self.on_command, 10)
        self.create_subscription(JointState, "joint_position_command", self.on_point, 10)
        self.create_service(SetBool, "~/torque", self.on_torque)
        self.create_service(Trigger, "~/reboot", self.on_reboot)
        self.create_service(Trigger, "~/hold", self.on_hold)
        self.period = 1.0 / arm.control_rate_hz
        self.cycles = LateCycleCounter(self.period)  # late cycles: more than half a period late
        self._last_hw_errors: dict[int, int] = {}
        self.create_timer(self.period, self.on_tick)
        self.create_timer(settings.diagnostics_period_s, self.publish_diagnostics)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _warn(self, message: str) -> None:
        self.get_logger().warning(message)

    # -- commands -------------------------------------------------------------------------------
    def on_command(self, msg: JointTrajectory) -> None:
        if not msg.points:
            self.driver.hold()
            return
        try:
            received = self.now()
            trajectory = trajectory_from_msg(msg, self.driver.joint_order(list(msg.joint_names)), received)
            self.driver.command(trajectory, received, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        except (ValueError, RuntimeError) as err:
            self.get_logger().error(f"rejected joint command: {err}")

    def on_point(self, msg: JointState) -> None:
        try:
            order = self.driver.joint_order(list(msg.name))
            if len(msg.position) != len(msg.name):
                raise ValueError(f"{len(msg.name)} names but {len(msg.position)} positions")
            self.driver.command_point(np.array([msg.position[i] for i in order]), self.now())
        except (ValueError, RuntimeError) as err:
            self.get_logger().error(f"rejected joint position command: {err}")

    # -- services -------------------------------------------------------------------------------
    def _service(self, response, action, describe):  # any std_srvs response
        try:
            result = action()
        except BusError as err:
            response.success, response.message = False, str(err)
            return response
        response.success, response.message = True, describe(result)
        return response

    def on_torque(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        return self._service(response, lambda: self.driver.set_torque(request.data),
                             lambda _: f"torque {'on (goals synced to the present pose)' if request.data else 'off'}")

    def on_reboot(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return self._service(response, self.driver.reboot,
                             lambda ids: f"rebooted IDs {ids}; goals synced to the present pose")

    def on_hold(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return self._service(response, self.driver.hold_here,
                             lambda pose: f"holding {[round(float(v), 3) for v in pose]}")

    # -- loop -------------------------------------------------------------------------------------
    def _on_trace(self, trace: ChunkTrace) -> None:
        self.traces.add(trace)
        if self.trace_log is not None:
            self.trace_log.write(trace)

    def on_tick(self) -> None:
        self.cycles.started(time.monotonic())
        # Never raises on bus trouble: the driver holds, reports and reconnects by itself.
        state = self.driver.step(self.period)
        if state is not None:
            self.state_pub.publish(
                joint_state_msg(state.stamp, state.names, state.position, state.velocity, state.effort)
            )
        if self.driver.health.hardware_errors != self._last_hw_errors:
            self._last_hw_errors = dict(self.driver.health.hardware_errors)
            self.publish_diagnostics()  # a new hardware error is reported at once, not at 1 Hz

    def publish_diagnostics(self) -> None:
        loop = {"late_cycles": self.cycles.late, "cycle_interval_max_ms": f"{self.cycles.worst_interval_s * 1e3:.1f}",
                "traced_commands": self.traces.count, **self.traces.diagnostics()}
        self.diag_pub.publish(diagnostics_msg(self.get_name(), self.arm_name, self.driver, self.now(), loop))

    def destroy_node(self) -> None:
        # Releases the port's locks explicitly: TIOCEXCL belongs to the tty and would outlive this process
        # on a pty the simulator keeps open, refusing the next driver (see bus.PatientPortHandler.closePort).
        driver = getattr(self, "driver", None)  # absent when __init__ failed
        if driver is not None:
            driver.close()
        trace_log = getattr(self, "trace_log", None)  # absent when __init__ failed
        if trace_log is not None:
            trace_log.close()
        super().destroy_node()


def diagnostics_msg(node_name: str, arm_name: str, driver: ArmDriver, stamp: float,
                    loop: dict[str, object] | None = None) -> DiagnosticArray:
    """`loop`: the node's control-loop and trace figures, added to the bus status's values."""
    health, bus = driver.health, driver.bus
    msg = DiagnosticArray()
    msg.header.stamp = to_time_msg(stamp)
    prefix = f"{node_name}: {arm_name}"
    bus_status = DiagnosticStatus(name=f"{prefix} bus", hardware_id=driver.arm.port)
    if not health.connected:
        bus_status.level = DiagnosticStatus.ERROR
        bus_status.message = f"disconnected, reconnecting: {health.last_error}"
    elif health.consecutive_errors:
        bus_status.level, bus_status.message = DiagnosticStatus.WARN, f"bus errors: {health.last_error}"
    else:
        bus_status.level, bus_status.message = DiagnosticStatus.OK, "ok"
    values = {
        "connected": health.connected, "torque": health.torque, "reads": health.reads,
        "total_errors": health.total_errors, "consecutive_errors": health.consecutive_errors,
        "reconnects": health.reconnects, "retries": bus.retries, "fast_sync_read": bus.uses_fast_sync_read,
        "fast_read_fallbacks": bus.fast_fallbacks, "last_error": health.last_error,
        **{f"safety_{kind}": count for kind, count in driver.limits.interventions.items()},
        **(loop or {}),
    }
    bus_status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    msg.status.append(bus_status)
    for joint in driver.arm.joints:
        bits = health.hardware_errors.get(joint.id, 0)
        model = bus.model_of(joint.id)
        status = DiagnosticStatus(name=f"{prefix} servo ID {joint.id} ({joint.name})",
                                  hardware_id=f"{driver.arm.port} ID {joint.id} {model.name if model else joint.model}")
        names = health.hardware_error_text().get(joint.id, [])
        status.level = DiagnosticStatus.ERROR if bits else DiagnosticStatus.OK
        status.message = f"hardware error: {', '.join(names)} (call ~/reboot)" if bits else "ok"
        status.values = [KeyValue(key="hardware_error_status", value=f"0x{bits:02x}")]
        msg.status.append(status)
    return msg


def main(args: list[str] | None = None) -> None:
    run_node(DriverNode, args)

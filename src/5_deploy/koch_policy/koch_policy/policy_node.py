"""Policy inference node: observations in, JointTrajectory action chunks out at 30 Hz.

Which topics feed which policy input comes from the same feature mapping the converter
used to build the training data. Every command goes through `PolicyRunner.tick`, which only
returns `SafeChunk`s built by the shared safety layer; `_publish_command` accepts nothing else.

Gates, outermost first: `enabled` false -> nothing is published (`~/enable`, std_srvs/SetBool);
`dry_run` true -> commands go to `~/preview_chunk` only, never to `action_chunk`; a latched
e-stop (`~/estop` or `/estop` std_msgs/Bool true, or the `~/estop` std_srvs/Trigger service;
cleared only by `~/reset_estop`) -> hold the position measured when it latched; the optional
deadman (`deadman_timeout_s` > 0, heartbeats on `~/deadman` std_msgs/Bool true) -> hold; a
stale or missing observation -> hold the measured position.

Bad data never stops the node: the runner turns a bad model output, joint state or clock into a
counted hold (`RunnerFault`), and the tick callback itself holds and counts `internal` for anything
else that raises in it (serializing, publishing), so the 30 Hz loop outlives whatever it meets; an
input message that cannot be decoded is dropped and counted as `observation`.
Fault counts are on /diagnostics as `fault_<kind>`, the latest reason as `last_fault`.

JointTrajectory semantics (what ros2_control's joint_trajectory_controller expects): header.stamp
is the tick time on the node clock and point k is due at stamp + k/fps (time_from_start strictly
increasing, k/fps); positions and velocities are both set, so the controller interpolates
cubically. A one-point hold is due one tick after the stamp, so no message ever ends in the past
(the controller rejects those). A new message replaces the rest of the previous one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ROSClock
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from koch_common.config import ConfigError
from koch_common.cpu_budget import CpuBudget, place_this_process
from koch_common.feature_mapping import Feature, Mapping, ZeroStamps, load_mapping
from koch_common.image_codec import DEPTH_SCALE_TO_M, depth_to_millimetres, from_fields, to_rgb
from koch_common.kinematics import tcp_position
from koch_common.latency_trace import POLICY_STAGES, ChunkTrace, StageWindow, TraceLog
from koch_common.node_params import declare_settings, updated_settings
from koch_common.node_runner import run_node
from koch_common.realtime import LateCycleCounter
from koch_common.robot import load_koch
from koch_common.safety import SafeChunk, SafetyLimits
from koch_policy.gate import GateState, SafetyGate
from koch_policy.runner import PolicyRunner, RunnerFault, TickKind, resolve_trigger
from koch_policy.settings import PolicySettings
from koch_policy.trajectory_cdr import safe_chunk_cdr
from koch_runtime.factory import load_runtime

RUNTIME_NAMES = {"OnnxRuntime": "onnx", "PolicyRuntime": "pytorch"}  # in diagnostics, e.g. for rollout reports


def clock_now_ns(clock: Clock) -> int:
    """`clock.now().nanoseconds`: without simulated time a ROS clock reads the system clock, which
    `time.time_ns` reads directly (rclpy builds a Time object through three Python layers: ~10 us
    warm, ~0.1 ms with the caches cold after an inference, on the path of every published chunk)."""
    return clock.now().nanoseconds if isinstance(clock, ROSClock) and clock.ros_time_is_active else time.time_ns()


def decode_image(msg: Image) -> np.ndarray:
    """Colour -> uint8 RGB (H, W, 3); depth (16UC1 mm / 32FC1 m) -> uint16 millimetres (H, W, 1), as the
    converter stores it (no return -> 0); the runtime turns it into metres as training does."""
    array = from_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
    if msg.encoding in DEPTH_SCALE_TO_M:
        return depth_to_millimetres(array, msg.encoding)
    return to_rgb(array, msg.encoding)


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy", **kwargs)
        # Every parameter, its default and description: koch_policy.settings.PolicySettings.
        self.settings: PolicySettings = declare_settings(self, PolicySettings)
        settings = self.settings
        # Before the runtime starts its threads: they inherit the CPUs (koch_common.cpu_budget).
        threads = settings.inference_threads or CpuBudget.for_this_machine().inference_threads
        placement = place_this_process(PolicySettings.CPU_ROLE, settings.cpus, threads)  # logged once it loaded
        self.enabled = settings.enabled
        self.dry_run = settings.dry_run
        self.publish_markers = settings.publish_markers
        koch = load_koch()
        self.arm = koch.follower
        self.kinematics = koch.kinematics
        self.mapping: Mapping = load_mapping(settings.mapping)
        # A LeRobot checkpoint or its ONNX export (kuavo_export), with the same processors as training.
        self.runtime = load_runtime(settings.checkpoint, settings.device, threads, kind=settings.runtime)
        if settings.flow_steps:
            try:
                self.runtime.flow_steps = settings.flow_steps
            except ValueError as exc:
                raise ConfigError(f"flow_steps: {exc}") from None
        flow = "" if self.runtime.flow_steps is None else f", {self.runtime.flow_steps} flow steps"
        self.runtime_name = RUNTIME_NAMES.get(type(self.runtime).__name__, type(self.runtime).__name__)
        self.runtime_path = str(getattr(self.runtime, "onnx_dir", settings.checkpoint))
        self.get_logger().info(f"runtime: {self.runtime_name} ({self.runtime_path}; runtime:={settings.runtime}), "
                               f"{self.runtime.policy_type}{flow} on {settings.device}; {placement}")
        if self.runtime.flow_steps is not None and not self.runtime.supports_guidance:
            self.get_logger().info("chunk_policy rtc freezes and blends only here: its guided denoising differentiates "
                                   "through the model, which needs runtime:=pytorch")
        self.fps = float(self.mapping.fps) if settings.rate_hz is None else settings.rate_hz
        n_steps = self.runtime.n_action_steps if settings.n_action_steps is None else settings.n_action_steps
        # The streams this checkpoint reads (a mapping may hold more, e.g. a depth camera an RGB policy ignores).
        inputs = [f for f in self.mapping.features if f.key in self.runtime.input_features]
        unmapped = sorted(set(self.runtime.input_features) - {f.key for f in inputs})
        if unmapped:
            raise ConfigError(f"the checkpoint reads {unmapped}, which mapping {settings.mapping} does not map to "
                              "any topic; add them to the mapping (the one the training data was converted with)")
        self.gate = SafetyGate(settings.deadman_timeout_s)
        self.inject_model_fault = False  # ~/inject_model_fault, offered only with fault_injection
        self.runner = PolicyRunner(
            self._predict_or_nan if settings.fault_injection else self.runtime.predict_chunk,
            {f.key: f.stream for f in inputs},
            SafetyLimits.for_arm(self.arm, koch.safety), self.fps, n_steps, clock=self.now,
            chunk_policy=settings.chunk_policy, gate=self.gate, replan_threshold=settings.replan_threshold,
            on_chunk=self.on_tick if settings.publish_on_arrival else None,
            trigger=resolve_trigger(settings.inference_trigger, [f.key for f in inputs]),
            worker_cpus=self.runtime.caller_cpus,
            predict_guided=self.runtime.predict_guided if self.runtime.supports_guidance else None,
        )
        self.runner.log = self._log_fault
        # Three groups, so the executor's threads run them side by side (in the node's one default group
        # a callback runs only when no other does: an image decode would delay the tick, and an e-stop
        # would wait behind both): observations in; the 30 Hz tick; gates, services and diagnostics.
        self._inputs = MutuallyExclusiveCallbackGroup()
        ticks = MutuallyExclusiveCallbackGroup()
        control = MutuallyExclusiveCallbackGroup()
        for feature in inputs:
            self._subscribe(feature)
        self.chunk_pub = self.create_publisher(JointTrajectory, "action_chunk", 10)
        self.preview_pub = self.create_publisher(JointTrajectory, "~/preview_chunk", 10)
        self.ghost_pub = self.create_publisher(JointState, "~/ghost_joint_states", 10)
        self.marker_pub = self.create_publisher(MarkerArray, "~/predicted_path", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetBool, "~/enable", self.on_enable, callback_group=control)
        self.create_service(Trigger, "~/estop", self.on_estop_service, callback_group=control)
        self.create_service(Trigger, "~/reset_estop", self.on_reset_estop, callback_group=control)
        for name in ("~/estop", "/estop"):
            self.create_subscription(Bool, name, self.on_estop_topic, 10, callback_group=control)
        self.create_subscription(Bool, "~/deadman", self.on_deadman, 10, callback_group=control)
        self.create_subscription(String, "~/task", self.on_task_topic, 10, callback_group=control)
        self._set_task(settings.task)
        if settings.fault_injection:
            self.create_service(SetBool, "~/inject_model_fault", self.on_inject_model_fault, callback_group=control)
        self.add_on_set_parameters_callback(self.on_parameters)
        self.estop_tick: int | None = None  # runner tick count when the e-stop latched
        self.published = 0
        self.previews = 0
        self.tick_overhead_s: deque[float] = deque(maxlen=1000)
        self._tick_lock = threading.Lock()  # the timer and a landing chunk never tick at once
        # Each chunk's path from the camera to the publish (the driver reports the rest).
        self.traces = StageWindow(POLICY_STAGES)
        self.trace_log = TraceLog(settings.trace_log) if settings.trace_log else None
        self.timer_cycles = LateCycleCounter(1.0 / self.fps)  # missed ticks: more than half a period late
        self.create_timer(1.0 / self.fps, self.on_timer, callback_group=ticks)
        self.create_timer(1.0, self.publish_diagnostics, callback_group=control)
        self._last_diag = (self.now(), 0)
        self._faults_reported = 0  # fault count at the last diagnostics: WARN while it grows

    def _log_fault(self, message: str) -> None:
        self.get_logger().warning(f"fault: {message}")  # once per change of reason (the runner decides)

    def now(self) -> float:
        return clock_now_ns(self.get_clock()) * 1e-9

    def _stamp(self, feature: Feature, msg_stamp, received: float) -> float:
        """The message's time on the mapping's clock, as the converter stamps it: a zero header stamp takes
        the receive time where the stream's `zero_stamps: receive_time` says so, and is refused otherwise."""
        if self.mapping.clock != "header":
            return received
        if msg_stamp.sec == 0 and msg_stamp.nanosec == 0:
            if feature.zero_stamps is ZeroStamps.RECEIVE_TIME:
                return received
            raise ValueError(f"zero header stamp; if the publisher never stamps, set features.{feature.key}."
                             "zero_stamps: receive_time in the mapping")
        return msg_stamp.sec + msg_stamp.nanosec * 1e-9

    def _subscribe(self, feature: Feature) -> None:
        name = feature.key
        if feature.msgtype.endswith("/JointState"):
            def on_joint_state(msg: JointState) -> None:  # by name, or by index where the mapping says so
                value = np.asarray(msg.position, np.float32)[feature.joint_indices(msg.name, len(msg.position))]
                self.runner.push(name, self._stamp(feature, msg.header.stamp, self.now()), value)

            self.create_subscription(JointState, feature.topic, self._guarded(name, on_joint_state), 10,
                                     callback_group=self._inputs)
        elif feature.is_image:

            def on_image(msg: Image) -> None:
                self.runner.push(name, self._stamp(feature, msg.header.stamp, self.now()), decode_image(msg))

            self.create_subscription(Image, feature.topic, self._guarded(name, on_image), qos_profile_sensor_data,
                                     callback_group=self._inputs)
        else:
            raise ValueError(f"feature {name!r}: message type {feature.msgtype!r} is not supported by the policy node")

    def _guarded(self, feature: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """`callback`, with a message it cannot take (an image of another size or encoding) dropped and
        counted as an `observation` fault: raising would stop the executor, and with it the node."""

        def guarded(msg: Any) -> None:
            try:
                callback(msg)
            except Exception as err:
                self.runner.record_fault(RunnerFault.OBSERVATION, f"{feature}: {type(err).__name__}: {err}")

        return guarded

    # -- gates ----------------------------------------------------------------------------------
    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        # Under the tick lock: once "disabled" is answered no tick is mid-way to publishing, so a caller
        # that then commands the driver itself (an operator's reset) is not overridden by a late chunk.
        with self._tick_lock:
            if request.data and self.runtime.needs_task and not self.runtime.task:
                response.success = False
                response.message = (f"not enabled: the {self.runtime.policy_type} policy acts on a task instruction "
                                    "and none is set; set the `task` parameter or publish one on ~/task")
                return response
            if request.data and not self.enabled:
                self.runner.reset()
                self.runtime.reset()
            self.enabled = bool(request.data)
        response.success = True
        response.message = "enabled" if self.enabled else "disabled"
        return response

    def on_task_topic(self, msg: String) -> None:
        self._set_task(msg.data)

    def _set_task(self, text: str) -> None:
        """The instruction from here on (the next inference reads it); ignored by policies without language."""
        text = text.strip()
        if text == (self.runtime.task or ""):
            return
        self.runtime.task = text or None
        if self.runtime.needs_task:
            self.get_logger().info(f"task: {text!r}" if text else "task cleared: the policy holds until a new one")

    def _latch(self, reason: str) -> bool:
        latched = self.gate.estop()
        if latched:
            self.estop_tick = self.runner.ticks
            self.get_logger().warning(f"e-stop latched ({reason}); call ~/reset_estop to release")
        return latched

    def on_estop_topic(self, msg: Bool) -> None:
        if msg.data:  # false never releases: only ~/reset_estop does
            self._latch("topic")

    def on_estop_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._latch("service")
        response.success = True
        response.message = "e-stop latched"
        return response

    def on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was = self.gate.reset_estop()
        self.runner.reset()  # never resume an old chunk after an e-stop
        self.estop_tick = None
        response.success = True
        response.message = "e-stop released" if was else "e-stop was not latched"
        return response

    def on_deadman(self, msg: Bool) -> None:
        if msg.data:
            self.gate.heartbeat(self.now())

    def _predict_or_nan(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The model, or while `inject_model_fault` its chunk as NaN: the model_non_finite fault, on demand."""
        chunk = self.runtime.predict_chunk(observation)
        return np.full(np.shape(chunk), np.nan) if self.inject_model_fault else chunk

    def on_inject_model_fault(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.inject_model_fault = bool(request.data)
        self.get_logger().warning(f"model fault injection {'on' if request.data else 'off'}")
        response.success = True
        response.message = "the model's chunks are NaN" if request.data else "the model's chunks are its own"
        return response

    def on_parameters(self, params: list[Parameter]) -> SetParametersResult:
        # ROS refuses the read-only ones itself; the changeable ones (chunk_policy, dry_run) are checked here.
        try:
            updated = updated_settings(self.settings, params)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if updated.chunk_policy != self.settings.chunk_policy:
            self.runner.set_chunk_policy(updated.chunk_policy)
        self.dry_run = updated.dry_run
        if updated.task != self.settings.task:
            self._set_task(updated.task)
        self.settings = updated
        return SetParametersResult(successful=True)

    # -- tick ------------------------------------------------------------------------------
    def on_timer(self) -> None:
        self.timer_cycles.started(time.monotonic())
        self.on_tick()

    def on_tick(self) -> None:
        if not self.enabled:
            return
        with self._tick_lock:
            if not self.enabled:  # disabled while this tick waited for the lock
                return
            try:
                self._tick()
            except Exception as err:  # the last resort: an exception here would stop the timer's executor
                self._hold_after(err)

    def _hold_after(self, err: Exception) -> None:
        """Hold after `err` raised in a tick, counted as an `internal` fault; if even that fails, the count
        and the log remain and the driver keeps its last goal."""
        now_ns = clock_now_ns(self.get_clock())
        output = self.runner.fault_hold(now_ns * 1e-9, RunnerFault.INTERNAL, f"policy node tick: "
                                                                           f"{type(err).__name__}: {err}")
        if output.command is not None:
            try:
                self._publish_command(output.command, divmod(now_ns, 1_000_000_000))
            except Exception as again:
                self.get_logger().error(f"cannot publish the hold either ({type(again).__name__}: {again})")

    def _tick(self) -> None:
        started = time.perf_counter()
        now_ns = clock_now_ns(self.get_clock())
        output = self.runner.tick(now_ns * 1e-9)
        if output.command is None:
            return
        stamp = divmod(now_ns, 1_000_000_000)  # the tick time: point 0 is due now
        trace = self.runner.take_trace(output)  # set when this is the first message that carries a new chunk
        self._publish_command(output.command, stamp, trace)
        self.tick_overhead_s.append(time.perf_counter() - started)
        if trace is not None:
            trace.chunk_ns = now_ns
            self.traces.add(trace)
            if self.trace_log is not None:
                self.trace_log.write(trace)
        if self.publish_markers and output.kind is TickKind.CHUNK:
            self._publish_visuals(output.command, Time(sec=stamp[0], nanosec=stamp[1]))

    def _publish_command(self, command: SafeChunk, stamp: tuple[int, int], trace: ChunkTrace | None = None) -> None:
        msg = safe_chunk_cdr(command, self.arm.names, stamp, self.fps)  # serialized: rclpy's conversion is slow
        if trace is not None:  # handed to DDS now: a subscriber may have it before publish() returns
            trace.published = self.now()
        if self.dry_run:
            self.preview_pub.publish(msg)
            self.previews += 1
        else:
            self.chunk_pub.publish(msg)
            self.published += 1

    def _publish_visuals(self, command: SafeChunk, stamp) -> None:
        ghost = JointState(name=list(self.arm.names), position=[float(v) for v in command.positions[-1]])
        ghost.header.stamp = stamp
        self.ghost_pub.publish(ghost)
        path = Marker(ns="policy_tcp_path", id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
        path.header.frame_id = "base_link"
        path.header.stamp = stamp
        path.scale.x = 0.004
        path.color.r, path.color.g, path.color.b, path.color.a = 0.1, 0.9, 0.3, 0.9
        path.pose.orientation.w = 1.0
        for q in command.positions:
            x, y, z = (float(v) for v in tcp_position(q, self.kinematics))
            path.points.append(Point(x=x, y=y, z=z))
        end = Marker(ns="policy_tcp_path", id=1, type=Marker.SPHERE, action=Marker.ADD)
        end.header = path.header
        end.pose.position = path.points[-1]
        end.pose.orientation.w = 1.0
        end.scale.x = end.scale.y = end.scale.z = 0.015
        end.color = path.color
        self.marker_pub.publish(MarkerArray(markers=[path, end]))

    # -- diagnostics -------------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        now = self.now()
        last_time, last_count = self._last_diag
        sent = self.published + self.previews
        rate = (sent - last_count) / max(now - last_time, 1e-6)
        self._last_diag = (now, sent)
        p50, p99 = self.runner.latency_percentiles_ms()
        overhead = np.array(self.tick_overhead_s) * 1e3 if self.tick_overhead_s else np.array([np.nan])
        with self.runner._lock:
            queue = self.runner.queue
        gate = self.gate.state(now)
        faults = dict(self.runner.faults)  # a copy: the worker may count one meanwhile
        values = {
            "enabled": str(self.enabled),
            "dry_run": str(self.dry_run),
            "chunk_policy": queue.name.value,
            "runtime": self.runtime_name,
            "runtime_path": self.runtime_path,
            "policy_type": self.runtime.policy_type,
            "estop_latched": str(self.gate.estop_latched),
            "gate": gate.value,
            "chunk_publish_rate_hz": f"{rate:.2f}",
            "inference_latency_p50_ms": f"{p50:.2f}",
            "inference_latency_p99_ms": f"{p99:.2f}",
            "tick_overhead_p50_ms": f"{np.percentile(overhead, 50):.3f}",
            "tick_overhead_p99_ms": f"{np.percentile(overhead, 99):.3f}",
            "inference_count": str(self.runner.inferences),
            "ticks": str(self.runner.ticks),
            "missed_ticks": str(self.timer_cycles.late),
            "tick_interval_max_ms": f"{self.timer_cycles.worst_interval_s * 1e3:.1f}",
            "traced_chunks": str(self.traces.count),
            **self.traces.diagnostics(),
            "queue_ticks_left": str(queue.ticks_left(now)),
            "chunks_in_use": str(queue.chunks_in_use(now)),
            "last_inference_error": self.runner.last_error,
            **{f"safety_{k}": str(v) for k, v in sorted(self.runner.limits.interventions.items())},
            **{f"fault_{k}": str(v) for k, v in faults.items()},
            "last_fault": self.runner.last_fault,
        }
        faulting = sum(faults.values()) > self._faults_reported  # a fault since the last report
        self._faults_reported = sum(faults.values())
        level = DiagnosticStatus.ERROR if self.gate.estop_latched else (
            DiagnosticStatus.WARN if gate is not GateState.OPEN or self.runner.last_error or faulting
            else DiagnosticStatus.OK)
        message = "e-stop latched" if self.gate.estop_latched else (
            f"fault: {self.runner.last_fault}" if faulting else ("running" if self.enabled else "disabled"))
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: policy",
                                  message=message, hardware_id="policy")
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def destroy_node(self) -> None:
        runner = getattr(self, "runner", None)  # absent when __init__ failed
        if runner is not None:
            runner.close()
        trace_log = getattr(self, "trace_log", None)  # absent when __init__ failed
        if trace_log is not None:
            trace_log.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    # Observations, the tick and the gates run on separate threads (their callback groups) so a burst
    # of images never delays a tick or an e-stop; inference has its own worker thread inside the runner.
    run_node(PolicyNode, args, threads=3)

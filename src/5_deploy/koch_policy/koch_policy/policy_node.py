"""Policy inference node: observations in, JointTrajectory action chunks out at 30 Hz.

Which topics feed which policy input comes from the same feature mapping the converter
used to build the training data. Every published point went through the shared safety
limits; with `enabled` false nothing is published. `~/enable` (std_srvs/SetBool) switches it.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from koch_common.feature_mapping import Feature, Mapping, load_mapping
from koch_common.image_codec import from_fields, to_rgb
from koch_common.node_runner import run_node
from koch_common.policy_runtime import PolicyRuntime
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_policy.runner import PolicyRunner


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy", **kwargs)
        checkpoint = self.declare_parameter("checkpoint", "").value
        device = self.declare_parameter("device", "cpu").value
        mapping_path = self.declare_parameter("mapping", "mapping/koch_sim.yaml").value
        self.enabled = bool(self.declare_parameter("enabled", False).value)
        if not checkpoint:
            raise ValueError("parameter 'checkpoint' is empty: pass the pretrained_model directory from training")
        koch = load_koch()
        self.arm = koch.follower
        self.mapping: Mapping = load_mapping(mapping_path)
        self.runtime = PolicyRuntime.load(checkpoint, device=device)
        self.fps = float(self.declare_parameter("rate_hz", float(self.mapping.fps)).value)
        n_steps = int(self.declare_parameter("n_action_steps", self.runtime.n_action_steps).value)
        inputs = [f for f in self.mapping.features if f.key != "action"]
        self.runner = PolicyRunner(
            self.runtime.predict_chunk,
            {f.key: f.stream for f in inputs},
            SafetyLimits.for_arm(self.arm, koch.safety), self.fps, n_steps, clock=self.now,
        )
        for feature in inputs:
            self._subscribe(feature)
        self.chunk_pub = self.create_publisher(JointTrajectory, "action_chunk", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetBool, "~/enable", self.on_enable)
        self.published = 0
        self.create_timer(1.0 / self.fps, self.on_tick)
        self.create_timer(1.0, self.publish_diagnostics)
        self._last_diag = (self.now(), 0)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp(self, msg_stamp, received: float) -> float:
        if self.mapping.clock == "header":
            return msg_stamp.sec + msg_stamp.nanosec * 1e-9
        return received

    def _subscribe(self, feature: Feature) -> None:
        name = feature.key
        if feature.msgtype.endswith("/JointState"):
            joints = feature.joint_names

            def on_joint_state(msg: JointState) -> None:
                by_name = dict(zip(msg.name, msg.position))
                if all(j in by_name for j in joints):
                    value = np.array([by_name[j] for j in joints], dtype=np.float32)
                    self.runner.push(name, self._stamp(msg.header.stamp, self.now()), value)

            self.create_subscription(JointState, feature.topic, on_joint_state, 10)
        elif feature.is_image:

            def on_image(msg: Image) -> None:
                array = from_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
                self.runner.push(name, self._stamp(msg.header.stamp, self.now()), to_rgb(array, msg.encoding))

            self.create_subscription(Image, feature.topic, on_image, qos_profile_sensor_data)
        else:
            raise ValueError(f"feature {name!r}: message type {feature.msgtype!r} is not supported by the policy node")

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data and not self.enabled:
            self.runner.reset()
            self.runtime.reset()
        self.enabled = bool(request.data)
        response.success = True
        response.message = "enabled" if self.enabled else "disabled"
        return response

    def on_tick(self) -> None:
        if not self.enabled:
            return
        now = self.now()
        output = self.runner.tick(now)
        if output.positions is None:
            return
        msg = JointTrajectory()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.joint_names = self.arm.names
        dt = 1.0 / self.fps
        velocities = np.gradient(output.positions, dt, axis=0) if len(output.positions) > 1 else \
            np.zeros_like(output.positions)
        for k, (position, velocity) in enumerate(zip(output.positions, velocities)):
            ns = int(round(k * dt * 1e9))
            msg.points.append(JointTrajectoryPoint(
                positions=[float(v) for v in position], velocities=[float(v) for v in velocity],
                time_from_start=Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))
        self.chunk_pub.publish(msg)
        self.published += 1

    def publish_diagnostics(self) -> None:
        now = self.now()
        last_time, last_count = self._last_diag
        rate = (self.published - last_count) / max(now - last_time, 1e-6)
        self._last_diag = (now, self.published)
        p50, p99 = self.runner.latency_percentiles_ms()
        values = {
            "enabled": str(self.enabled),
            "chunk_publish_rate_hz": f"{rate:.2f}",
            "inference_latency_p50_ms": f"{p50:.2f}",
            "inference_latency_p99_ms": f"{p99:.2f}",
            "inference_count": str(len(self.runner.latencies_s)),
            "queue_ticks_left": str(self.runner.queue.ticks_left(now)),
            "last_inference_error": self.runner.last_error,
            **{f"safety_{k}": str(v) for k, v in sorted(self.runner.limits.interventions.items())},
        }
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.get_fully_qualified_name()}: policy",
                                  message="running" if self.enabled else "disabled", hardware_id="policy")
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def destroy_node(self) -> None:
        self.runner.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    # Subscriptions, timer and services run on separate threads so a burst of images never
    # delays a tick; inference has its own worker thread inside the runner.
    run_node(PolicyNode, args, threads=3)

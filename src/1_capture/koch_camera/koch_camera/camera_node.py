"""Camera node: `color/image_raw` + `color/camera_info` (and `depth/...`) stamped at capture time.

Settings come from a cameras file (`config:=cameras/sim.yaml camera:=wrist`) or the defaults,
and every CameraSettings field is a ROS parameter of the same name that overrides it. Source
`sim` renders the simulated MuJoCo scene from the sim's world state: its joint states
(`joint_states`, remapped to /sim/joint_states) and objects (`objects`, a MarkerArray).
A capture thread reads the source and publishes each frame with
sensor-data QoS; if the source fails it is closed and re-opened every `reconnect_interval_s`
without restarting the node. /diagnostics reports delivered fps, dropped frames,
capture->publish latency and the connection state.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, JointState
from visualization_msgs.msg import MarkerArray

from koch_camera.settings import CameraFile, CameraSettings, Intrinsics, load_calibration, load_camera
from koch_camera.sim_source import SimSceneSource
from koch_camera.source import CameraSource, Frame
from koch_camera.sources import make_source
from koch_camera.stats import CaptureStats
from koch_common.image_codec import to_image_msg
from koch_common.node_params import declare_settings
from koch_common.node_runner import run_node
from koch_common.robot import load_koch
from koch_sim.world_msgs import markers_to_objects


def camera_info(intr: Intrinsics, frame_id: str) -> CameraInfo:
    info = CameraInfo(width=int(intr.width), height=int(intr.height), distortion_model=intr.distortion_model)
    info.header.frame_id = frame_id
    info.d = [float(v) for v in intr.d]
    info.k = [float(v) for v in np.asarray(intr.k).flatten()]
    info.r = [float(v) for v in np.asarray(intr.r).flatten()]
    info.p = [float(v) for v in intr.projection().flatten()]
    return info


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera", **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.settings = self._settings()
        ns = self.get_namespace().strip("/").replace("/", "_")
        self.frame_id = self.settings.frame_id or f"{ns or 'camera'}_camera_optical_frame"
        self.source: CameraSource = make_source(self.settings, lambda: self.get_clock().now().nanoseconds)
        self.source.open()  # a missing device or unsupported mode stops the node here, with the reason
        intr = self.source.intrinsics()
        if self.settings.calibration:
            calib = load_calibration(self.settings.calibration)
            intr = calib if (calib.width, calib.height) == (intr.width, intr.height) else \
                calib.scaled(intr.width, intr.height)
        self.info = camera_info(intr, self.frame_id)

        qos = qos_profile_sensor_data
        self.image_pub = self.create_publisher(type(to_image_msg(np.zeros((1, 1, 3), np.uint8), "rgb8")),
                                               "color/image_raw", qos)
        self.info_pub = self.create_publisher(CameraInfo, "color/camera_info", qos)
        self.depth_pub = self.depth_info_pub = self.jpeg_pub = None
        if self.settings.depth:
            self.depth_pub = self.create_publisher(self.image_pub.msg_type, "depth/image_raw", qos)
            self.depth_info_pub = self.create_publisher(CameraInfo, "depth/camera_info", qos)
        if self.settings.jpeg:
            self.jpeg_pub = self.create_publisher(CompressedImage, "color/image_raw/compressed", qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        if isinstance(self.source, SimSceneSource):  # it renders the sim's world state from its topics
            self.scene: SimSceneSource = self.source
            self.joint_names = load_koch().follower.names
            self.create_subscription(JointState, "joint_states", self.on_joint_state, 10)
            self.create_subscription(MarkerArray, "objects", self.on_objects, 10)

        self.stats = CaptureStats()
        self.stats.up()
        self._thread = threading.Thread(target=self._capture_loop, name="capture", daemon=True)
        self._thread.start()
        self.create_timer(self.settings.diagnostics_period_s, self.publish_diagnostics)

    def _settings(self) -> CameraSettings:
        """File (or defaults), then one ROS parameter per field overriding it."""
        where = declare_settings(self, CameraFile)
        name = where.camera or self.get_namespace().strip("/").split("/")[-1]
        base = load_camera(where.config, name) if where.config else CameraSettings()
        return declare_settings(self, CameraSettings, defaults=base)

    # -- sim world state -----------------------------------------------------------------------
    def on_joint_state(self, msg: JointState) -> None:
        by_name = dict(zip(msg.name, msg.position))
        if all(n in by_name for n in self.joint_names):
            self.scene.set_joints(np.array([by_name[n] for n in self.joint_names]))

    def on_objects(self, msg: MarkerArray) -> None:
        self.scene.set_objects(markers_to_objects(msg))

    # -- capture thread ------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        connected = True
        while not self._stop.is_set():
            if not connected:
                try:
                    self.source.open()
                except Exception as err:  # still gone: report and retry
                    self.stats.down(str(err))
                    self._stop.wait(self.settings.reconnect_interval_s)
                    continue
                connected = True
                self.stats.up()
                self.get_logger().info(f"camera {self.source.description} is back")
            try:
                frame = self.source.read()
            except Exception as err:  # any failure of the device is a disconnection
                if self._stop.is_set():
                    break
                connected = False
                self.stats.down(f"{type(err).__name__}: {err}")
                self.get_logger().warning(f"camera {self.source.description} lost: {err}; re-opening it")
                self.source.close()
                continue
            try:
                self._publish(frame)
            except Exception:  # the context is shutting down under us
                if self._stop.is_set() or not self.context.ok():
                    break
                raise
        self.source.close()

    def _publish(self, frame: Frame) -> None:
        stamp = Time(nanoseconds=frame.stamp_ns).to_msg()
        image = to_image_msg(frame.color, frame.encoding)
        image.header.stamp = stamp
        image.header.frame_id = self.frame_id
        self.info.header.stamp = stamp
        depth = None
        if self.depth_pub is not None and frame.depth is not None:
            depth = to_image_msg(frame.depth, "16UC1")
            depth.header = image.header
        jpeg = None
        if self.jpeg_pub is not None:
            bgr = frame.color if frame.encoding == "bgr8" else cv2.cvtColor(frame.color, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality])
            if ok:
                jpeg = CompressedImage(format=f"{frame.encoding}; jpeg compressed bgr8", data=buf.tobytes())
                jpeg.header = image.header
        self.image_pub.publish(image)
        self.info_pub.publish(self.info)
        if depth is not None:
            assert self.depth_pub is not None and self.depth_info_pub is not None  # made when depth is on
            self.depth_pub.publish(depth)
            self.depth_info_pub.publish(self.info)
        if jpeg is not None:
            assert self.jpeg_pub is not None  # made when jpeg is on
            self.jpeg_pub.publish(jpeg)
        self.stats.frame(frame.sequence, (self.get_clock().now().nanoseconds - frame.stamp_ns) / 1e9)

    # -- diagnostics ---------------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        r = self.stats.report(time.monotonic())
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: capture",
                                  hardware_id=self.source.description)
        if r.connected:
            status.level, status.message = DiagnosticStatus.OK, "streaming"
        else:
            status.level, status.message = DiagnosticStatus.ERROR, f"disconnected, re-opening: {r.last_error}"
        status.values = [KeyValue(key=k, value=v) for k, v in (
            ("connected", str(r.connected).lower()), ("delivered_fps", f"{r.fps:.2f}"),
            ("configured_fps", f"{self.settings.fps:.2f}"), ("frames_published", str(r.published)),
            ("dropped_frames", str(r.dropped)), ("latency_p50_ms", f"{r.latency_p50_ms:.3f}"),
            ("latency_p99_ms", f"{r.latency_p99_ms:.3f}"), ("reconnects", str(r.reconnects)),
            ("last_error", r.last_error))]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(CameraNode, args)

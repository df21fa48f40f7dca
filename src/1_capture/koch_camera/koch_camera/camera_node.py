"""Camera node: publishes `color/image_raw` and `color/camera_info` stamped at capture time.

Source `sim` renders the simulated scene from the follower's joint states and the sim's
target; the arm and the target it sees are the ones the driver and the task know.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState

from koch_camera.sim_source import SimSceneSource
from koch_common.image_codec import to_fields
from koch_common.node_runner import run_node
from koch_common.robot import load_koch
from koch_sim.sim_config import load_sim

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera", **kwargs)
        source = self.declare_parameter("source", "sim").value
        if source != "sim":
            raise ValueError(f"camera source {source!r} is not supported; use source:=sim")
        camera = load_sim().camera
        camera.width = self.declare_parameter("width", camera.width).value
        camera.height = self.declare_parameter("height", camera.height).value
        fps = self.declare_parameter("fps", camera.fps).value
        self.frame_id = self.declare_parameter("frame_id", "head_camera_optical_frame").value
        self.source = SimSceneSource(camera)
        self.joint_names = load_koch().follower.names
        self.image_pub = self.create_publisher(Image, "color/image_raw", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, "color/camera_info", qos_profile_sensor_data)
        self.create_subscription(JointState, "joint_states", self.on_joint_state, 10)
        self.create_subscription(PointStamped, "target", self.on_target, LATCHED)
        self.info = self.camera_info(camera.width, camera.height)
        self.create_timer(1.0 / fps, self.on_tick)

    def camera_info(self, width: int, height: int) -> CameraInfo:
        k = self.source.intrinsics()
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.header.frame_id = self.frame_id
        info.d = [0.0] * 5
        info.k = [float(v) for v in k.flatten()]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [k[0, 0], 0.0, k[0, 2], 0.0, 0.0, k[1, 1], k[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def on_joint_state(self, msg: JointState) -> None:
        by_name = dict(zip(msg.name, msg.position))
        if all(n in by_name for n in self.joint_names):
            self.source.set_joints(np.array([by_name[n] for n in self.joint_names]))

    def on_target(self, msg: PointStamped) -> None:
        self.source.set_target(np.array([msg.point.x, msg.point.y, msg.point.z]))

    def on_tick(self) -> None:
        stamp = self.get_clock().now().to_msg()  # capture time: taken before rendering
        fields = to_fields(self.source.capture(), "rgb8")
        image = Image(height=fields.height, width=fields.width, encoding=fields.encoding,
                      is_bigendian=fields.is_bigendian, step=fields.step, data=fields.data)
        image.header.stamp = stamp
        image.header.frame_id = self.frame_id
        self.info.header.stamp = stamp
        self.image_pub.publish(image)
        self.info_pub.publish(self.info)


def main(args: list[str] | None = None) -> None:
    run_node(CameraNode, args)

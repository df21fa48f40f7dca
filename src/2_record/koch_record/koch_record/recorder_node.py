"""Episode recorder: live topics -> one rosbag2 bag per episode, toggled by services.

Subscribes at start-up (so DDS discovery is done before the first episode) with `raw=True`,
which hands over the serialized CDR bytes: the bag holds exactly what `ros2 bag record`
would. Messages are written only between `~/start` and `~/stop`, stamped with the node
clock's receive time in ns.

Parameters (koch_record.settings.RecorderSettings): topics and types (required, same length),
output_dir, storage ('mcap' | 'sqlite3'), episode_prefix. Services (std_srvs/srv/Trigger): `~/start` opens
`<output_dir>/<prefix>_<NNNN>` and answers its path; `~/stop` closes it and answers
`<bag path> <topic>=<count> ...`.
"""

from __future__ import annotations

import importlib
import threading
from functools import partial
from pathlib import Path
from typing import Any

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from std_srvs.srv import Trigger

from koch_common.node_params import declare_settings
from koch_common.node_runner import run_node
from koch_record.bag_writer import BagWriter, BagWriterError, next_bag_path
from koch_record.settings import RecorderSettings

# Best effort accepts both reliable and best-effort publishers; cameras publish best effort.
IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
# Joint states are small and every one matters for the resampler: reliable, deep queue.
DEFAULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"}


def message_class(type_name: str) -> Any:
    """'sensor_msgs/msg/JointState' -> the rclpy message class."""
    parts = type_name.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"message type {type_name!r} must look like 'sensor_msgs/msg/JointState'")
    package, _, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"message type {type_name!r} cannot be imported: {err}") from err


def _qos_time(duration: Duration) -> QosTime:
    sec, nsec = divmod(int(duration.nanoseconds), 1_000_000_000)
    return QosTime(sec=sec, nsec=nsec)


def to_bag_qos(profile: QoSProfile) -> Qos:
    """rclpy QoS -> rosbags QoS; the enums share their numeric values (rmw's)."""
    return Qos(
        history=QosHistory(int(profile.history)),
        depth=int(profile.depth),
        reliability=QosReliability(int(profile.reliability)),
        durability=QosDurability(int(profile.durability)),
        deadline=_qos_time(profile.deadline),
        lifespan=_qos_time(profile.lifespan),
        liveliness=QosLiveliness(int(profile.liveliness)),
        liveliness_lease_duration=_qos_time(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


class RecorderNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        # Set before Node.__init__ so destroy_node works even if a parameter check below fails.
        self._lock = threading.Lock()
        self._bag: BagWriter | None = None
        super().__init__("recorder", **kwargs)
        # Every parameter, its default and description: koch_record.settings.RecorderSettings.
        settings = declare_settings(self, RecorderSettings)
        self.output_dir = Path(settings.output_dir)
        self.storage = settings.storage
        self.topics = settings.topics
        self.types = settings.types
        self.prefix = settings.episode_prefix
        for topic, type_name in zip(self.topics, self.types, strict=True):
            qos = IMAGE_QOS if type_name in IMAGE_TYPES else DEFAULT_QOS
            self.create_subscription(
                message_class(type_name), topic, partial(self._on_message, topic), qos, raw=True
            )
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.get_logger().info(f"recording {self.topics} into {self.output_dir} ({self.storage}) on ~/start")

    @property
    def recording_counts(self) -> dict[str, int] | None:
        """Messages written per topic to the open bag, or None when not recording."""
        with self._lock:
            return dict(self._bag.counts) if self._bag is not None else None

    def _on_message(self, topic: str, data: bytes) -> None:
        receive_ns = self.get_clock().now().nanoseconds
        with self._lock:
            if self._bag is not None:
                self._bag.write(topic, receive_ns, data)

    def _offered_qos(self, topic: str) -> list[Qos]:
        return [to_bag_qos(info.qos_profile) for info in self.get_publishers_info_by_topic(topic)]

    def _on_start(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self._bag is not None:
                response.success = False
                response.message = f"already recording to {self._bag.final_path}; call ~/stop first"
                return response
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                bag = BagWriter(next_bag_path(self.output_dir, self.prefix), storage=self.storage)
                bag.open()
            except (OSError, BagWriterError) as err:
                response.success = False
                response.message = f"cannot start recording: {err}"
                return response
            try:
                for topic, type_name in zip(self.topics, self.types, strict=True):
                    bag.add_topic(topic, type_name, self._offered_qos(topic))
            except BagWriterError as err:
                bag.abort(discard=True)
                response.success = False
                response.message = f"cannot start recording: {err}"
                return response
            self._bag = bag
        self.get_logger().info(f"recording episode {bag.final_path}")
        response.success = True
        response.message = str(bag.final_path)
        return response

    def _on_stop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            bag, self._bag = self._bag, None
            if bag is None:
                response.success = False
                response.message = "not recording; call ~/start first"
                return response
            path = bag.close()
        self.get_logger().info(f"saved {path}: {bag.counts}")
        response.success = True
        response.message = " ".join([str(path), *(f"{topic}={n}" for topic, n in bag.counts.items())])
        return response

    def destroy_node(self) -> None:
        # A clean shutdown mid-episode keeps what was recorded as a finished bag.
        with self._lock:
            bag, self._bag = self._bag, None
        if bag is not None:
            self.get_logger().warning(f"shutting down while recording; closing {bag.final_path}")
            bag.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(RecorderNode, args)

"""The recorder node's parameters, declared once (ROS-free): defaults, descriptions, constraints."""

from __future__ import annotations

from dataclasses import dataclass

from koch_common.config import ConfigError
from koch_common.settings import REQUIRED, setting
from koch_record.bag_writer import STORAGES


@dataclass(frozen=True, kw_only=True)
class RecorderSettings:
    topics: list[str] = setting(REQUIRED, "topics to record, e.g. ['/follower/joint_states', '/head/color/image_raw']")
    types: list[str] = setting(
        REQUIRED, "message type of each topic, in the same order, e.g. ['sensor_msgs/msg/JointState', "
        "'sensor_msgs/msg/Image']")
    output_dir: str = setting("bags", "folder of the episode bags (created when missing)")
    storage: str = setting("mcap", "rosbag2 storage plugin of the bags", choices=tuple(STORAGES))
    episode_prefix: str = setting("episode", "bag names: <output_dir>/<episode_prefix>_<NNNN>, the next free index")

    def validate(self) -> RecorderSettings:
        if not self.topics or len(self.topics) != len(self.types):
            raise ConfigError(
                f"parameters topics ({len(self.topics)}) and types ({len(self.types)}) must be non-empty "
                "lists of the same length, e.g. topics:=['/follower/joint_states'] "
                "types:=['sensor_msgs/msg/JointState']"
            )
        return self

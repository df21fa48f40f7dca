"""The recorder over real DDS: what is published between ~/start and ~/stop ends up in an MCAP bag,
byte-compatible with what rosbags (and ros2 bag) read back."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosReliability
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from koch_bringup.ros_session import RosSession, ros_session, wait_for
from koch_common.image_codec import from_fields, to_fields
from koch_record.bag_writer import BagWriter, BagWriterError, next_bag_path
from koch_record.recorder_node import RecorderNode

pytestmark = pytest.mark.dds

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
STATE_TOPIC = "/rec_test/follower/joint_states"
IMAGE_TOPIC = "/rec_test/head/color/image_raw"


def call(ros: RosSession, node: Node, service: str) -> Trigger.Response:
    return ros.call(node, Trigger, service, Trigger.Request())


def joint_state(i: int) -> JointState:
    msg = JointState()
    msg.header.stamp.sec = 100 + i // 50
    msg.header.stamp.nanosec = (i % 50) * 20_000_000
    msg.name = JOINTS
    msg.position = [0.01 * i + 0.1 * j for j in range(6)]
    msg.velocity = [float(i)] * 6
    return msg


def image(i: int) -> tuple[Image, np.ndarray]:
    rgb = np.random.default_rng(i).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    fields = to_fields(rgb, "rgb8")
    msg = Image(
        height=fields.height,
        width=fields.width,
        encoding=fields.encoding,
        is_bigendian=fields.is_bigendian,
        step=fields.step,
        data=fields.data,
    )
    msg.header.stamp.sec = 200 + i
    msg.header.frame_id = "head_camera"
    return msg, rgb


def test_records_published_messages_into_an_mcap_bag(tmp_path: Path) -> None:
    n_states, n_images = 40, 12
    with ros_session() as ros:
        recorder = ros.add(
            RecorderNode(
                context=ros.context,
                parameter_overrides=[
                    Parameter("output_dir", value=str(tmp_path)),
                    Parameter("storage", value="mcap"),
                    Parameter("topics", value=[STATE_TOPIC, IMAGE_TOPIC]),
                    Parameter("types", value=["sensor_msgs/msg/JointState", "sensor_msgs/msg/Image"]),
                ],
            )
        )
        talker = ros.node("rec_test_talker")
        state_pub = talker.create_publisher(JointState, STATE_TOPIC, 100)
        image_pub = talker.create_publisher(
            Image, IMAGE_TOPIC, QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        start, stop = "/recorder/start", "/recorder/stop"
        wait_for(lambda: state_pub.get_subscription_count() > 0, what="recorder subscribing joint states")
        wait_for(lambda: image_pub.get_subscription_count() > 0, what="recorder subscribing images")

        # Published before ~/start: must not be recorded.
        state_pub.publish(joint_state(999))
        assert not call(ros, talker, stop).success, "stop without start must fail"

        started = call(ros, talker, start)
        assert started.success, started.message
        assert started.message == str(tmp_path / "episode_0000")
        again = call(ros, talker, start)
        assert not again.success and "already recording" in again.message

        images = []
        for i in range(n_states):
            state_pub.publish(joint_state(i))
            if i % 3 == 0 and len(images) < n_images:
                msg, rgb = image(len(images))
                image_pub.publish(msg)
                images.append(rgb)
            time.sleep(0.002)  # paced like a 500 Hz driver; best-effort images are not flooded
        expected = {STATE_TOPIC: n_states, IMAGE_TOPIC: n_images}
        wait_for(lambda: recorder.recording_counts == expected, what=f"counts {expected}")
        # The bag is only under its final name once stopped.
        assert not (tmp_path / "episode_0000").exists()

        stopped = call(ros, talker, stop)
        assert stopped.success, stopped.message
        assert stopped.message.split() == [
            str(tmp_path / "episode_0000"),
            f"{STATE_TOPIC}={n_states}",
            f"{IMAGE_TOPIC}={n_images}",
        ]

        assert call(ros, talker, start).message == str(tmp_path / "episode_0001"), "next free index"
        assert call(ros, talker, stop).success

    bag = tmp_path / "episode_0000"
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == "mcap"
    assert [p.endswith(".mcap") for p in metadata["relative_file_paths"]] == [True]
    assert not list(tmp_path.glob(".*partial*")), "no partial bag left behind"

    with AnyReader([bag]) as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == expected
        image_conn = next(c for c in reader.connections if c.topic == IMAGE_TOPIC)
        assert image_conn.ext.offered_qos_profiles[0].reliability == QosReliability.BEST_EFFORT
        states, frames = [], []
        for conn, receive_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            assert receive_ns > 1_600_000_000 * 10**9, "receive time is the node's wall clock in ns"
            (states if conn.topic == STATE_TOPIC else frames).append(msg)

    for i, msg in enumerate(states):
        sent = joint_state(i)
        assert list(msg.name) == JOINTS
        assert np.array_equal(msg.position, sent.position)
        assert np.array_equal(msg.velocity, sent.velocity)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (
            sent.header.stamp.sec,
            sent.header.stamp.nanosec,
        )
    for i, msg in enumerate(frames):
        assert msg.header.frame_id == "head_camera" and msg.header.stamp.sec == 200 + i
        decoded = from_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
        assert np.array_equal(decoded, images[i])


def test_bag_writer_keeps_partial_bags_out_of_the_final_name(tmp_path: Path) -> None:
    final = next_bag_path(tmp_path, "episode")
    writer = BagWriter(final, storage="sqlite3")
    writer.open()
    writer.add_topic("/x", "sensor_msgs/msg/JointState")
    with pytest.raises(BagWriterError, match="call add_topic first"):
        writer.write("/y", 1, b"")
    writer.abort()
    assert not final.exists() and (tmp_path / ".episode_0000.partial").is_dir()
    assert next_bag_path(tmp_path, "episode").name == "episode_0001", "a partial bag keeps its index"
    with (
        pytest.raises(BagWriterError, match="unknown to the rosbags typestore"),
        BagWriter(tmp_path / "other", storage="sqlite3") as bad,
    ):
        bad.add_topic("/x", "sensor_msgs/JointState")
    with pytest.raises(BagWriterError, match="not supported"):
        BagWriter(tmp_path / "x", storage="rosbag1")

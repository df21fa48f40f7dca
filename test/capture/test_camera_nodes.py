"""Camera nodes over real DDS: sim (head + wrist, RGB + depth) and file sources, diagnostics, reconnect."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from visualization_msgs.msg import MarkerArray

from koch_bringup.ros_session import RosSession, ros_session, wait_for
from koch_camera.camera_node import CameraNode
from koch_camera.file_source import write_video
from koch_camera.settings import load_camera
from koch_camera.sim_source import sim_camera_config
from koch_camera.source import DeviceMissingError
from koch_common.image_codec import from_fields
from koch_common.robot import load_koch
from koch_sim.render import SceneRenderer
from koch_sim.sim_config import load_sim
from koch_sim.tasks import sample_layout
from koch_sim.world_msgs import markers_to_objects, objects_to_markers

pytestmark = pytest.mark.dds

ARM = load_koch().follower
CALIBRATION = """\
image_width: 640
image_height: 480
camera_matrix: {rows: 3, cols: 3, data: [610.5, 0, 322.1, 0, 611.2, 239.4, 0, 0, 1]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0.11, -0.2, 0.001, 0.002, 0.05]}
"""


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _array(image: Image) -> np.ndarray:
    return from_fields(image.height, image.width, image.encoding, image.step, bytes(image.data), image.is_bigendian)


def _collect(ros: RosSession, ns: str, depth: bool = True) -> dict[str, list]:
    probe = ros.node(f"probe_{ns}")
    got: dict[str, list] = {"color": [], "info": [], "depth": [], "depth_info": []}
    probe.create_subscription(Image, f"/{ns}/color/image_raw", got["color"].append, qos_profile_sensor_data)
    probe.create_subscription(CameraInfo, f"/{ns}/color/camera_info", got["info"].append, qos_profile_sensor_data)
    if depth:
        probe.create_subscription(Image, f"/{ns}/depth/image_raw", got["depth"].append, qos_profile_sensor_data)
        probe.create_subscription(CameraInfo, f"/{ns}/depth/camera_info", got["depth_info"].append,
                                  qos_profile_sensor_data)
    return got


def _check_stream(got: dict[str, list], encoding: str) -> None:
    """Increasing capture stamps, the encoding, and a CameraInfo stamped like its image."""
    images = list(got["color"])
    stamps = [_stamp(i) for i in images]
    assert np.all(np.diff(stamps) > 0), "capture stamps must increase"
    assert all(i.encoding == encoding for i in images)
    last = images[-1]
    infos = {_stamp(i): i for i in got["info"]}
    assert set(stamps) & set(infos), "CameraInfo carries the stamp of the image it describes"
    info = next(iter(infos.values()))
    assert (info.width, info.height) == (last.width, last.height) and info.k[0] > 0 and len(info.p) == 12
    assert info.header.frame_id == last.header.frame_id != ""


def _check_sim_view(name: str, got: dict[str, list], q: np.ndarray, objects: tuple) -> None:
    sim = sim_camera_config(load_camera("cameras/sim.yaml", name))
    renderer = SceneRenderer(load_koch(), sim, name, sim.camera.width, sim.camera.height)
    want_rgb, want_depth = renderer.render_rgbd(q, objects)
    renderer.close()
    # the depth the node rendered for this world state arrives over DDS bit for bit
    wait_for(lambda: got["depth"] and np.array_equal(_array(got["depth"][-1]), want_depth), 15.0,
             f"{name} depth of the published world state")
    count = len(got["color"])
    wait_for(lambda: len(got["color"]) > count + 5, 10.0, f"more {name} images")
    _check_stream(got, "rgb8")
    np.testing.assert_array_equal(_array(got["color"][-1]), want_rgb)
    depth = got["depth"][-1]
    assert depth.encoding == "16UC1" and depth.step == depth.width * 2
    assert _stamp(depth) in {_stamp(i) for i in got["color"]}, "colour and depth share the capture stamp"
    assert got["depth_info"] and list(got["depth_info"][-1].k) == list(got["info"][-1].k)
    np.testing.assert_allclose(np.reshape(got["info"][-1].k, (3, 3)), renderer.camera_matrix())


def test_sim_head_and_wrist_publish_rgb_and_depth_of_the_world_state() -> None:
    q = np.array(load_koch().home)
    layout = sample_layout("pick_color", 4, load_sim())
    remaps = ["--ros-args", "-r", "joint_states:=/sim/joint_states", "-r", "objects:=/sim/objects"]
    with ros_session() as ros:
        for name in ("head", "wrist"):
            ros.add(CameraNode(context=ros.context, namespace=name, cli_args=remaps, parameter_overrides=[
                Parameter("config", value="cameras/sim.yaml"), Parameter("camera", value=name)]))
        streams = {name: _collect(ros, name) for name in ("head", "wrist")}
        pub_node = ros.node("world")
        markers = objects_to_markers(layout.objects, pub_node.get_clock().now().to_msg())
        objects = markers_to_objects(markers)  # what the nodes receive: colours as float32
        objects_pub = pub_node.create_publisher(MarkerArray, "/sim/objects", 10)
        joint_pub = pub_node.create_publisher(JointState, "/sim/joint_states", 10)

        def publish() -> None:
            joint_pub.publish(JointState(name=ARM.names, position=list(q)))
            objects_pub.publish(markers)

        pub_node.create_timer(0.05, publish)
        for name, got in streams.items():
            _check_sim_view(name, got, q, objects)
        # the head sees the table 0.45 m below; the wrist camera, near the table, sees it much closer
        head = _array(streams["head"]["depth"][-1])
        wrist = _array(streams["wrist"]["depth"][-1])
        assert head.max() == round(load_sim().camera.position[2] * 1000) and 0 < wrist.min() < head.min()


def test_file_camera_streams_reports_its_disappearance_and_comes_back(tmp_path: Path) -> None:
    frames = [np.full((48, 64, 3), (10 * i, 100, 200), np.uint8) for i in range(10)]
    video = write_video(tmp_path / "recording.mp4", frames, fps=30)
    calibration = tmp_path / "calibration.yaml"
    calibration.write_text(CALIBRATION)
    params = [Parameter("source", value="file"), Parameter("path", value=str(video)),
              Parameter("jpeg", value=True), Parameter("calibration", value=str(calibration)),
              Parameter("reconnect_interval_s", value=0.2), Parameter("diagnostics_period_s", value=0.25)]
    with ros_session() as ros:
        with pytest.raises(DeviceMissingError, match="not found; give path:="):
            CameraNode(context=ros.context, namespace="missing",
                       parameter_overrides=[Parameter("source", value="file"), Parameter("path", value="/no/x.mp4")])
        ros.add(CameraNode(context=ros.context, namespace="replay", parameter_overrides=params))
        got = _collect(ros, "replay", depth=False)
        probe = ros.node("diag_probe")
        jpegs: list[CompressedImage] = []
        statuses: list = []
        probe.create_subscription(CompressedImage, "/replay/color/image_raw/compressed", jpegs.append,
                                  qos_profile_sensor_data)
        probe.create_subscription(DiagnosticArray, "/diagnostics",
                                  lambda m: statuses.extend(s for s in m.status if "/replay/camera" in s.name), 10)
        wait_for(lambda: len(got["color"]) > 10 and jpegs, 15.0, "replayed images")
        _check_stream(got, "rgb8")
        assert (got["color"][-1].width, got["color"][-1].height) == (64, 48)
        info = got["info"][-1]  # the 640x480 calibration scaled to the 64x48 recording
        assert info.k[0] == pytest.approx(61.05) and info.d[0] == pytest.approx(0.11)
        jpeg = cv2.imdecode(np.frombuffer(bytes(jpegs[-1].data), np.uint8), cv2.IMREAD_COLOR)
        assert jpeg.shape == (48, 64, 3) and "jpeg" in jpegs[-1].format

        video.rename(tmp_path / "unplugged.mp4")  # the camera disappears
        wait_for(lambda: statuses and statuses[-1].level == DiagnosticStatus.ERROR, 10.0,
                 "an ERROR status for the lost camera")
        lost = statuses[-1]
        assert "disappeared" in lost.message or "not found" in lost.message
        assert dict((v.key, v.value) for v in lost.values)["connected"] == "false"
        before = _stamp(got["color"][-1])
        (tmp_path / "unplugged.mp4").rename(video)  # ... and comes back
        wait_for(lambda: statuses[-1].level == DiagnosticStatus.OK and
                 dict((v.key, v.value) for v in statuses[-1].values)["reconnects"] == "1", 10.0, "reconnection")
        wait_for(lambda: _stamp(got["color"][-1]) > before, 10.0, "images after the reconnection")
        values = dict((v.key, v.value) for v in statuses[-1].values)
        assert int(values["frames_published"]) > 10 and float(values["latency_p99_ms"]) >= 0
        assert {"delivered_fps", "dropped_frames", "latency_p50_ms"} <= set(values)

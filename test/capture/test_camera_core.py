"""Camera cores without ROS: settings, calibration, converter, sources' errors, stats, clock mapping."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from koch_camera.file_source import VideoFileSource, write_video
from koch_camera.settings import CameraSettings, load_calibration, load_camera, load_cameras
from koch_camera.source import ClockMapper, DeviceMissingError, SourceError
from koch_camera.sources import make_source
from koch_camera.stats import CaptureStats
from koch_camera.v4l2_source import V4l2Source
from koch_common.config import ConfigError
from koch_common.image_codec import from_fields, from_image_msg, to_fields, to_image_msg, to_rgb

CALIBRATION = """\
image_width: 640
image_height: 480
camera_name: head
camera_matrix: {rows: 3, cols: 3, data: [610.5, 0, 322.1, 0, 611.2, 239.4, 0, 0, 1]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0.11, -0.2, 0.001, 0.002, 0.05]}
rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
projection_matrix: {rows: 3, cols: 4, data: [600.0, 0, 320.0, 0, 0, 601.0, 240.0, 0, 0, 0, 1, 0]}
"""


def test_camera_files_load_as_typed_settings() -> None:
    sim = load_cameras("cameras/sim.yaml")
    assert set(sim) == {"head", "wrist"} and sim["wrist"].mount == "wrist" and sim["head"].depth
    real = load_cameras("cameras/koch_real.yaml")
    assert real["head"].fourcc == "MJPG" and real["head_rgbd"].source == "realsense"
    with pytest.raises(ConfigError, match="no camera named 'left'"):
        load_camera("cameras/sim.yaml", "left")


@pytest.mark.parametrize("change, message", [
    ({"source": "gige"}, "camera source 'gige' is not supported"),
    ({"fourcc": "H264"}, "fourcc='H264' is not supported"),
    ({"width": 640}, "give both"),
    ({"source": "file"}, "needs path:="),
])
def test_bad_settings_are_refused_with_the_fix(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CameraSettings(**change).validate()


def test_calibration_yaml_becomes_intrinsics(tmp_path: Path) -> None:
    path = tmp_path / "head.yaml"
    path.write_text(CALIBRATION)
    intr = load_calibration(str(path))
    assert (intr.width, intr.height) == (640, 480)
    assert intr.k[0, 0] == 610.5 and intr.d[0] == 0.11 and intr.projection()[1, 1] == 601.0
    half = intr.scaled(320, 240)
    assert half.k[0, 0] == pytest.approx(305.25) and half.k[1, 2] == pytest.approx(119.7)


@pytest.mark.parametrize("encoding, dtype, shape", [
    ("rgb8", np.uint8, (5, 7, 3)), ("bgr8", np.uint8, (5, 7, 3)), ("mono8", np.uint8, (5, 7)),
    ("16UC1", np.uint16, (5, 7)), ("32FC1", np.float32, (5, 7)),
])
def test_converter_round_trips_every_encoding_losslessly(encoding: str, dtype, shape) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    array = (rng.integers(0, info.max, shape, endpoint=True) if info else rng.normal(size=shape)).astype(dtype)
    f = to_fields(array, encoding)
    assert f.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(from_fields(f.height, f.width, f.encoding, f.step, f.data, f.is_bigendian), array)
    msg = to_image_msg(array, encoding)  # cv_bridge when installed, the fields otherwise
    assert msg.encoding == encoding and msg.step == f.step
    np.testing.assert_array_equal(from_image_msg(msg), array)


def test_depth_in_millimetres_survives_padding_and_big_endian() -> None:
    depth = np.array([[0, 1, 65535], [300, 550, 4096]], np.uint16)
    padded_step = 8  # rows padded to 8 bytes, as some drivers do
    big = np.zeros((2, padded_step), np.uint8)
    big[:, :6] = depth.astype(">u2").view(np.uint8).reshape(2, 6)
    np.testing.assert_array_equal(from_fields(2, 3, "16UC1", padded_step, big.tobytes(), is_bigendian=1), depth)
    assert to_rgb(np.zeros((2, 2), np.uint8), "mono8").shape == (2, 2, 3)


def test_v4l2_device_missing_names_the_device_and_the_fix() -> None:
    source = V4l2Source(CameraSettings(source="v4l2", device="/dev/v4l/by-id/usb-no-such-camera"), lambda: 0)
    with pytest.raises(DeviceMissingError, match="usb-no-such-camera not found.*device:="):
        source.open()


def test_v4l2_has_no_depth() -> None:
    with pytest.raises(ValueError, match="source:=realsense"):
        make_source(CameraSettings(source="v4l2", depth=True), lambda: 0)


@pytest.mark.skipif(importlib.util.find_spec("pyrealsense2") is not None,
                    reason="pyrealsense2 is installed: the missing-package error cannot happen")
def test_realsense_without_pyrealsense2_names_the_install_command() -> None:
    with pytest.raises(SourceError, match="pip install pyrealsense2"):
        make_source(CameraSettings(source="realsense", depth=True), lambda: 0)


@pytest.mark.video
def test_file_source_replays_frames_and_reports_a_missing_or_broken_file(tmp_path: Path) -> None:
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(6)]
    path = write_video(tmp_path / "rec.mp4", frames, fps=30)
    clock = iter(range(1000, 10**6, 1000))
    source = VideoFileSource(str(path), fps=200.0, clock=lambda: next(clock), loop=True)
    source.open()
    got = [source.read() for _ in range(10)]  # loops past the end
    assert got[0].color.shape == (48, 64, 3) and got[0].encoding == "rgb8"
    assert [f.stamp_ns for f in got] == sorted({f.stamp_ns for f in got})
    assert abs(int(got[3].color.mean()) - 60) <= 3 and abs(int(got[6].color.mean()) - 0) <= 3
    assert source.intrinsics().width == 64
    path.rename(tmp_path / "gone.mp4")
    with pytest.raises(DeviceMissingError, match="disappeared"):
        source.read()
    source.close()
    with pytest.raises(DeviceMissingError, match="not found"):
        source.open()
    (tmp_path / "gone.mp4").write_bytes(b"not a video")
    (tmp_path / "gone.mp4").rename(path)
    with pytest.raises(SourceError, match="cannot be decoded"):
        source.open()


def test_stats_count_dropped_frames_and_reconnects() -> None:
    stats = CaptureStats()
    stats.up()
    for seq in (0, 1, 2, 5, 6):
        stats.frame(seq, 0.002)
    stats.down("unplugged")
    stats.up()
    stats.frame(100, 0.004)  # a re-opened device numbers its frames afresh: not a drop
    stats.report(0.0)
    report = stats.report(1.0)
    assert report.dropped == 2 and report.published == 6 and report.reconnects == 1 and report.connected
    assert report.last_error == "unplugged"


def test_clock_mapper_keeps_the_device_spacing_and_removes_transport_jitter() -> None:
    mapper = ClockMapper()
    hw = np.arange(10) * 33_000_000 + 5_000_000_000
    offset = 1_000_000_000_000
    jitter = np.array([3, 1, 7, 2, 9, 1, 4, 1, 6, 2]) * 1_000_000
    stamps = [mapper.to_host(int(h), int(h + offset + j)) for h, j in zip(hw, jitter)]
    # after the least-delayed sample (1 ms) every stamp is the hardware time plus that offset
    assert stamps[1:] == [int(h + offset + 1_000_000) for h in hw[1:]]

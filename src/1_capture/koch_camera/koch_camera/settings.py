"""Camera settings: typed dataclasses loaded from `config/cameras/*.yaml`, and calibration files.

A cameras file holds several named cameras (head, left_wrist, ...); the camera node picks one
with its `config` and `camera` parameters (CameraFile) and every CameraSettings field is also a
ROS parameter of the same name and description, which overrides the file. An optional calibration
YAML (the format ROS's camera_calibration writes) gives the CameraInfo; without one the source's
own intrinsics are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from koch_common.config import ConfigError, from_dict, read_yaml, resolve_config_path
from koch_common.settings import setting

SOURCES = ("sim", "file", "v4l2", "realsense")
FOURCCS = ("MJPG", "YUYV")


@dataclass(frozen=True, kw_only=True)
class CameraFile:
    """Where the camera node reads its CameraSettings from, before its parameters override them."""

    config: str = setting("", "cameras file (config/cameras/*.yaml, or a path) holding this camera's settings; "
                          "empty: the defaults; every other parameter overrides the file")
    camera: str = setting("", "name of the camera in the config file; empty: the last part of the node's namespace")


@dataclass
class CameraSettings:
    source: str = setting("sim", "what captures the frames: sim (the rendered simulated scene), file (a video "
                          "replayed as a camera), v4l2 (a USB camera) or realsense", choices=SOURCES)
    frame_id: str = setting("", "frame_id of the images and CameraInfo; empty: <namespace>_camera_optical_frame")
    width: int = setting(0, "image width in pixels, with height; 0: the source's own (sim.yaml's camera, the "
                         "file's, the device's default)", minimum=0)
    height: int = setting(0, "image height in pixels, with width; 0: the source's own", minimum=0)
    fps: float = setting(30.0, "frame rate to capture at (Hz)")
    depth: bool = setting(False, "also publish depth/image_raw (16UC1 mm, registered to colour, same stamp) and "
                          "depth/camera_info (sim and realsense)")
    jpeg: bool = setting(False, "also publish color/image_raw/compressed (JPEG), for remote viewing")
    jpeg_quality: int = setting(85, "JPEG quality of color/image_raw/compressed", minimum=1, maximum=100)
    calibration: str = setting("", "camera_calibration YAML giving the CameraInfo (a path or under config/), scaled "
                               "to the image size; empty: the source's own intrinsics")
    # v4l2
    device: str = setting("/dev/video0", "v4l2: /dev/videoN, a /dev/v4l/by-id/... path (stable across replugs) or "
                          "an index")
    fourcc: str = setting("MJPG", "v4l2 pixel format: MJPG or YUYV (uncompressed: lower latency, more USB bandwidth)")
    exposure: float = setting(-1.0, "v4l2 exposure_time_absolute (100 us units); -1: auto exposure")
    white_balance: int = setting(-1, "v4l2 white balance colour temperature (kelvin); -1: auto white balance")
    # realsense
    serial: str = setting("", "realsense: serial number of the camera; empty: the first RealSense found")
    # file
    path: str = setting("", "file: the video replayed as a camera (any format PyAV/ffmpeg decodes, e.g. a LeRobot "
                        "dataset's mp4)")
    loop: bool = setting(True, "file: start again at the end of the video")
    # sim
    mount: str = setting("head", "sim: head (fixed above the table, looking down) or wrist (rides on the gripper)")
    focal_px: float = setting(0.0, "sim and file: focal length in pixels; 0: sim.yaml's focal length scaled to the "
                              "width (file: a 60 degree field of view)", minimum=0.0)
    # node
    reconnect_interval_s: float = setting(1.0, "after the source fails, re-open it every this many seconds")
    diagnostics_period_s: float = setting(1.0, "period of the /diagnostics messages (s)")

    def validate(self) -> CameraSettings:
        if self.source not in SOURCES:
            raise ConfigError(f"camera source {self.source!r} is not supported; use one of {list(SOURCES)}")
        if self.fourcc.upper() not in FOURCCS:
            raise ConfigError(f"pixel format fourcc={self.fourcc!r} is not supported; use one of {list(FOURCCS)}")
        if self.fps <= 0:
            raise ConfigError(f"fps={self.fps} must be positive")
        if self.width < 0 or self.height < 0 or (self.width == 0) != (self.height == 0):
            raise ConfigError(f"width={self.width}, height={self.height}: give both (pixels) or neither (0)")
        if self.source == "file" and not self.path:
            raise ConfigError("source file needs path:=<video file> (e.g. a LeRobot dataset's mp4)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality={self.jpeg_quality} must be in 1..100")
        return self


@dataclass
class CamerasFile:
    cameras: dict[str, CameraSettings] = field(default_factory=dict)


def load_cameras(path: str) -> dict[str, CameraSettings]:
    data = read_yaml(path)
    return from_dict(CamerasFile, data, where=str(resolve_config_path(path).name)).cameras


def load_camera(path: str, name: str) -> CameraSettings:
    cameras = load_cameras(path)
    if name not in cameras:
        raise ConfigError(f"{path}: no camera named {name!r}; it has {sorted(cameras)}")
    return cameras[name]


@dataclass
class Intrinsics:
    """What a CameraInfo carries, ROS-free."""

    width: int
    height: int
    k: np.ndarray                                 # 3x3
    d: list[float] = field(default_factory=lambda: [0.0] * 5)
    distortion_model: str = "plumb_bob"
    r: np.ndarray = field(default_factory=lambda: np.eye(3))
    p: np.ndarray | None = None                   # 3x4; None: K with a zero column

    def projection(self) -> np.ndarray:
        return self.p if self.p is not None else np.hstack([self.k, np.zeros((3, 1))])

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution (calibration at 1280x720 used at 640x360)."""
        sx, sy = width / self.width, height / self.height
        scale = np.diag([sx, sy, 1.0])
        return Intrinsics(width, height, scale @ self.k, list(self.d), self.distortion_model, self.r,
                          None if self.p is None else scale @ self.p)


def pinhole(width: int, height: int, focal_px: float) -> Intrinsics:
    return Intrinsics(width, height, np.array([[focal_px, 0.0, width / 2], [0.0, focal_px, height / 2], [0, 0, 1.0]]))


def load_calibration(path: str) -> Intrinsics:
    """A camera_calibration YAML (image_width, camera_matrix, distortion_coefficients, ...), every value
    checked: a hand-edited or truncated file is a ConfigError naming the key, never a wrong CameraInfo."""
    data = read_yaml(path)
    where = resolve_config_path(path)
    fix = "write it again with camera_calibration"

    def numbers(key: str, required: bool = True) -> np.ndarray | None:
        if key not in data:
            if required:
                raise ConfigError(f"{where}: calibration key {key!r} is missing ({fix})")
            return None
        entry = data[key]
        values = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: {key} must be a mapping whose `data` is a list of numbers, got {entry!r} "
                              f"({fix})")
        array = np.asarray(values, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ConfigError(f"{where}: {key} holds non-finite values {values} ({fix})")
        return array

    def matrix(key: str, rows: int, cols: int, required: bool = True) -> np.ndarray | None:
        values = numbers(key, required)
        if values is None:
            return None
        if values.size != rows * cols:
            raise ConfigError(f"{where}: {key} has {values.size} values, expected {rows}x{cols}")
        return values.reshape(rows, cols)

    def size(key: str) -> int:
        value = data.get(key)
        if value is None:
            raise ConfigError(f"{where}: calibration key {key!r} is missing ({fix})")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{where}: {key} must be a positive integer (pixels), got {value!r}")
        return value

    width, height = size("image_width"), size("image_height")
    distortion = numbers("distortion_coefficients", required=False)
    model = data.get("distortion_model", "plumb_bob")
    if not isinstance(model, str):
        raise ConfigError(f"{where}: distortion_model must be a name such as plumb_bob, got {model!r}")
    r = matrix("rectification_matrix", 3, 3, required=False)
    k = matrix("camera_matrix", 3, 3)
    assert k is not None  # required: matrix() raised otherwise
    return Intrinsics(width, height, k, [0.0] * 5 if distortion is None else distortion.tolist(), model,
                      np.eye(3) if r is None else r, matrix("projection_matrix", 3, 4, required=False))

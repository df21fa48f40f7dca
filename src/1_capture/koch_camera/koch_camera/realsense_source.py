"""Intel RealSense colour + depth through pyrealsense2 (optional dependency).

Depth is aligned to the colour image (`rs.align`), converted to 16UC1 millimetres, and both
images carry the frameset's one stamp: the device's hardware timestamp mapped onto the node's
clock by `ClockMapper`. The CameraInfo of both is the colour stream's intrinsics.
"""

from __future__ import annotations

import contextlib

import numpy as np

from koch_camera.settings import CameraSettings, Intrinsics
from koch_camera.source import Clock, ClockMapper, DeviceMissingError, Frame, SourceError, UnsupportedFormatError

INSTALL_HINT = "pip install pyrealsense2"


def import_realsense():
    try:
        import pyrealsense2 as rs
    except ImportError:
        raise SourceError(f"source realsense needs the pyrealsense2 package, which is not installed; "
                          f"install it with `{INSTALL_HINT}` (or apt install ros-<distro>-librealsense2)") from None
    return rs


class RealSenseSource:
    def __init__(self, settings: CameraSettings, clock: Clock) -> None:
        self.rs = import_realsense()  # fail at configuration time, with the install command
        self.s = settings
        self.clock = clock
        self.description = f"realsense {settings.serial or '(first found)'}"
        self._pipeline = None
        self._align = None
        self._mapper = ClockMapper()
        self._depth_to_mm = 1.0
        self._intrinsics: Intrinsics | None = None

    def open(self) -> None:
        rs = self.rs
        serials = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
        if not serials:
            raise DeviceMissingError("no RealSense camera found (unplugged?); check `rs-enumerate-devices`")
        if self.s.serial and self.s.serial not in serials:
            raise DeviceMissingError(f"RealSense {self.s.serial} not found; connected: {serials}")
        width, height = (self.s.width, self.s.height) if self.s.width else (640, 480)
        config = rs.config()
        if self.s.serial:
            config.enable_device(self.s.serial)
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, int(self.s.fps))
        if self.s.depth:
            config.enable_stream(rs.stream.depth, width, height, rs.format.z16, int(self.s.fps))
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(config)
        except RuntimeError as err:
            raise UnsupportedFormatError(
                f"RealSense cannot stream {width}x{height} @ {self.s.fps} fps (colour rgb8, depth z16): {err}; "
                "list its modes with `rs-enumerate-devices`") from None
        if self.s.depth:
            scale = profile.get_device().first_depth_sensor().get_depth_scale()  # metres per unit
            self._depth_to_mm = scale * 1000.0
            self._align = rs.align(rs.stream.color)
        color = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        k = np.array([[color.fx, 0.0, color.ppx], [0.0, color.fy, color.ppy], [0.0, 0.0, 1.0]])
        model = "plumb_bob" if color.model == rs.distortion.brown_conrady else str(color.model).split(".")[-1]
        self._intrinsics = Intrinsics(color.width, color.height, k, list(color.coeffs), model)
        self._mapper.reset()
        self._pipeline = pipeline

    def read(self) -> Frame:
        if self._pipeline is None:
            raise SourceError("RealSense is not open")
        try:
            frames = self._pipeline.wait_for_frames(int(3000 / self.s.fps) + 1000)
        except RuntimeError as err:
            raise DeviceMissingError(f"RealSense stopped delivering frames (unplugged?): {err}") from None
        received = self.clock()
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        # frameset timestamp in ms (hardware or global time domain) -> node clock
        stamp = self._mapper.to_host(int(frames.get_timestamp() * 1e6), received)
        depth = None
        if self.s.depth:
            raw = np.asanyarray(frames.get_depth_frame().get_data())
            depth = raw if abs(self._depth_to_mm - 1.0) < 1e-9 else \
                np.round(raw * self._depth_to_mm).clip(0, 65535).astype(np.uint16)
        return Frame(np.asanyarray(color.get_data()).copy(), "rgb8", stamp, int(color.get_frame_number()),
                     None if depth is None else np.ascontiguousarray(depth))

    def close(self) -> None:
        if self._pipeline is not None:
            with contextlib.suppress(RuntimeError):  # already stopped by the unplug
                self._pipeline.stop()
        self._pipeline = None

    def intrinsics(self) -> Intrinsics:
        if self._intrinsics is None:
            raise SourceError("RealSense intrinsics are known once it is open")
        return self._intrinsics

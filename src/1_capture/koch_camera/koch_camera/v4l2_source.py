"""USB/UVC cameras through OpenCV's V4L2 backend.

The device is a path (`/dev/video0`), a stable by-id/by-path link (`/dev/v4l/by-id/usb-...`,
which survives replugging and renumbering) or an index. The pixel format (MJPG or YUYV),
resolution, fps, exposure and white balance are requested and then read back: a camera that
silently falls back to another mode is an error naming what it gave instead. Stamps come from
the V4L2 buffer timestamp (CLOCK_MONOTONIC at the end of exposure/transfer), mapped onto the
node's clock, not from the time the frame was read.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2

from koch_camera.settings import CameraSettings, Intrinsics, pinhole
from koch_camera.source import Clock, DeviceMissingError, Frame, SourceError, UnsupportedFormatError


def _fourcc_str(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


class V4l2Source:
    def __init__(self, settings: CameraSettings, clock: Clock) -> None:
        self.s = settings
        self.clock = clock
        self.description = f"v4l2 {settings.device}"
        self._cap: cv2.VideoCapture | None = None
        self._sequence = 0
        self._size = (settings.width, settings.height)

    def _device(self) -> str | int:
        dev = self.s.device
        if dev.isdigit():
            return int(dev)
        if not Path(dev).exists():
            by_id = sorted(os.listdir("/dev/v4l/by-id")) if os.path.isdir("/dev/v4l/by-id") else []
            raise DeviceMissingError(
                f"camera device {dev} not found (unplugged?); cameras present: {by_id or 'none in /dev/v4l/by-id'}; "
                "set device:=<path>, preferably a /dev/v4l/by-id/ link")
        return str(Path(dev).resolve())

    def open(self) -> None:
        device = self._device()
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise DeviceMissingError(f"camera device {self.s.device} cannot be opened (busy or not a capture device)")
        fourcc = self.s.fourcc.upper()
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
        if self.s.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.s.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.s.height)
        cap.set(cv2.CAP_PROP_FPS, self.s.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
        if self.s.exposure >= 0:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)  # V4L2: 1 = manual, 3 = aperture priority (auto)
            cap.set(cv2.CAP_PROP_EXPOSURE, self.s.exposure)
        else:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 3)
        if self.s.white_balance >= 0:
            cap.set(cv2.CAP_PROP_AUTO_WB, 0)
            cap.set(cv2.CAP_PROP_WB_TEMPERATURE, self.s.white_balance)
        else:
            cap.set(cv2.CAP_PROP_AUTO_WB, 1)
        got_fourcc = _fourcc_str(cap.get(cv2.CAP_PROP_FOURCC))
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if got_fourcc != fourcc or (self.s.width and got != (self.s.width, self.s.height)):
            cap.release()
            raise UnsupportedFormatError(
                f"camera {self.s.device} does not support {fourcc} {self.s.width}x{self.s.height}: it gave "
                f"{got_fourcc} {got[0]}x{got[1]}; list its modes with `v4l2-ctl -d {self.s.device} "
                "--list-formats-ext` and set fourcc/width/height to one of them")
        self._size = got
        self._cap = cap

    def read(self) -> Frame:
        if self._cap is None:
            raise SourceError(f"camera {self.s.device} is not open")
        ok, bgr = self._cap.read()
        received = self.clock()
        if not ok or bgr is None:
            raise DeviceMissingError(f"camera {self.s.device} stopped delivering frames (unplugged?)")
        self._sequence += 1
        # buffer timestamp (ms, CLOCK_MONOTONIC) -> node clock, when it is plausible
        age_ns = time.monotonic_ns() - int(self._cap.get(cv2.CAP_PROP_POS_MSEC) * 1e6)
        stamp = received - age_ns if 0 <= age_ns < 1_000_000_000 else received
        return Frame(bgr, "bgr8", stamp, self._sequence)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None

    def intrinsics(self) -> Intrinsics:
        width, height = self._size
        # uncalibrated: a typical 70 degree horizontal field of view; give calibration:=<yaml> for real values
        return pinhole(width, height, width / (2 * 0.7002))

"""The one small interface every camera source implements, ROS-free.

A source is opened, read frame by frame (each read blocks until the next frame and returns it
with its capture time on the node's clock), and closed. A read that raises means the camera has
gone (unplugged, file removed): the node closes the source and re-opens it until it comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from koch_camera.settings import Intrinsics

Clock = Callable[[], int]  # nanoseconds on the ROS clock the stamps are published in


class SourceError(RuntimeError):
    """The camera cannot deliver frames; the message says why and what to do."""


class DeviceMissingError(SourceError):
    pass


class UnsupportedFormatError(SourceError):
    pass


@dataclass
class Frame:
    color: np.ndarray               # (H, W, 3) uint8
    encoding: str                   # rgb8 or bgr8 (no copy to reorder a device's BGR)
    stamp_ns: int                   # capture time on the node's clock; depth shares it
    sequence: int                   # device frame counter: gaps are dropped frames
    depth: np.ndarray | None = None  # (H, W) uint16 millimetres, registered to colour


class CameraSource(Protocol):
    description: str  # device path / file / "sim head": the diagnostics' hardware_id

    def open(self) -> None: ...
    def read(self) -> Frame: ...
    def close(self) -> None: ...
    def intrinsics(self) -> Intrinsics: ...


class Pacer:
    """Ticks at `fps` on the monotonic clock, like a free-running sensor.

    A tick that comes later than one period after its due time is dropped (the sensor would
    have overwritten it), and counted through the sequence number.
    """

    def __init__(self, fps: float) -> None:
        self.period_ns = int(1e9 / fps)
        self._start: int | None = None
        self.sequence = -1

    def wait(self) -> int:
        """Sleep until the next tick; returns its sequence number."""
        now = time.monotonic_ns()
        if self._start is None:
            self._start = now
            self.sequence = 0
            return 0
        due = self._start + (self.sequence + 1) * self.period_ns
        if now > due + self.period_ns:  # late: skip the ticks that were missed
            self.sequence = (now - self._start) // self.period_ns
            return self.sequence
        if due > now:
            time.sleep((due - now) / 1e9)
        self.sequence += 1
        return self.sequence


class ClockMapper:
    """Maps a device's hardware timestamps onto the ROS clock.

    offset = host receive time - hardware time; the smallest offset seen over a sliding window
    is the one with the least transport delay, so stamps keep the device's own spacing and are
    not delayed by USB/scheduling jitter. The window lets it follow clock drift.
    """

    def __init__(self, window: int = 300) -> None:
        self.window = window
        self._offsets: list[int] = []

    def to_host(self, hardware_ns: int, received_ns: int) -> int:
        self._offsets.append(received_ns - hardware_ns)
        if len(self._offsets) > self.window:
            self._offsets.pop(0)
        return hardware_ns + min(self._offsets)

    def reset(self) -> None:
        self._offsets.clear()

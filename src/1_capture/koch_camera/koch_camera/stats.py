"""Capture statistics for diagnostics (ROS-free): delivered fps, dropped frames, latency, connection."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass
class Report:
    connected: bool
    fps: float
    published: int
    dropped: int
    latency_p50_ms: float
    latency_p99_ms: float
    reconnects: int
    last_error: str


class CaptureStats:
    """Updated by the capture thread, read by the diagnostics timer; `report()` starts a new window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connected = False
        self.published = 0
        self.dropped = 0
        self.reconnects = 0
        self.last_error = ""
        self._last_sequence: int | None = None
        self._window_frames = 0
        self._window_latency: list[float] = []
        self._window_start: float | None = None

    def frame(self, sequence: int, latency_s: float) -> None:
        with self._lock:
            if self._last_sequence is not None and sequence > self._last_sequence + 1:
                self.dropped += sequence - self._last_sequence - 1
            self._last_sequence = sequence
            self.published += 1
            self._window_frames += 1
            self._window_latency.append(latency_s)

    def up(self) -> None:
        with self._lock:
            if not self.connected and self.last_error:
                self.reconnects += 1
            self.connected = True
            self._last_sequence = None  # a re-opened device counts from anywhere

    def down(self, error: str) -> None:
        with self._lock:
            self.connected = False
            self.last_error = error

    def report(self, now_s: float) -> Report:
        with self._lock:
            elapsed = now_s - self._window_start if self._window_start is not None else 0.0
            fps = self._window_frames / elapsed if elapsed > 0 else 0.0
            lat = np.array(self._window_latency) * 1e3 if self._window_latency else np.zeros(1)
            report = Report(self.connected, fps, self.published, self.dropped, float(np.percentile(lat, 50)),
                            float(np.percentile(lat, 99)), self.reconnects, self.last_error)
            self._window_frames = 0
            self._window_latency = []
            self._window_start = now_s
            return report

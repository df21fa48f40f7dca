"""The one resampler: turns irregular message streams into values at exact frame times.

Used offline by the bag converter and live by the policy node. Both push (stamp, value)
pairs into a `StreamBuffer` and ask `sample(t)`, so a frame means the same thing in the
dataset and on the robot.

Policies, per stream (from the feature mapping YAML):

- `hold`: the latest sample with stamp <= t. It is returned even when older than
  `max_staleness_s`, flagged `stale=True`, so callers decide what stale means to them.
- `asof`: the latest sample with stamp <= t, only if it is at most `tolerance_s` old
  (`max_staleness_s` when no tolerance is given); otherwise the stream is missing at t
  (`sample` returns None). The converter refuses an episode with a missing frame (a gap).
- `drop`: sampled like `asof`, but a frame where the stream is missing is dropped (offline:
  not written, counted in the quality report; live: the tick is skipped) instead of failing.

A sample stamped after t is never used: a model trained on these frames must not have
seen data the live robot could not have had yet. Stamps within `SAME_INSTANT_S` (1 us) of t
count as at t: a 30 Hz camera stamped in integer ns lands up to 0.5 ns off the float frame
time `t0 + k / 30`, and without this a frame would show the previous image.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

POLICIES = ("hold", "asof", "drop")
SAME_INSTANT_S = 1e-6


@dataclass(frozen=True)
class StreamSpec:
    name: str
    policy: str
    max_staleness_s: float
    tolerance_s: float | None = None  # asof/drop: the oldest usable sample; None = max_staleness_s

    @property
    def usable_age_s(self) -> float:
        """Oldest sample age `asof`/`drop` accept."""
        return self.max_staleness_s if self.tolerance_s is None else self.tolerance_s

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(
                f"stream {self.name!r}: policy {self.policy!r} is unknown; use one of {POLICIES}"
            )
        if not self.max_staleness_s > 0.0:
            raise ValueError(f"stream {self.name!r}: max_staleness_s must be > 0, got {self.max_staleness_s}")
        if self.tolerance_s is not None and not self.tolerance_s > 0.0:
            raise ValueError(f"stream {self.name!r}: tolerance_s must be > 0 or unset, got {self.tolerance_s}")


@dataclass(frozen=True)
class Sample:
    value: Any
    stamp_s: float
    age_s: float  # t - stamp_s, clipped at 0 for stamps within SAME_INSTANT_S after t
    stale: bool  # age_s > max_staleness_s (under asof/drop only when tolerance_s > max_staleness_s)


class StreamBuffer:
    """Time-ordered samples of one stream.

    `push` refuses a stamp older than the newest one already held (returns False and
    counts it in `out_of_order`), because accepting it could change the value an earlier
    `sample` call already returned, which the live path cannot undo. Equal stamps are
    accepted; the later push wins. `maxlen` bounds memory on the live path. push and sample
    are thread-safe (live: subscription callbacks and the control timer may run concurrently).
    """

    def __init__(self, spec: StreamSpec, maxlen: int | None = None) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"stream {spec.name!r}: maxlen must be >= 1 or None, got {maxlen}")
        self.spec = spec
        self.maxlen = maxlen
        self.out_of_order = 0
        self.pushed = 0
        self._stamps: list[float] = []
        self._values: list[Any] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def first_stamp(self) -> float | None:
        return self._stamps[0] if self._stamps else None

    @property
    def last_stamp(self) -> float | None:
        return self._stamps[-1] if self._stamps else None

    @property
    def stamps(self) -> list[float]:
        with self._lock:
            return list(self._stamps)

    def push(self, stamp_s: float, value: Any) -> bool:
        stamp_s = float(stamp_s)
        if not math.isfinite(stamp_s):
            raise ValueError(f"stream {self.spec.name!r}: stamp {stamp_s} is not finite")
        with self._lock:
            if self._stamps and stamp_s < self._stamps[-1]:
                self.out_of_order += 1
                return False
            self._stamps.append(stamp_s)
            self._values.append(value)
            self.pushed += 1
            if self.maxlen is not None and len(self._stamps) > self.maxlen:
                del self._stamps[0]
                del self._values[0]
            return True

    def sample(self, t_s: float) -> Sample | None:
        """The stream's value at time t under its policy, or None when it has none."""
        with self._lock:
            index = bisect.bisect_right(self._stamps, t_s + SAME_INSTANT_S) - 1
            if index < 0:
                return None
            stamp, value = self._stamps[index], self._values[index]
        age = max(0.0, t_s - stamp)
        stale = age > self.spec.max_staleness_s
        if self.spec.policy != "hold" and age > self.spec.usable_age_s:
            return None
        return Sample(value=value, stamp_s=stamp, age_s=age, stale=stale)


def grid(start_s: float, end_s: float, fps: float) -> np.ndarray:
    """Frame times `start + k / fps` for every k with time <= end (computed, not accumulated)."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if end_s < start_s:
        return np.empty(0, dtype=np.float64)
    # The tolerance keeps a frame that lands on `end` despite float rounding.
    count = math.floor((end_s - start_s) * fps + 1e-6) + 1
    times = start_s + np.arange(count, dtype=np.float64) / fps
    return times[times <= end_s + 1e-9]


@dataclass
class StreamReport:
    name: str
    samples_in: int
    frames: int = 0
    missing: int = 0
    stale: int = 0
    max_age_s: float = 0.0
    distinct_samples_used: int = 0
    input_rate_hz: float | None = None  # mean rate of the pushed samples; None with fewer than two
    max_gap_s: float = 0.0  # longest interval between consecutive input samples
    gaps: int = 0  # input intervals longer than the stream's max_staleness_s


@dataclass
class ResampleReport:
    frames: int
    streams: dict[str, StreamReport] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every stream had a fresh sample at every frame time."""
        return all(s.missing == 0 and s.stale == 0 for s in self.streams.values())


def resample_streams(
    buffers: Mapping[str, StreamBuffer], grid_times: Sequence[float] | np.ndarray
) -> tuple[list[dict[str, Sample | None]], ResampleReport]:
    """Sample every buffer at every grid time: one dict per frame, stream name -> Sample or None."""
    report = ResampleReport(frames=len(grid_times))
    used: dict[str, set[float]] = {}
    for name, buffer in buffers.items():
        span = (buffer.last_stamp or 0.0) - (buffer.first_stamp or 0.0)
        rate = (len(buffer) - 1) / span if len(buffer) > 1 and span > 0 else None
        steps = np.diff(np.asarray(buffer.stamps, dtype=np.float64))
        report.streams[name] = StreamReport(
            name=name,
            samples_in=len(buffer),
            frames=len(grid_times),
            input_rate_hz=rate,
            max_gap_s=float(steps.max()) if steps.size else 0.0,
            gaps=int((steps > buffer.spec.max_staleness_s).sum()),
        )
        used[name] = set()
    frames: list[dict[str, Sample | None]] = []
    for t in grid_times:
        frame: dict[str, Sample | None] = {}
        for name, buffer in buffers.items():
            sample = buffer.sample(float(t))
            frame[name] = sample
            stream_report = report.streams[name]
            if sample is None:
                stream_report.missing += 1
                continue
            stream_report.stale += int(sample.stale)
            stream_report.max_age_s = max(stream_report.max_age_s, sample.age_s)
            used[name].add(sample.stamp_s)
        frames.append(frame)
    for name, stamps in used.items():
        report.streams[name].distinct_samples_used = len(stamps)
    return frames, report


def first_all_fresh_time(buffers: Mapping[str, StreamBuffer]) -> float | None:
    """Earliest stamp at which every stream has a non-stale sample (None if there is none).

    Only stamps are candidates: freshness of a stream can only start at one of its own samples.
    """
    if not buffers or any(len(b) == 0 for b in buffers.values()):
        return None
    earliest = max(b.first_stamp for b in buffers.values())  # type: ignore[type-var]
    candidates = sorted({s for b in buffers.values() for s in b.stamps if s >= earliest})
    for t in candidates:
        samples = [b.sample(t) for b in buffers.values()]
        if all(s is not None and not s.stale for s in samples):
            return t
    return None


def common_window(buffers: Mapping[str, StreamBuffer]) -> tuple[float, float] | None:
    """(start, end) over which all streams have data: start as in `first_all_fresh_time`, end
    at the earliest last sample of any stream, so no frame extends a stream past its end."""
    start = first_all_fresh_time(buffers)
    if start is None:
        return None
    end = min(b.last_stamp for b in buffers.values())  # type: ignore[type-var]
    return (start, end) if end >= start else None

"""The one resampler: turns irregular message streams into values at exact frame times.

Used offline by the bag converter and live by the policy node. Both push (stamp, value)
pairs into a `StreamBuffer` and ask `sample(t)`, so a frame means the same thing in the
dataset and on the robot.

How each stream is aligned to a frame time t (`Align`, the feature mapping YAML's per-feature `align`):

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from koch_common.enums import StrEnum

SAME_INSTANT_S = 1e-6


class Align(StrEnum):
    """How a stream's samples are aligned to a frame time (see the module docstring); the value is the
    mapping YAML's `align`."""

    HOLD = "hold"
    ASOF = "asof"
    DROP = "drop"


ALIGN_CHOICES = tuple(a.value for a in Align)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    align: Align  # its text ("hold", ...) is accepted too and stored as the Align
    max_staleness_s: float
    tolerance_s: float | None = None  # asof/drop: the oldest usable sample; None = max_staleness_s

    @property
    def usable_age_s(self) -> float:
        """Oldest sample age `asof`/`drop` accept."""
        return self.max_staleness_s if self.tolerance_s is None else self.tolerance_s

    def __post_init__(self) -> None:
        if self.align not in ALIGN_CHOICES:
            raise ValueError(f"stream {self.name!r}: align {self.align!r} is unknown; use one of {ALIGN_CHOICES}")
        object.__setattr__(self, "align", Align(self.align))  # frozen: set once, here
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
        self._released = 0  # values before this index were released (offline streaming, no maxlen)
        self._lock = threading.Lock()
        # the oldest sample `sample` returns usable and not stale
        self._fresh_age_s = spec.max_staleness_s if spec.align is Align.HOLD else min(spec.max_staleness_s,
                                                                                      spec.usable_age_s)

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def first_stamp(self) -> float:
        """The oldest stamp held (asked for only once the buffer holds a sample)."""
        return self._stamps[0] if self._stamps else _empty(self.spec)

    @property
    def last_stamp(self) -> float:
        """The newest stamp held (asked for only once the buffer holds a sample)."""
        return self._stamps[-1] if self._stamps else _empty(self.spec)

    @property
    def stamps(self) -> list[float]:
        with self._lock:
            return list(self._stamps)

    def stamps_from(self, index: int) -> list[float]:
        """The stamps from position `index` on (an offline reader's cursor; no maxlen)."""
        with self._lock:
            return self._stamps[index:]

    def release_before(self, stamp_s: float) -> None:
        """Drop the values stamped before `stamp_s`, keeping their stamps (for the quality report):
        a streamed conversion never samples behind its latest frame, and a long bag's images
        would otherwise all stay in memory. A later `sample` there returns the value None."""
        with self._lock:
            end = bisect.bisect_left(self._stamps, stamp_s)
            for i in range(self._released, end):
                self._values[i] = None
            self._released = max(self._released, end)

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

    def latest(self) -> tuple[float, Any] | None:
        """The newest (stamp, value), or None when empty."""
        with self._lock:
            return (self._stamps[-1], self._values[-1]) if self._stamps else None

    def _index_at(self, t_s: float) -> int:
        """Index of the newest sample stamped at or before t (-1: none); with the lock held. The live
        path's newest sample is usually that one, so the search runs only when it is not."""
        last = len(self._stamps) - 1
        if last >= 0 and self._stamps[last] <= t_s + SAME_INSTANT_S:
            return last
        return bisect.bisect_right(self._stamps, t_s + SAME_INSTANT_S) - 1

    def fresh_at(self, t_s: float) -> bool:
        """Whether `sample(t_s)` would return a value that is not stale (without building the Sample:
        the policy node asks this of every stream on every tick)."""
        with self._lock:
            index = self._index_at(t_s)
            if index < 0:
                return False
            stamp = self._stamps[index]
        return t_s - stamp <= self._fresh_age_s

    def sample(self, t_s: float) -> Sample | None:
        """The stream's value at time t under its `align`, or None when it has none."""
        with self._lock:
            index = self._index_at(t_s)
            if index < 0:
                return None
            stamp, value = self._stamps[index], self._values[index]
        age = max(0.0, t_s - stamp)
        stale = age > self.spec.max_staleness_s
        if self.spec.align is not Align.HOLD and age > self.spec.usable_age_s:
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


def _input_report(name: str, buffer: StreamBuffer, frames: int) -> StreamReport:
    """What the stream's input looked like: rate, longest gap, gaps longer than max_staleness_s."""
    stamps = buffer.stamps
    span = stamps[-1] - stamps[0] if stamps else 0.0
    steps = np.diff(np.asarray(stamps, dtype=np.float64))
    return StreamReport(
        name=name,
        samples_in=len(stamps),
        frames=frames,
        input_rate_hz=(len(stamps) - 1) / span if len(stamps) > 1 and span > 0 else None,
        max_gap_s=float(steps.max()) if steps.size else 0.0,
        gaps=int((steps > buffer.spec.max_staleness_s).sum()),
    )


class _FrameTally:
    """Per stream, what the frames took from it: missing, stale, oldest sample, distinct samples."""

    def __init__(self, names: Iterable[str]) -> None:
        self.frames = 0
        self.missing = dict.fromkeys(names, 0)
        self.stale = dict.fromkeys(names, 0)
        self.max_age_s = dict.fromkeys(names, 0.0)
        self.used: dict[str, set[float]] = {name: set() for name in names}

    def add(self, frame: Mapping[str, Sample | None]) -> None:
        self.frames += 1
        for name, sample in frame.items():
            if sample is None:
                self.missing[name] += 1
                continue
            self.stale[name] += int(sample.stale)
            self.max_age_s[name] = max(self.max_age_s[name], sample.age_s)
            self.used[name].add(sample.stamp_s)

    def report(self, buffers: Mapping[str, StreamBuffer]) -> ResampleReport:
        report = ResampleReport(frames=self.frames)
        for name, buffer in buffers.items():
            stream = _input_report(name, buffer, self.frames)
            stream.missing, stream.stale = self.missing[name], self.stale[name]
            stream.max_age_s, stream.distinct_samples_used = self.max_age_s[name], len(self.used[name])
            report.streams[name] = stream
        return report


def resample_streams(
    buffers: Mapping[str, StreamBuffer], grid_times: Sequence[float] | np.ndarray
) -> tuple[list[dict[str, Sample | None]], ResampleReport]:
    """Sample every buffer at every grid time: one dict per frame, stream name -> Sample or None."""
    tally = _FrameTally(buffers)
    frames: list[dict[str, Sample | None]] = []
    for t in grid_times:
        frame = {name: buffer.sample(float(t)) for name, buffer in buffers.items()}
        tally.add(frame)
        frames.append(frame)
    return frames, tally.report(buffers)


def _fresh_everywhere(buffers: Mapping[str, StreamBuffer], t: float) -> bool:
    return all((s := b.sample(t)) is not None and not s.stale for b in buffers.values())


class FrameAssembler:
    """The converter's frames, one per `grid` time from the first stamp at which every stream has a
    fresh sample to the shortest stream's last stamp, each sampled as `resample_streams` does,
    emitted while the buffers fill.

    A frame at t is final once every stream holds a sample stamped after t: streams are pushed in
    stamp order (a buffer refuses an older stamp), so nothing pushed later can change what any
    stream gives at t. `ready()` returns the frames (and the window's start) that became final
    since the last call; `finish()`, once every message is in, the rest up to the end of the
    shortest stream. Fed everything and finished, or fed message by message (the converter then
    encodes video while it still reads the bag), it gives the same frames and report.
    Offline only: the buffers must keep every sample (no maxlen).
    """

    def __init__(self, buffers: Mapping[str, StreamBuffer], fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if any(b.maxlen is not None for b in buffers.values()):
            raise ValueError("FrameAssembler needs buffers that keep every sample (maxlen=None)")
        self.buffers = buffers
        self.fps = fps
        self.start: float | None = None
        self.end: float | None = None  # the shortest stream's last stamp, known at finish()
        self.finished = False
        self._tally = _FrameTally(buffers)
        self._scanned = dict.fromkeys(buffers, 0)  # per stream, stamps already tried as the start

    def ready(self) -> list[tuple[float, dict[str, Sample | None]]]:
        """Frames that nothing pushed later can change, not returned before."""
        if self.finished or any(len(b) == 0 for b in self.buffers.values()):
            return []
        horizon = min(b.last_stamp for b in self.buffers.values())
        # `sample(t)` looks at stamps <= t + SAME_INSTANT_S: final when a later stamp exists
        return self._frames(lambda t: t + SAME_INSTANT_S < horizon)

    def finish(self) -> list[tuple[float, dict[str, Sample | None]]]:
        """Every message is in: the remaining frames, up to the end of the shortest stream."""
        if self.finished:
            return []
        self.finished = True
        if any(len(b) == 0 for b in self.buffers.values()):
            return []
        end = self.end = min(b.last_stamp for b in self.buffers.values())
        if self.start is None:
            self.start = self._find_start(lambda t: True)
        if self.start is None or self.start > end:
            self.start = None  # the streams never all have data at once
            return []
        return self._frames(lambda t: t <= end + 1e-9)  # grid()'s float tolerance

    @property
    def window(self) -> tuple[float, float] | None:
        """(start, end) once finished; None when the streams never all have fresh data at once."""
        if self.start is None or self.end is None:
            return None
        return self.start, self.end

    def report(self) -> ResampleReport:
        return self._tally.report(self.buffers)

    def _frames(self, final: Callable[[float], bool]) -> list[tuple[float, dict[str, Sample | None]]]:
        if self.start is None:
            self.start = self._find_start(final)
            if self.start is None:
                return []
        start = self.start
        frames: list[tuple[float, dict[str, Sample | None]]] = []
        while True:
            t = start + self._tally.frames / self.fps  # computed like grid(), never accumulated
            if not final(t):
                return frames
            frame = {name: buffer.sample(t) for name, buffer in self.buffers.items()}
            self._tally.add(frame)
            frames.append((t, frame))

    def _find_start(self, final: Callable[[float], bool]) -> float | None:
        """The earliest stamp at which every stream has a non-stale sample, among the stamps that became
        final since the last call. Only stamps are candidates: a stream turns fresh at one of its own."""
        earliest = max(b.first_stamp for b in self.buffers.values())
        candidates: set[float] = set()
        for name, buffer in self.buffers.items():
            stamps = buffer.stamps_from(self._scanned[name])
            taken = 0
            for stamp in stamps:
                if not final(stamp):
                    break
                taken += 1
                if stamp >= earliest:
                    candidates.add(stamp)
            self._scanned[name] += taken
        return next((t for t in sorted(candidates) if _fresh_everywhere(self.buffers, t)), None)


def _empty(spec: StreamSpec) -> float:
    raise ValueError(f"stream {spec.name!r} holds no sample yet: it has no first or last stamp")
